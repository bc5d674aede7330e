"""What adapters put on the wire: the token URL, an HTTP Basic credential, a JSON body."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import httpx

from .._exceptions import ConfigurationError
from .._urls import require_secure_url

__all__ = ["basic_authorization", "endpoint_url", "json_body"]


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
