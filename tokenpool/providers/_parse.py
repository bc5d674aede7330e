"""Validation shared by every provider adapter's ``parse_response``.

All functions are pure and raise only :class:`~tokenpool.TokenRequestError`
subclasses, so a parser built from them returns a ``TokenResponse`` or raises
the library's own error for any input whatsoever (``tests/test_parse_fuzz.py``
checks that with hypothesis).
"""

from __future__ import annotations

import base64
import copy
import email.utils
import json
import math
import string
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from .._exceptions import (
    ConfigurationError,
    CredentialsRejected,
    InvalidTokenResponse,
    TokenEndpointError,
    TokenRequestError,
)
from .._token import TokenResponse
from .._urls import require_secure_url

__all__ = [
    "MAX_EXPIRES_IN",
    "basic_authorization",
    "endpoint_url",
    "error_for_status",
    "json_body",
    "json_object",
    "parse_expires_in",
    "require_header_value",
    "require_headers",
    "require_path_segment",
    "retry_after_seconds",
    "safe_text",
    "scrub_error",
    "secret_forms",
    "standard_token",
]

#: Lifetimes beyond a year are treated as a broken server, not a gift.
MAX_EXPIRES_IN = 366 * 86_400.0
#: Longest access token accepted; real JWTs are a few KiB.
MAX_TOKEN_LENGTH = 16_384
#: Statuses worth retrying soon.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))
#: Statuses that mean "your credentials (or request) were refused".
CREDENTIAL_STATUSES = frozenset({400, 401, 403})
#: RFC 6749 §5.2 error codes that mean the client itself was refused.
CREDENTIAL_ERROR_CODES = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_grant", "access_denied", "invalid_scope"}
)


def _printable(text: str, limit: int = 200) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned[:limit] + ("…" if len(cleaned) > limit else "")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret from *text* (a server might echo what it was sent).

    Longer strings go first: when one secret form holds another (a Basic
    header holds its base64 credential), replacing the shorter one first
    would leave the rest of the longer one behind.
    """
    for secret in sorted({secret for secret in secrets if secret}, key=len, reverse=True):
        text = text.replace(secret, "**********")
    return text


def secret_forms(secret: str) -> list[str]:
    """*secret* as it may come back from a server: raw, form-urlencoded, JSON-escaped.

    The forms are the raw text, ``urllib.parse.quote_plus`` and
    ``quote(safe="")`` (``application/x-www-form-urlencoded`` bodies and
    Basic credentials encoded per RFC 6749 §2.3.1), and the inside of a JSON
    string with and without ``ensure_ascii``.  Distinct and non-empty, in that
    order.  A form that cannot be built (a lone surrogate has no UTF-8
    percent-encoding) is left out rather than raising.
    """
    forms = [secret]
    for encode in (
        urllib.parse.quote_plus,
        lambda text: urllib.parse.quote(text, safe=""),
        lambda text: json.dumps(text)[1:-1],
        lambda text: json.dumps(text, ensure_ascii=False)[1:-1],
    ):
        try:
            forms.append(encode(secret))
        except UnicodeError:
            continue
    return list(dict.fromkeys(form for form in forms if form))


def looks_like_html(body: bytes) -> bool:
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body"))


def json_object(body: bytes, *, status_code: int | None = None) -> dict[str, Any]:
    """Decode *body* as a JSON object or raise :class:`InvalidTokenResponse`."""
    if not body.strip():
        raise InvalidTokenResponse("token endpoint answered with an empty body", status_code=status_code)
    if looks_like_html(body):
        raise InvalidTokenResponse(
            "token endpoint answered with an HTML page, not JSON",
            status_code=status_code,
            hint="a proxy or the wrong URL; check token_url",
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidTokenResponse(
            "token endpoint answered with a body that is not JSON", status_code=status_code
        ) from None
    if not isinstance(data, dict):
        raise InvalidTokenResponse(
            f"token endpoint answered with JSON {type(data).__name__}, expected an object",
            status_code=status_code,
        )
    return data


def parse_expires_in(
    value: object, *, default: float | None, field: str = "expires_in", secrets: Iterable[str] = ()
) -> float:
    """Validate a lifetime from a token response.

    ``None`` (absent) becomes *default* if the provider documents one, else an
    error.  Numbers and numeric strings are accepted; booleans, NaN, infinity,
    zero, negatives and anything above :data:`MAX_EXPIRES_IN` are rejected.
    A string that is quoted in the error has *secrets* scrubbed first.
    """
    if value is None:
        if default is None:
            raise InvalidTokenResponse(
                f"token response has no {field!r} and this provider documents no default lifetime",
                hint="set default_expires_in on the provider if the server never sends it",
            )
        return float(default)
    if isinstance(value, bool):
        raise InvalidTokenResponse(f"{field!r} is a boolean, expected seconds")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise InvalidTokenResponse(
                f"{field!r} is not a number: {safe_text(value, secrets, 40)!r}"
            ) from None
    elif isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise InvalidTokenResponse(f"{field!r} is absurdly large") from None
    else:
        raise InvalidTokenResponse(f"{field!r} has type {type(value).__name__}, expected seconds")
    if not math.isfinite(number):
        raise InvalidTokenResponse(f"{field!r} is not finite")
    if number <= 0:
        raise InvalidTokenResponse(f"{field!r} must be positive, got {number:g}")
    if number > MAX_EXPIRES_IN:
        raise InvalidTokenResponse(f"{field!r} of {number:g} s is absurd (more than a year)")
    return number


def parse_access_token(value: object) -> str:
    if value is None:
        raise InvalidTokenResponse("token response has no 'access_token'")
    if not isinstance(value, str) or not value:
        raise InvalidTokenResponse("'access_token' is not a non-empty string")
    if len(value) > MAX_TOKEN_LENGTH:
        raise InvalidTokenResponse(f"'access_token' is longer than {MAX_TOKEN_LENGTH} characters")
    # RFC 6750 b64token characters; anything else could split an HTTP header.
    if not value.isascii() or not all(33 <= ord(ch) <= 126 for ch in value):
        raise InvalidTokenResponse("'access_token' contains characters not allowed in a header")
    return value


def parse_token_type(value: object, secrets: Iterable[str] = ()) -> str:
    """Accept ``bearer`` in any case (RFC 6749 §5.1) or absent; normalise to ``Bearer``.

    A string that is quoted in the error has *secrets* scrubbed first.
    """
    if value is None:
        return "Bearer"
    if not isinstance(value, str) or value.strip().lower() != "bearer":
        shown = safe_text(value, secrets, 20) if isinstance(value, str) else type(value).__name__
        raise InvalidTokenResponse(f"unsupported token_type {shown!r}; only Bearer tokens are supported")
    return "Bearer"


def parse_scope(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return " ".join(value)
    raise InvalidTokenResponse(f"'scope' has type {type(value).__name__}, expected a string")


def standard_token(
    data: Mapping[str, Any], *, default_expires_in: float | None, secrets: Iterable[str] = ()
) -> TokenResponse:
    """Read the RFC 6749 §5.1 fields from a decoded JSON object.

    *secrets* are scrubbed from any server value quoted in an error, before
    it is cut to length (a cut through an echoed secret would leave a prefix
    that no later scrub recognises).
    """
    secrets = list(secrets)
    return TokenResponse(
        access_token=parse_access_token(data.get("access_token")),
        token_type=parse_token_type(data.get("token_type"), secrets),
        expires_in=parse_expires_in(data.get("expires_in"), default=default_expires_in, secrets=secrets),
        scope=parse_scope(data.get("scope")),
    )


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or HTTP-date), if present and sane."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    # isascii() too: "²".isdigit() is True but int() refuses it.  Long digit
    # strings are capped before int(), which refuses more than 4300 digits.
    if raw.isascii() and raw.isdigit():
        digits = raw.lstrip("0") or "0"
        return 86_400.0 if len(digits) > 5 else float(min(int(digits), 86_400))
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    wall = time.time() if now is None else now
    return max(0.0, when.timestamp() - wall)


def error_fields(
    data: Mapping[str, Any] | None, secrets: Iterable[str] = ()
) -> tuple[str | None, str | None]:
    """The provider's error code and description, made safe to show."""
    if not data:
        return None, None
    code = data.get("error") or data.get("code") or data.get("errorCode")
    description = data.get("error_description") or data.get("message") or data.get("detail")
    secrets = list(secrets)
    code_text = safe_text(str(code), secrets, 64) if isinstance(code, str | int) else None
    desc_text = safe_text(description, secrets) if isinstance(description, str) else None
    return code_text, desc_text


def error_for_status(
    status_code: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    credentials_hint: str,
    secrets: Iterable[str] = (),
    status_hints: Mapping[int, str] | None = None,
) -> TokenRequestError:
    """Build the typed error for a non-success answer from a token endpoint."""
    data: dict[str, Any] | None
    try:
        data = json_object(body, status_code=status_code)
    except InvalidTokenResponse:
        data = None
    code, description = error_fields(data, secrets)
    message = (
        f"token endpoint refused the request: {description}"
        if description
        else "token endpoint refused the request"
    )
    hint = (status_hints or {}).get(status_code)
    if status_code in CREDENTIAL_STATUSES:
        return CredentialsRejected(
            message, status_code=status_code, error_code=code, hint=hint or credentials_hint
        )
    if status_code in RETRYABLE_STATUSES:
        return TokenEndpointError(
            "token endpoint is failing or rate-limiting" + (f": {description}" if description else ""),
            status_code=status_code,
            error_code=code,
            retry_after=retry_after_seconds(headers) if status_code in {429, 503} else None,
            hint=hint,
        )
    return InvalidTokenResponse(
        f"token endpoint answered with unexpected status {status_code}",
        status_code=status_code,
        error_code=code,
        hint=hint or "check token_url",
    )


def error_in_body(
    data: Mapping[str, Any], *, status_code: int, credentials_hint: str, secrets: Iterable[str] = ()
) -> TokenRequestError | None:
    """A 2xx carrying an RFC 6749 ``error`` field is a failure (golang/oauth2 does the same)."""
    error = data.get("error")
    if not error:
        return None
    code, description = error_fields(data, secrets)
    message = "token endpoint answered with an error" + (f": {description}" if description else "")
    if isinstance(error, str) and error in CREDENTIAL_ERROR_CODES:
        return CredentialsRejected(message, status_code=status_code, error_code=code, hint=credentials_hint)
    return InvalidTokenResponse(message, status_code=status_code, error_code=code)


# Helpers shared by the provider adapters' request builders and parsers.

#: Shortest secret that :func:`scrub_error` removes from finished messages.
MIN_BACKSTOP_SCRUB = 8


def safe_text(text: str, secrets: Iterable[str], limit: int = 200) -> str:
    """Server-supplied *text* made fit for a message: secrets scrubbed first, then printable and truncated.

    Scrubbing before truncating matters: a cut through the middle of an echoed
    secret would leave a prefix that no longer matches.
    """
    return _printable(scrub(text, secrets), limit)


def scrub_error(
    error: TokenRequestError, secrets: Iterable[str], *, min_length: int = MIN_BACKSTOP_SCRUB
) -> TokenRequestError:
    """*error*, or a copy of it with every secret removed from its message, hint and error code.

    Adapters pass every error through this on the way out, so a secret that a
    server echoed into a field no other helper scrubs still never reaches a
    log line.  This backstop skips strings shorter than *min_length*
    (:data:`MIN_BACKSTOP_SCRUB` by default): those would also match our own
    wording (a test secret ``"secret"`` would mangle the hint
    ``client_secret=...``), and are no secret worth the name.
    :meth:`Provider.sensitive_strings() <tokenpool.providers.Provider.sensitive_strings>`
    applies that rule itself, so its result is passed with ``min_length=0``.
    """
    secrets = sorted(
        {secret for secret in secrets if secret and len(secret) >= min_length}, key=len, reverse=True
    )
    texts = [text for text in (error.message, error.hint, error.error_code) if text]
    if not any(secret in text for secret in secrets for text in texts):
        return error
    clean = copy.copy(error)
    clean.message = scrub(error.message, secrets)
    clean.hint = scrub(error.hint, secrets) if error.hint else error.hint
    clean.error_code = scrub(error.error_code, secrets) if error.error_code else error.error_code
    clean.args = (clean.message,)
    return clean


def endpoint_url(base_url: str, path: str, *, what: str) -> httpx.URL:
    """``base_url`` with *path* appended (``https`` unless loopback; no query or fragment)."""
    base = require_secure_url(base_url, what=what)
    if base.query or base.fragment:
        raise ConfigurationError(f"{what}: must not have a query or fragment")
    return require_secure_url(str(base).rstrip("/") + path, what=what)


def basic_authorization(user: str, password: str) -> str:
    """An ``Authorization: Basic`` value built from the raw ``user:password`` (RFC 7617).

    Raw, as curl ``-u``, Python requests ``auth=()``, axios ``auth`` and
    Spring's ``setBasicAuth`` build it -- not form-urlencoded first as RFC 6749
    §2.3.1 asks (that differs only when a credential holds a character such as
    ``+``, ``%``, ``:`` or a space).  Encoded as UTF-8 (RFC 7617's ``charset``,
    curl, Node); requests and Spring use Latin-1, which differs only for
    non-ASCII credentials.
    """
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def json_body(payload: Mapping[str, str]) -> bytes:
    """Compact JSON bytes, non-ASCII escaped (plain ASCII on the wire for any server)."""
    return json.dumps(payload, separators=(",", ":")).encode("ascii")


def require_path_segment(owner: object, name: str) -> None:
    """Insist that a str setting can be one URL path segment or header token.

    Non-empty, no ``/``, no whitespace or control characters, not ``.`` or
    ``..`` (URL normalisation would remove those from the path).
    """
    value = getattr(owner, name)
    label = f"{type(owner).__name__}.{name}"
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{label} must be a non-empty string")
    if "/" in value or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ConfigurationError(f"{label} must not contain '/', whitespace or control characters")
    if value in {".", ".."}:
        raise ConfigurationError(f"{label} must not be '.' or '..'")


#: Characters of an RFC 9110 ``token``, the syntax of a header name.
_TOKEN_CHARACTERS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
#: Headers that httpx and the HTTP/1.1 and HTTP/2 stacks manage themselves;
#: a value set by hand breaks the framing or is refused by h2.
FRAMING_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
    }
)


def require_headers(owner: object, name: str, *, reserved: Iterable[str] = ()) -> None:
    """Insist that a setting maps header names to header values, and store a plain ``dict`` copy of it.

    Names must be non-empty ``str`` of RFC 9110 token characters, each given
    once (names are case-insensitive), and none of :data:`FRAMING_HEADERS` or
    *reserved*.  Values must be ``str`` of visible ASCII, spaces and tabs,
    neither starting nor ending with whitespace (what h11 and h2 accept); an
    empty value is allowed.  Errors name the setting and the header, never
    the value, which may be an API key.
    """
    headers = getattr(owner, name)
    label = f"{type(owner).__name__}.{name}"
    if not isinstance(headers, Mapping):
        raise ConfigurationError(
            f"{label} must be a mapping of header names to str values, got {type(headers).__name__}"
        )
    refused = FRAMING_HEADERS | {header.lower() for header in reserved}
    seen: set[str] = set()
    for key, value in headers.items():
        if not isinstance(key, str):
            raise ConfigurationError(f"{label}: header names must be str, got {type(key).__name__}")
        if not key or not set(key) <= _TOKEN_CHARACTERS:
            raise ConfigurationError(
                f"{label}: header name {_printable(key, 40)!r} is not a non-empty RFC 9110 token "
                "(letters, digits and !#$%&'*+-.^_`|~)"
            )
        lowered = key.lower()
        if lowered in refused:
            raise ConfigurationError(f"{label} must not set {key!r}: tokenpool or httpx sets it")
        if lowered in seen:
            raise ConfigurationError(f"{label} sets {key!r} twice (header names are case-insensitive)")
        seen.add(lowered)
        if not isinstance(value, str):
            raise ConfigurationError(f"{label}[{key!r}] must be a str, got {type(value).__name__}")
        if "\r" in value or "\n" in value:
            raise ConfigurationError(f"{label}[{key!r}] must not contain CR or LF")
        if not all(ch == "\t" or " " <= ch <= "~" for ch in value):
            raise ConfigurationError(
                f"{label}[{key!r}] must hold only visible ASCII characters, spaces and tabs"
            )
        if value != value.strip(" \t"):
            raise ConfigurationError(f"{label}[{key!r}] must not start or end with whitespace")
    object.__setattr__(owner, name, dict(headers))


def require_header_value(owner: object, name: str) -> None:
    """Insist that a str setting is a non-empty run of visible ASCII, safe as an HTTP header value."""
    value = getattr(owner, name)
    if not isinstance(value, str) or not value or not all(33 <= ord(ch) <= 126 for ch in value):
        raise ConfigurationError(
            f"{type(owner).__name__}.{name} must be a non-empty string of visible ASCII characters"
        )
