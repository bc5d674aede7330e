"""The provider adapter interface: pure functions from settings to requests, and from answers to tokens.

:class:`Provider` is the public interface every adapter implements, custom
ones too.  :class:`DeclarativeProvider` is the skeleton the built-in adapters
share, opt-in: an adapter declares its documented choices and writes only its
wire format.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import httpx

from .._exceptions import ConfigurationError, TokenRequestError
from .._scrub import MIN_BACKSTOP_SCRUB, scrub_error, secret_forms
from .._secret import Secret, settings_of
from .._timing import RefreshPolicy
from .._token import TokenResponse
from ._parse import error_for_status, error_in_body, json_object, standard_token
from ._settings import coerce_secret, require_choice, require_policy
from ._wire import endpoint_url

__all__ = ["ClientCertificate", "DeclarativeProvider", "Provider"]


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """An X.509 client certificate for mutual TLS, as PEM files on disk.

    ``copy.copy``, ``copy.deepcopy`` and ``dataclasses.replace`` keep the
    password (the same :class:`~tokenpool.Secret`); pickling is refused.

    Args:
        cert_file: PEM certificate (chain) presented to the server.
        key_file: PEM private key; may be the same file as *cert_file*.
        password: Passphrase of an encrypted key (a ``str`` is wrapped in
            :class:`~tokenpool.Secret`); non-empty.
    """

    cert_file: str
    key_file: str | None = None
    password: Secret | str | None = dataclasses.field(default=None)

    def __post_init__(self) -> None:
        for name in ("cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ConfigurationError(f"ClientCertificate.{name}: no such file: {path!r}")
        if self.password is not None:
            coerce_secret(self, "password")

    def load_into(self, context: ssl.SSLContext) -> None:
        """Load the certificate and key into *context*."""
        try:
            context.load_cert_chain(
                self.cert_file,
                self.key_file,
                password=self.password.reveal() if isinstance(self.password, Secret) else None,
            )
        except (ssl.SSLError, OSError) as exc:
            # Only the file names are shown, never their content.
            raise ConfigurationError(
                f"cannot load client certificate {self.cert_file!r} / key {self.key_file!r}: "
                f"{type(exc).__name__}"
            ) from None

    def pem(self) -> bytes:
        """The certificate file's bytes (for providers that also forward it in a header)."""
        with open(self.cert_file, "rb") as handle:
            return handle.read()


class Provider(abc.ABC):
    """A provider adapter: sans-IO, no clocks, no globals.

    Subclasses build the token request, parse the answer into a
    :class:`~tokenpool.TokenResponse` (or raise a
    :class:`~tokenpool.TokenRequestError` subclass), and name the headers the
    provider wants on every API call.  The pool does all I/O and timing.

    Attributes:
        kind: Short name of the adapter, used in logs and metrics.
        token_url: Where token requests go.
        refresh: The refresh policy for tokens from this provider.
    """

    kind: ClassVar[str] = "provider"
    # A str is accepted by constructors and normalised to httpx.URL in __post_init__.
    token_url: httpx.URL | str
    refresh: RefreshPolicy

    @abc.abstractmethod
    def build_request(self) -> httpx.Request:
        """Build one token request (fresh each time; requests are not reused)."""

    def parse_response(self, status_code: int, headers: Mapping[str, str], body: bytes) -> TokenResponse:
        """Turn the token endpoint's answer into a token, or raise a typed error.

        Raises only ``TokenRequestError`` subclasses, with every form of every
        secret of this provider (:meth:`sensitive_strings`) scrubbed from their
        message, hint and error code (a server may echo what it was sent).
        """
        try:
            return self._parse(status_code, headers, body)
        except TokenRequestError as exc:
            # sensitive_strings() has already dropped the secrets too short to scrub.
            raise scrub_error(exc, self.sensitive_strings(), min_length=0) from None

    @abc.abstractmethod
    def _parse(self, status_code: int, headers: Mapping[str, str], body: bytes) -> TokenResponse:
        """The adapter's own parsing; :meth:`parse_response` scrubs what it raises."""

    def api_headers(self) -> Mapping[str, str]:
        """Headers to add to every API call besides ``Authorization``."""
        return {}

    def mtls_certificate(self) -> ClientCertificate | None:
        """The certificate for mutual TLS on the token endpoint, if the provider needs one."""
        return None

    def with_credentials(
        self, *, client_id: str | None = None, client_secret: str | Secret | None = None
    ) -> Self:
        """A copy with new credentials (for secret rotation in a running pool).

        Built with ``dataclasses.replace``, so ``__post_init__`` validates the
        new values (and NTX MX re-reads its certificate file).  An adapter that
        is not a dataclass overrides this.
        """
        changes: dict[str, Any] = {}
        if client_id is not None:
            changes["client_id"] = client_id
        if client_secret is not None:
            changes["client_secret"] = client_secret
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def sensitive_strings(self) -> list[str]:
        """Every form in which this provider's secrets could appear in text a server echoes back.

        For each :class:`~tokenpool.Secret` setting (a client certificate's
        password included): the raw text, its form-urlencoded forms
        (``quote_plus`` and ``quote(safe="")``) and its JSON-escaped forms
        (with and without ``ensure_ascii``).  A secret shorter than
        ``MIN_BACKSTOP_SCRUB`` (8) characters contributes none of these: it
        would also match ordinary wording, and is no secret worth the name.
        For an adapter that sends HTTP Basic auth, also the whole
        ``Authorization`` value and its base64 credential, whatever their
        length.

        Scrub every one of them from a text before cutting it to length: a cut
        through a secret leaves a prefix that no longer matches.

        Returns:
            Distinct, non-empty strings, longest first, so that replacing them
            in this order never leaves part of a longer form behind.
        """
        forms = [
            form
            for secret in self._secret_values()
            if len(secret) >= MIN_BACKSTOP_SCRUB
            for form in secret_forms(secret)
        ]
        return _longest_first([*forms, *self._basic_forms()])

    def _secrets(self) -> list[str]:
        """What to scrub from server text before an adapter quotes it: :meth:`sensitive_strings` and more.

        This also holds the forms of secrets sent on the wire that are too
        short for :meth:`sensitive_strings`: they are scrubbed from what the
        server said, never from tokenpool's own wording.  (A certificate's
        password never goes to the server, so a short one is not looked for.)
        """
        short = [
            form
            for secret in self._secret_values(certificate=False)
            if len(secret) < MIN_BACKSTOP_SCRUB
            for form in secret_forms(secret)
        ]
        return _longest_first([*self.sensitive_strings(), *short])

    def _secret_values(self, *, certificate: bool = True) -> list[str]:
        """The text of every ``Secret`` setting and, if *certificate*, of a client certificate's password."""
        values: list[str] = []
        for value in settings_of(self).values():
            secret = value.password if certificate and isinstance(value, ClientCertificate) else value
            if isinstance(secret, Secret):
                values.append(secret.reveal())
        return values

    def _basic_authorization(self) -> str | None:
        """The ``Authorization: Basic`` value the token request carries, if it carries one.

        Adapters that send HTTP Basic auth build their header with this, so
        :meth:`sensitive_strings` names exactly what went on the wire.
        """
        return None

    def _basic_forms(self) -> list[str]:
        header = self._basic_authorization()
        if header is None:
            return []
        return [header, header.removeprefix("Basic ")]


def _longest_first(strings: list[str]) -> list[str]:
    return sorted(dict.fromkeys(s for s in strings if s), key=len, reverse=True)


#: A ``{field}`` in :attr:`DeclarativeProvider.endpoint_path`.
_PATH_FIELD = re.compile(r"\{(\w+)\}")


class DeclarativeProvider(Provider):
    """The skeleton the built-in adapters share: each declares its documented choices, once.

    A subclass is a frozen dataclass with a ``refresh`` field and a
    ``token_url`` field (``init=False`` unless it is a setting); the
    ``__post_init__`` here checks them.  (``refresh`` is not declared here: a
    field of this class would come first in every adapter's signature and
    repr.)  It declares, as plain class attributes:

    - :attr:`base_urls`: the base URL of each ``environment`` (a field of the
      subclass, checked to be one of them); a ``base_url`` field, when not
      ``None``, overrides it.  Empty when the provider names no
      environments: then ``base_url`` is the base.
    - :attr:`endpoint_path`: appended to the base URL.  ``None``: ``token_url``
      is a setting, which :meth:`_check_settings` checks.
    - :attr:`success_statuses`, :attr:`status_hints` and
      :attr:`default_expires_in`, which the parse template below uses.

    and writes :meth:`build_request`, :meth:`credentials_hint` and
    :meth:`_check_settings`.  Where the answer differs from RFC 6749, it
    overrides :meth:`_refusal` (a non-success status) or
    :meth:`_answer_error` (a success status).

    Parsing is: a status not in :attr:`success_statuses` is
    :meth:`_refusal`'s error (by default :func:`error_for_status`, with
    :attr:`status_hints` and :meth:`credentials_hint`); the body must be a
    JSON object; :meth:`_answer_error` (by default an RFC 6749 ``error``
    field) may refuse it; then the RFC 6749 §5.1 fields make the token.
    """

    #: Base URL per environment name; empty when the provider names no environments.
    base_urls: ClassVar[Mapping[str, str]] = {}
    #: Path of the token endpoint below the base URL; ``{field}`` is that field's
    #: value, percent-encoded as one path segment.  ``None``: ``token_url`` is a setting.
    endpoint_path: ClassVar[str | None] = None
    #: Statuses of an answer that may carry a token.
    success_statuses: ClassVar[frozenset[int]] = frozenset({200})
    #: Hints for refusals with these statuses (instead of :meth:`credentials_hint` or the default).
    status_hints: ClassVar[Mapping[int, str]] = {}
    #: The lifetime assumed when an answer has no ``expires_in``; ``None``: such an
    #: answer is invalid.  Not a ``ClassVar``, so an adapter may make it a setting.
    default_expires_in: float | None = None

    def __post_init__(self) -> None:
        self._check_settings()
        if self.endpoint_path is not None:
            object.__setattr__(self, "token_url", self._endpoint(self.endpoint_path))
        require_policy(self)

    @abc.abstractmethod
    def _check_settings(self) -> None:
        """Check (and normalise) the adapter's own settings, in the order their errors should come."""

    @abc.abstractmethod
    def credentials_hint(self) -> str:
        """What to check when the token endpoint refuses the credentials."""

    def _where(self, environment: str) -> str:
        """Where credentials belong, for a hint: *environment*, or the host of a ``base_url`` overriding it.

        A hint that named the sandbox would mislead when ``base_url`` points
        elsewhere (an emulator, a proxy).
        """
        if getattr(self, "base_url", None) is not None:
            return f"the server at {httpx.URL(self.token_url).netloc.decode('ascii')}"
        return environment

    def _endpoint(self, path: str) -> httpx.URL:
        """The token URL: the environment's base URL, or ``base_url``, with *path* appended."""
        # getattr: base_url and environment are fields of the subclass, not of this class.
        base: str | None = getattr(self, "base_url", None)
        if self.base_urls:
            require_choice(self, "environment", self.base_urls)
            if base is None:
                base = self.base_urls[getattr(self, "environment")]  # noqa: B009
        if base is None:
            raise TypeError(f"{type(self).__name__} declares endpoint_path but no base URL")
        path = _PATH_FIELD.sub(lambda field: urllib.parse.quote(getattr(self, field[1]), safe=""), path)
        return endpoint_url(base, path, what=f"{type(self).__name__}.base_url")

    def _parse(self, status_code: int, headers: Mapping[str, str], body: bytes) -> TokenResponse:
        secrets = self._secrets()
        if status_code not in self.success_statuses:
            raise self._refusal(status_code, headers, body, secrets)
        data = json_object(body, status_code=status_code)
        error = self._answer_error(data, status_code, secrets)
        if error is not None:
            raise error
        return standard_token(data, default_expires_in=self.default_expires_in, secrets=secrets)

    def _refusal(
        self, status_code: int, headers: Mapping[str, str], body: bytes, secrets: list[str]
    ) -> TokenRequestError:
        """The error an answer with a status outside :attr:`success_statuses` stands for."""
        return error_for_status(
            status_code,
            headers,
            body,
            credentials_hint=self.credentials_hint(),
            secrets=secrets,
            status_hints=self.status_hints,
        )

    def _answer_error(
        self, data: Mapping[str, Any], status_code: int, secrets: list[str]
    ) -> TokenRequestError | None:
        """The error a decoded success answer stands for, or ``None`` if it carries a token."""
        return error_in_body(
            data, status_code=status_code, credentials_hint=self.credentials_hint(), secrets=secrets
        )
