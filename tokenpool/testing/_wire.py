"""The emulator's wire layer: ASGI types, the request and reply it passes around, and body parsing.

Nothing here knows a provider.  It reads request bodies with a size limit, parses
what token requests carry (JSON objects, URL-encoded and multipart forms, HTTP
Basic credentials) and builds the JSON replies every endpoint sends.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "NO_STORE",
    "Disconnected",
    "Message",
    "Receive",
    "Reply",
    "Request",
    "Scope",
    "Send",
    "TooLarge",
    "basic_credentials",
    "count_body",
    "form_value",
    "json_object",
    "json_reply",
    "parse_form",
    "read_body",
    "same_secret",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The caching headers RFC 6749 §5.1 asks of token responses.
NO_STORE: Final = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))


@dataclass(slots=True)
class Reply:
    """A complete answer: status, body, content type and any extra headers."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def send(self, send: Send) -> None:
        """Send it as one ASGI response (with its ``Content-Length``)."""
        headers = [(b"content-type", self.content_type), (b"content-length", b"%d" % len(self.body))]
        headers.extend(self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


@dataclass(slots=True)
class Request:
    """One HTTP request as the endpoints see it (header names lower-cased, the body once read)."""

    method: str
    path: str
    headers: dict[bytes, bytes]
    body: bytes = b""
    listener: str = "http"
    params: dict[str, str] = field(default_factory=dict)
    http_version: str = "1.1"


class Disconnected(Exception):
    """The client went away before its request body arrived."""


class TooLarge(Exception):
    """A request body over the limit."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; raises :class:`TooLarge` past *limit* bytes, :class:`Disconnected`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def count_body(receive: Receive) -> int:
    """Read and discard the request body; returns its size (resource calls only report it)."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return size


def json_reply(status: int, payload: object, headers: Iterable[tuple[bytes, bytes]] = ()) -> Reply:
    """A compact JSON reply."""
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode(), headers=tuple(headers))


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None if it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (any text, lone surrogates included)."""
    return secrets.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _content_type(headers: Mapping[bytes, bytes]) -> str:
    return headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()


def parse_form(request: Request, *, multipart: bool = False) -> dict[str, list[str]] | None:
    """The request's form fields, or None if it is not a form we accept."""
    kind = _content_type(request.headers)
    try:
        if kind == "application/x-www-form-urlencoded":
            return urllib.parse.parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
        if multipart and kind == "multipart/form-data":
            return _multipart(request.body, request.headers.get(b"content-type", b"").decode("latin-1"))
    except (UnicodeDecodeError, ValueError):
        return None
    return None


_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_FIELD_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)


def _multipart(body: bytes, content_type: str) -> dict[str, list[str]] | None:
    """A minimal multipart/form-data reader: text fields only, which is all a token request has."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        return None
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    fields: dict[str, list[str]] = {}
    chunks = body.split(delimiter)
    if len(chunks) < 3:  # preamble, at least one part, closing "--"
        return None
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return fields
        head, separator, value = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            return None
        name = None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                found = _FIELD_NAME.search(line)
                name = found.group(1).decode("utf-8") if found else None
        if name is None:
            return None
        fields.setdefault(name, []).append(value.removesuffix(b"\r\n").decode("utf-8"))
    return None  # no closing delimiter


def form_value(form: Mapping[str, list[str]], name: str) -> str | None:
    """The first value of a form field, or None if it is absent."""
    values = form.get(name)
    return values[0] if values else None


def basic_credentials(headers: Mapping[bytes, bytes]) -> tuple[str, str] | None:
    """The raw (id, secret) of an HTTP Basic header, or None if absent or unreadable."""
    value = headers.get(b"authorization")
    if value is None:
        return None
    scheme, _, encoded = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, separator, secret = decoded.partition(":")
    return (client_id, secret) if separator else None
