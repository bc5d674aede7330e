"""The redaction processor: credentials masked anywhere in a log event, by key and inside text."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any

from structlog.typing import EventDict, WrappedLogger

from .._secret import Secret

__all__ = ["REDACTED", "Redactor", "redact_secrets"]

#: What a masked value is replaced with.
REDACTED = "[redacted]"

# Key names are compared after normalisation: camelCase split, lower-cased,
# "-" and " " turned into "_" (so "X-SSL-Client-Cert", "clientSecret" and
# "client_secret" are one name each).
_SENSITIVE_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "bearer",
        "client_secret",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "api_key",
        "apikey",
        "x_api_key",
        "private_key",
        "client_assertion",
        "x_ssl_client_cert",
        "ssl_client_cert",
        "x_client_cert",
        "x_forwarded_client_cert",
        "client_cert",
    }
)
_SENSITIVE_SUFFIXES = ("_token", "_secret", "_password", "_passphrase", "_cookie", "_api_key", "_private_key")

# Keys whose values structlog itself manages and later processors expect intact.
_UNTOUCHED_KEYS = frozenset({"exc_info", "stack_info"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# -- patterns for credentials inside free text ----------------------------------------------------
# PEM armour, also URL-encoded (nginx's $ssl_client_escaped_cert) and cut off.
_PEM = re.compile(
    r"-----BEGIN(?: |%20)[A-Z0-9 %]{0,64}?-----.*?(?:-----END(?: |%20)[A-Z0-9 %]{0,64}?-----|\Z)",
    re.DOTALL,
)
# Base64 DER of a certificate or key without armour: an ASN.1 SEQUENCE with a
# long-form length (0x30 0x81..0x83) always encodes as "MIG…" to "MIL…"
# ("MII…" for most certificates and RSA keys, "MIG…" for small EC keys).
_DER = re.compile(r"(?<![A-Za-z0-9+/])MI[G-L][A-Za-z0-9+/]{60,}={0,2}")
# A JWT (header.payload.signature, both JSON parts starting with '{"').
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# RFC 6750 / RFC 7617 credentials after their scheme (token68 syntax).
_SCHEME = re.compile(r"\b(bearer|basic)(\s+)([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
# key=value, key: value, "key": "value" for credential-named keys (form bodies, JSON, queries).
_KEY_VALUE = re.compile(
    r"""(?<![A-Za-z0-9])
    ((?:access|refresh|id)[_-]?token|client[_-]?secret|client[_-]?assertion|api[_-]?key
     |password|passwd|passphrase|secret|token)
    (["']?\s*[:=]\s*["']?)
    (?!\[redacted)
    ([^\s"'&,;}\]]+)""",
    re.IGNORECASE | re.VERBOSE,
)
# user:password@ in URLs.
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):([^/\s@]+)@", re.IGNORECASE)


def _looks_like_credential(text: str) -> bool:
    """Is the word after ``Bearer``/``Basic`` a credential rather than English?

    Real tokens are long or contain digits or punctuation; "bearer token" in
    a sentence should stay readable.
    """
    return len(text) >= 16 or not text.isalpha()


def _basic_credential(text: str) -> bool:
    if _looks_like_credential(text):
        return True
    try:
        return b":" in base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False


def _mask_scheme(match: re.Match[str]) -> str:
    scheme, space, credential = match.groups()
    check = _basic_credential if scheme.lower() == "basic" else _looks_like_credential
    return f"{scheme}{space}{REDACTED}" if check(credential) else match.group(0)


def _normalise_key(key: object) -> str:
    text = key if isinstance(key, str) else str(key)
    return _CAMEL.sub("_", text).lower().replace("-", "_").replace(" ", "_")


class Redactor:
    """A structlog processor that masks credentials anywhere in an event.

    It masks

    - the value of any key that names a credential (``access_token``,
      ``token``, ``client_secret``, ``secret``, ``password``,
      ``authorization``, ``cookie``, ``x-ssl-client-cert``, ``api_key``, keys
      ending in ``_token``/``_secret``/``_password``…, in any spelling:
      ``clientSecret``, ``X-SSL-Client-Cert``), at any depth of nested
      mappings, lists and tuples;
    - inside every string (including rendered tracebacks and the ``repr`` of
      other objects): ``Bearer``/``Basic`` credentials, PEM blocks (also
      URL-encoded or truncated), base64 DER certificates and keys, JWTs,
      ``access_token=…``-style pairs in form bodies, queries and JSON text,
      and passwords in URLs;
    - any literal value passed as *values* (your client secrets, say).

    ``None``, booleans and empty strings under a credential key are kept: they
    show that a value was missing without revealing one.  Events are copied
    where something changes; the caller's objects are never modified.

    Args:
        keys: More key names to treat as credentials (any spelling).
        values: Literal secrets to mask wherever they occur (``str`` or
            :class:`~tokenpool.Secret`; values shorter than 4 characters are
            ignored, they would mask too much).
    """

    __slots__ = ("_keys", "_values")

    def __init__(self, *, keys: Iterable[str] = (), values: Iterable[str | Secret] = ()) -> None:
        self._keys = _SENSITIVE_KEYS | {_normalise_key(k) for k in keys}
        self._values: tuple[Secret, ...] = tuple(
            v if isinstance(v, Secret) else Secret(v) for v in values if len(v) >= 4
        )

    def __repr__(self) -> str:
        return f"<Redactor keys={len(self._keys)} values={len(self._values)}>"

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            if key in _UNTOUCHED_KEYS:
                continue
            cleaned = self._clean_item(key, value, 0)
            if cleaned is not value:
                event_dict[key] = cleaned
        return event_dict

    def is_sensitive_key(self, key: object) -> bool:
        """Whether values under *key* are masked whole."""
        name = _normalise_key(key)
        return name in self._keys or name.endswith(_SENSITIVE_SUFFIXES)

    def scrub(self, text: str) -> str:
        """Mask credentials inside one string."""
        for secret in self._values:
            value = secret.reveal()
            if value in text:
                text = text.replace(value, REDACTED)
        if "-----BEGIN" in text:
            text = _PEM.sub("[redacted PEM]", text)
        if "MI" in text:
            text = _DER.sub("[redacted DER]", text)
        if "eyJ" in text:
            text = _JWT.sub(REDACTED, text)
        text = _SCHEME.sub(_mask_scheme, text)
        text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        if "@" in text:
            text = _USERINFO.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
        return text

    def _clean_item(self, key: object, value: Any, depth: int) -> Any:
        if self.is_sensitive_key(key) and value is not None and value != "" and not isinstance(value, bool):
            return REDACTED
        return self._clean(value, depth)

    def _clean(self, value: Any, depth: int) -> Any:
        """*value* with credentials masked; *value* itself when nothing changed."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            cleaned = self.scrub(value)
            return value if cleaned == value else cleaned
        if isinstance(value, bytes | bytearray):
            text = bytes(value).decode("utf-8", "replace")
            cleaned = self.scrub(text)
            return value if cleaned == text else cleaned
        if depth >= 16:
            # Deeper than any sane event (or a cycle): judge it by its repr.
            return self._clean_repr(value)
        if isinstance(value, Mapping):
            items = {k: self._clean_item(k, v, depth + 1) for k, v in value.items()}
            if all(items[k] is v for k, v in value.items()):
                return value
            return items
        if isinstance(value, list | tuple | set | frozenset):
            elements = [self._clean(v, depth + 1) for v in value]
            if all(new is old for new, old in zip(elements, value, strict=True)):
                return value
            return tuple(elements) if isinstance(value, tuple) else elements
        return self._clean_repr(value)

    def _clean_repr(self, value: object) -> Any:
        try:
            text = repr(value)
        except Exception:
            return f"<unrepresentable {type(value).__name__}>"
        cleaned = self.scrub(text)
        return value if cleaned == text else cleaned


#: The default :class:`Redactor`; add it to your processor chain as it is.
redact_secrets = Redactor()
