"""Our exception hierarchy::

    TokenPoolError                      base of everything tokenpool raises on purpose
    ├── ConfigurationError              bad input at construction or in a config file (also ValueError)
    ├── UnknownProviderError            no provider by that name in this pool (also KeyError)
    ├── PoolStateError                  pool not entered yet, already closed
    │   └── ForkedPoolError             pool used in a child process after fork()
    ├── InsecureTransportError          a bearer token would travel over plain http to a non-loopback host
    ├── TokenWaitTimeout                the caller's own ``timeout=`` ran out (also TimeoutError)
    └── TokenRequestError               fetching a token failed; carries provider/status/error code
        ├── CredentialsRejected         the token endpoint refused our credentials (400/401/403)
        ├── TokenEndpointError          retryable answer: 5xx, 429, 408 (carries retry_after/retry_at)
        ├── TokenEndpointUnreachable    no answer: connection refused or dropped
        │   ├── TokenEndpointTimeout    no answer within the request deadline
        │   └── TokenEndpointTLSError   TLS failed: certificate verification, client certificate refused
        ├── InvalidTokenResponse        answer we cannot use: not JSON, no access_token, bad expires_in…
        └── AdapterError                the provider adapter itself failed (a bug, not the provider)

Every ``TokenRequestError`` has a :attr:`~TokenRequestError.reason`, a short
fixed word (the ``reason`` label of ``tokenpool_refresh_failures_total``),
chosen by class and status, never derived from message text.

No exception raised by tokenpool ever contains a client secret, an access token
or certificate material: messages name the provider, the HTTP status, the
provider's error code and a hint, nothing more.
"""

from __future__ import annotations

import copy

__all__ = [
    "AdapterError",
    "ConfigurationError",
    "CredentialsRejected",
    "ForkedPoolError",
    "InsecureTransportError",
    "InvalidTokenResponse",
    "PoolStateError",
    "TokenEndpointError",
    "TokenEndpointTLSError",
    "TokenEndpointTimeout",
    "TokenEndpointUnreachable",
    "TokenPoolError",
    "TokenRequestError",
    "TokenWaitTimeout",
    "UnknownProviderError",
]


class TokenPoolError(Exception):
    """Base class of every error tokenpool raises on purpose."""


class ConfigurationError(TokenPoolError, ValueError):
    """A provider, pool or config file was given invalid settings."""


class UnknownProviderError(TokenPoolError, KeyError):
    """The pool has no provider registered under that name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        self.known = sorted(known or [])
        super().__init__(name)

    def __str__(self) -> str:
        known = ", ".join(repr(k) for k in self.known) or "none"
        return f"no provider named {self.name!r} in this pool (known: {known})"


class PoolStateError(TokenPoolError, RuntimeError):
    """The pool is not open (not entered yet, or already closed)."""


class ForkedPoolError(PoolStateError):
    """A pool was used in a child process after ``fork()``.

    A pool's sockets, timers and event loop belong to the process that opened
    it; create a new pool in the child (``tokenpool.contrib.celery`` does this
    for Celery's prefork workers).
    """


class InsecureTransportError(TokenPoolError):
    """A token would have been sent over plain HTTP to a host that is not loopback."""


class TokenWaitTimeout(TokenPoolError, TimeoutError):
    """The caller's ``timeout=`` ran out while waiting for a token.

    Only this caller gave up: the refresh it was waiting on goes on for others.
    """

    def __init__(self, message: str, *, provider: str = "") -> None:
        self.provider = provider
        super().__init__(message)


class TokenRequestError(TokenPoolError):
    """Getting a token from a provider's token endpoint failed.

    Attributes:
        provider: The pool's name for the provider.
        status_code: HTTP status of the token endpoint's answer, if one came.
        error_code: The provider's own error code (RFC 6749 ``error`` or
            similar), if it gave one.  Never a secret.
        hint: What to check, in plain words.
        reason: A short fixed word for metrics and logs (``"unreachable"``,
            ``"credentials_rejected"``…); see ``tokenpool.metrics.FAILURE_REASONS``.
    """

    #: The ``reason`` of every instance of the class (a subclass may refine it per instance).
    default_reason = "other"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        error_code: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.error_code = error_code
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        parts = [f"[{self.provider}] " if self.provider else "", self.message]
        if self.status_code is not None:
            parts.append(f" (HTTP {self.status_code}")
            parts.append(f", error={self.error_code!r})" if self.error_code else ")")
        elif self.error_code:
            parts.append(f" (error={self.error_code!r})")
        if self.hint:
            parts.append(f"; hint: {self.hint}")
        return "".join(parts)

    @property
    def reason(self) -> str:
        return self.default_reason


class CredentialsRejected(TokenRequestError):
    """The token endpoint refused the client's credentials (HTTP 400, 401 or 403).

    Retried slowly (never in a storm) because an operator may fix the
    credentials; see ``TokenPool.replace_provider``.
    """

    default_reason = "credentials_rejected"


class TokenEndpointError(TokenRequestError):
    """The token endpoint answered with a retryable error (5xx, 429, 408).

    Attributes:
        retry_after: Seconds the endpoint asked us to wait, if it said.
        retry_at: The Unix time (wall clock, seconds) the endpoint asked us to
            wait until, when it gave ``Retry-After`` as an HTTP-date without a
            ``Date`` header to measure it from; ``retry_after`` is then
            ``None``.  The pool turns it into a wait with its own clock.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        retry_at: float | None = None,
        **kwargs: object,
    ) -> None:
        self.retry_after = retry_after
        self.retry_at = retry_at
        super().__init__(message, **kwargs)  # type: ignore[arg-type]

    default_reason = "endpoint_error"

    @property
    def reason(self) -> str:
        return "rate_limited" if self.status_code == 429 else "endpoint_error"


class TokenEndpointUnreachable(TokenRequestError):
    """No answer came: connection refused or dropped (see the subclasses for timeouts and TLS)."""

    default_reason = "unreachable"


class TokenEndpointTimeout(TokenEndpointUnreachable):
    """No complete answer within the request deadline (``RefreshPolicy.request_timeout``)."""

    default_reason = "timeout"


class TokenEndpointTLSError(TokenEndpointUnreachable):
    """The TLS handshake with the token endpoint failed.

    Either we could not verify the server's certificate (unknown CA: set
    ``ca_file``; expired; wrong host name) or the server refused ours (mutual
    TLS: expired, revoked or unknown client certificate).
    """

    default_reason = "tls"


class InvalidTokenResponse(TokenRequestError):
    """The token endpoint answered, but not with a token we can use."""

    default_reason = "invalid_response"


class AdapterError(TokenRequestError):
    """The provider adapter raised something other than a tokenpool error: a bug in the adapter.

    Reported by exception type only (its text may quote the request); retried
    with backoff like any failure.
    """

    default_reason = "adapter_error"


def clone_for_raise(exc: BaseException) -> BaseException:
    """A fresh copy of *exc* to raise in another task.

    Raising one exception object from thousands of waiting tasks would grow
    its traceback without bound; each waiter raises its own copy instead.
    """
    clone = copy.copy(exc)
    clone.__cause__ = exc.__cause__
    clone.__suppress_context__ = True
    return clone
