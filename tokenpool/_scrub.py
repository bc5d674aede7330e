"""Keeping secrets out of errors: the forms a server may echo, and removing them from text.

A token endpoint may quote back what it was sent, in any encoding it was
sent in.  Adapters scrub every quoted server text before cutting it to
length (a cut through an echoed secret leaves a prefix that no longer
matches), and :meth:`Provider.parse_response
<tokenpool.providers.Provider.parse_response>` passes every error through
:func:`scrub_error` on the way out.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from collections.abc import Iterable

from ._exceptions import TokenRequestError

__all__ = ["MIN_BACKSTOP_SCRUB", "printable", "safe_text", "scrub", "scrub_error", "secret_forms"]

#: Shortest secret that :func:`scrub_error` removes from finished messages.
MIN_BACKSTOP_SCRUB = 8


def printable(text: str, limit: int = 200) -> str:
    """*text* with every unprintable character made a space, cut to *limit* characters."""
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


def safe_text(text: str, secrets: Iterable[str], limit: int = 200) -> str:
    """Server-supplied *text* made fit for a message: secrets scrubbed first, then printable and truncated.

    Scrubbing before truncating matters: a cut through the middle of an echoed
    secret would leave a prefix that no longer matches.
    """
    return printable(scrub(text, secrets), limit)


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
