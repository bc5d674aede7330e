"""The provider adapter interface: pure functions from settings to requests, and from answers to tokens."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
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
from ._parse import MAX_EXPIRES_IN, MIN_BACKSTOP_SCRUB, scrub_error, secret_forms

__all__ = ["ClientCertificate", "Provider"]


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
        for value in vars_of(self).values():
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


def vars_of(obj: object) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return dict(getattr(obj, "__dict__", {}))


def coerce_secret(owner: object, name: str, *, min_length: int = 1, max_length: int | None = None) -> None:
    """Turn a str field of a frozen dataclass into a :class:`Secret`, checking its length and text."""
    value = getattr(owner, name)
    if isinstance(value, str):
        if not value:
            raise ConfigurationError(f"{type(owner).__name__}.{name} must not be empty")
        value = Secret(value)
    if not isinstance(value, Secret):
        raise ConfigurationError(f"{type(owner).__name__}.{name} must be a str or Secret")
    if not _encodable(value.reveal()):
        raise ConfigurationError(
            f"{type(owner).__name__}.{name} must be valid Unicode text (it holds a lone surrogate)"
        )
    if len(value) < min_length or (max_length is not None and len(value) > max_length):
        bounds = f"between {min_length} and {max_length}" if max_length else f"at least {min_length}"
        # The length is fine to show; the value never is.
        raise ConfigurationError(
            f"{type(owner).__name__}.{name} must be {bounds} characters long (got {len(value)})"
        )
    object.__setattr__(owner, name, value)


def require_text(owner: object, name: str) -> None:
    """Insist that a setting is a non-blank ``str`` that can be encoded as UTF-8."""
    value = getattr(owner, name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{type(owner).__name__}.{name} must be a non-empty string")
    if not _encodable(value):
        raise ConfigurationError(
            f"{type(owner).__name__}.{name} must be valid Unicode text (it holds a lone surrogate)"
        )


def require_optional_text(owner: object, name: str) -> None:
    """Insist that a setting is ``None`` or a ``str`` that can be encoded as UTF-8 (it may be empty)."""
    value = getattr(owner, name)
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigurationError(f"{type(owner).__name__}.{name} must be a str or None")
    if not _encodable(value):
        raise ConfigurationError(
            f"{type(owner).__name__}.{name} must be valid Unicode text (it holds a lone surrogate)"
        )


def require_text_mapping(owner: object, name: str) -> None:
    """Insist that a setting maps non-empty ``str`` to ``str`` (UTF-8 encodable); store a ``dict`` copy."""
    value = getattr(owner, name)
    label = f"{type(owner).__name__}.{name}"
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{label} must be a mapping of str to str, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or not _encodable(key):
            raise ConfigurationError(f"{label}: every key must be a non-empty str of valid Unicode text")
        # The value is not shown: it may be a credential.
        if not isinstance(item, str) or not _encodable(item):
            raise ConfigurationError(f"{label}[{key!r}] must be a str of valid Unicode text")
    object.__setattr__(owner, name, dict(value))


def require_lifetime(owner: object, name: str) -> None:
    """Insist that an optional lifetime setting is a positive finite number of seconds; store it as a float.

    ``None`` is left alone.  ``int``, ``float`` and numeric strings (a
    ``${VAR}`` reference in a config file gives text) are accepted up to
    :data:`~tokenpool.providers._parse.MAX_EXPIRES_IN`; booleans, NaN,
    infinities, zero and negatives are refused.
    """
    value = getattr(owner, name)
    if value is None:
        return
    label = f"{type(owner).__name__}.{name}"
    number = math.nan
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range: finite, and far above the cap
            number = MAX_EXPIRES_IN * 2 if value > 0 else -1.0
    shown = repr(value) if isinstance(value, str | int | float) else f"a {type(value).__name__}"
    if len(shown) > 40:
        shown = shown[:39] + "…"
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError(f"{label} must be a positive finite number of seconds, got {shown}")
    if number > MAX_EXPIRES_IN:
        raise ConfigurationError(
            f"{label} must be at most {MAX_EXPIRES_IN:.0f} seconds (366 days), got {shown}"
        )
    object.__setattr__(owner, name, number)


def _encodable(text: str) -> bool:
    """True unless *text* holds a lone surrogate, which has no UTF-8 form and would fail on the wire."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_policy(owner: object) -> None:
    if not isinstance(owner.refresh, RefreshPolicy):  # type: ignore[attr-defined]
        raise ConfigurationError(f"{type(owner).__name__}.refresh must be a RefreshPolicy")
