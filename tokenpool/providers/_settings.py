"""Checks on an adapter's settings, run in ``__post_init__`` so that a built provider cannot fail later.

Every check raises :class:`~tokenpool.ConfigurationError` naming the class
and the setting, and never shows a value that may be a credential.
"""

from __future__ import annotations

import contextlib
import math
import string
from collections.abc import Iterable, Mapping

from .._exceptions import ConfigurationError
from .._scrub import printable
from .._secret import Secret
from .._timing import RefreshPolicy
from ._parse import MAX_EXPIRES_IN

__all__ = [
    "FRAMING_HEADERS",
    "coerce_secret",
    "require_choice",
    "require_header_value",
    "require_headers",
    "require_lifetime",
    "require_optional_text",
    "require_path_segment",
    "require_policy",
    "require_text",
    "require_text_mapping",
]


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
    ``MAX_EXPIRES_IN`` (366 days); booleans, NaN, infinities, zero and
    negatives are refused.
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
    """Insist that ``owner.refresh`` is a :class:`~tokenpool.RefreshPolicy`."""
    if not isinstance(owner.refresh, RefreshPolicy):  # type: ignore[attr-defined]
        raise ConfigurationError(f"{type(owner).__name__}.refresh must be a RefreshPolicy")


def require_choice(owner: object, name: str, choices: Iterable[str]) -> None:
    """Insist that a setting is one of *choices* (an environment's name, say)."""
    value = getattr(owner, name)
    choices = sorted(choices)
    if value not in choices:
        raise ConfigurationError(f"{type(owner).__name__}.{name} must be one of {choices}, got {value!r}")


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
                f"{label}: header name {printable(key, 40)!r} is not a non-empty RFC 9110 token "
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
