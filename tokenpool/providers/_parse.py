"""Reading a token endpoint's answer: a token response, or the typed error it stands for.

All functions are pure (no clock either) and raise only
:class:`~tokenpool.TokenRequestError` subclasses, so a parser built from them
returns a ``TokenResponse`` or raises the library's own error for any input
whatsoever (``tests/providers/test_parse_fuzz.py`` checks that with hypothesis).
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .._exceptions import CredentialsRejected, InvalidTokenResponse, TokenEndpointError, TokenRequestError
from .._scrub import safe_text
from .._token import TokenResponse

__all__ = [
    "CREDENTIAL_ERROR_CODES",
    "CREDENTIAL_STATUSES",
    "MAX_EXPIRES_IN",
    "MAX_TOKEN_LENGTH",
    "RETRYABLE_STATUSES",
    "error_fields",
    "error_for_status",
    "error_in_body",
    "json_object",
    "looks_like_html",
    "parse_access_token",
    "parse_expires_in",
    "parse_scope",
    "parse_token_type",
    "retry_after",
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


def retry_after(headers: Mapping[str, str]) -> tuple[float | None, float | None]:
    """``Retry-After`` as ``(seconds, at)``: a wait in seconds, or the Unix time to wait until.

    Delta-seconds give *seconds*, at most a day.  An HTTP-date gives
    *seconds* too when the answer carries a ``Date``: the wait is the
    difference of two instants the server wrote with one clock (RFC 9110
    §10.2.3), so no clock is read here and skew between the server's clock
    and ours does not matter.  Without a usable ``Date`` the HTTP-date comes
    back as *at* (Unix seconds), which the core resolves with its own wall
    clock.  At most one of the two is set; both are ``None`` when the header
    is absent or unusable.
    """
    raw = headers.get("retry-after")
    if raw is None:
        return None, None
    raw = raw.strip()
    # isascii() too: "²".isdigit() is True but int() refuses it.  Long digit
    # strings are capped before int(), which refuses more than 4300 digits.
    if raw.isascii() and raw.isdigit():
        digits = raw.lstrip("0") or "0"
        return (86_400.0 if len(digits) > 5 else float(min(int(digits), 86_400))), None
    until = _http_date(raw)
    if until is None:
        return None, None
    sent = _http_date(headers.get("date"))
    if sent is None:
        return None, until
    return max(0.0, until - sent), None


def _http_date(raw: str | None) -> float | None:
    """An HTTP-date (any form RFC 5322 parsing accepts, with a zone) as Unix seconds."""
    if raw is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
        seconds = None if when is None or when.tzinfo is None else when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return seconds


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
        seconds, at = retry_after(headers) if status_code in {429, 503} else (None, None)
        return TokenEndpointError(
            "token endpoint is failing or rate-limiting" + (f": {description}" if description else ""),
            status_code=status_code,
            error_code=code,
            retry_after=seconds,
            retry_at=at,
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
