"""The provider adapter interface: pure functions from settings to requests, and from answers to tokens."""

from __future__ import annotations

import abc
import dataclasses
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import httpx

from .._exceptions import ConfigurationError, TokenRequestError
from .._secret import Secret
from .._timing import RefreshPolicy
from .._token import TokenResponse
from ._parse import scrub_error

__all__ = ["ClientCertificate", "Provider"]


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """An X.509 client certificate for mutual TLS, as PEM files on disk.

    Args:
        cert_file: PEM certificate (chain) presented to the server.
        key_file: PEM private key; may be the same file as *cert_file*.
        password: Passphrase of an encrypted key.
    """

    cert_file: str
    key_file: str | None = None
    password: Secret | str | None = dataclasses.field(default=None)

    def __post_init__(self) -> None:
        for name in ("cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ConfigurationError(f"ClientCertificate.{name}: no such file: {path!r}")
        if self.password is not None and not isinstance(self.password, Secret):
            object.__setattr__(self, "password", Secret(self.password))

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

        Raises only ``TokenRequestError`` subclasses, with every secret of this
        provider scrubbed from their text (a server may echo what it was sent).
        """
        try:
            return self._parse(status_code, headers, body)
        except TokenRequestError as exc:
            raise scrub_error(exc, self._secrets()) from None

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

    def _secrets(self) -> list[str]:
        """Secret strings to scrub from anything the server echoes back."""
        return [value.reveal() for value in vars_of(self).values() if isinstance(value, Secret)]


def vars_of(obj: object) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return dict(getattr(obj, "__dict__", {}))


def coerce_secret(owner: object, name: str, *, min_length: int = 1, max_length: int | None = None) -> None:
    """Turn a str field of a frozen dataclass into a :class:`Secret`, checking its length."""
    value = getattr(owner, name)
    if isinstance(value, str):
        if not value:
            raise ConfigurationError(f"{type(owner).__name__}.{name} must not be empty")
        value = Secret(value)
    if not isinstance(value, Secret):
        raise ConfigurationError(f"{type(owner).__name__}.{name} must be a str or Secret")
    if len(value) < min_length or (max_length is not None and len(value) > max_length):
        bounds = f"between {min_length} and {max_length}" if max_length else f"at least {min_length}"
        # The length is fine to show; the value never is.
        raise ConfigurationError(
            f"{type(owner).__name__}.{name} must be {bounds} characters long (got {len(value)})"
        )
    object.__setattr__(owner, name, value)


def require_text(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{type(owner).__name__}.{name} must be a non-empty string")


def require_policy(owner: object) -> None:
    if not isinstance(owner.refresh, RefreshPolicy):  # type: ignore[attr-defined]
        raise ConfigurationError(f"{type(owner).__name__}.refresh must be a RefreshPolicy")
