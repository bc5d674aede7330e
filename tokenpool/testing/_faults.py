"""Injected faults: what a fault spec may say, which requests it hits, and what it does to them.

Faults (``add_fault`` / ``POST /_admin/faults``), per provider, any combination
in one spec, several specs stacking:

* ``latency``: seconds before answering token requests (``resource_latency``: resource calls);
* ``status`` (+ ``retry_after``): the token endpoint answers that status instead;
* ``malformed``: a broken 2xx answer instead of a good one (see :data:`MALFORMED_KINDS`);
  ``bad_expires_in``, ``zero_expires_in`` and ``wrong_token_type`` still issue a real token;
* ``drop``: the answer starts and breaks off (a protocol error for the client);
* ``duration``: seconds after which the fault lapses; ``count``: how many requests it
  applies to (each request it sees uses one, whatever the request's own outcome).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio

from ._wire import NO_STORE, Receive, Reply, Send, json_reply

__all__ = [
    "MALFORMED_KINDS",
    "Fault",
    "as_seconds",
    "broken_reply",
    "drop",
    "fault_reply",
    "pause",
    "spoil",
    "take_faults",
]

#: Kinds of broken 2xx token answers the ``malformed`` fault can produce.
MALFORMED_KINDS: Final[frozenset[str]] = frozenset(
    {
        "html",
        "not_json",
        "empty",
        "missing_access_token",
        "bad_expires_in",
        "zero_expires_in",
        "wrong_token_type",
        "success_false",
    }
)


class Fault:
    """One fault spec, checked; ``remaining`` and ``until`` say how long it still applies."""

    __slots__ = (
        "drop",
        "id",
        "latency",
        "malformed",
        "remaining",
        "resource_latency",
        "retry_after",
        "status",
        "until",
    )

    def __init__(self, fault_id: int, spec: Mapping[str, Any], now: float) -> None:
        known = {"provider", "latency", "resource_latency", "status", "retry_after", "malformed"}
        known |= {"drop", "duration", "count"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        self.id = fault_id
        self.latency = as_seconds(spec.get("latency"), "latency")
        self.resource_latency = as_seconds(spec.get("resource_latency"), "resource_latency")
        status = spec.get("status")
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 599
        ):
            raise ValueError("status must be an integer HTTP status between 300 and 599")
        self.status: int | None = status
        retry_after = spec.get("retry_after")
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, int | float | str)
        ):
            raise ValueError("retry_after must be a number of seconds or an HTTP date string")
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        self.retry_after: str | None = None if retry_after is None else str(retry_after)
        malformed = spec.get("malformed")
        if malformed is not None and malformed not in MALFORMED_KINDS:
            raise ValueError(f"malformed must be one of {', '.join(sorted(MALFORMED_KINDS))}")
        self.malformed: str | None = malformed
        drop = spec.get("drop", False)
        if not isinstance(drop, bool):
            raise TypeError("drop must be true or false")
        self.drop = drop
        duration = spec.get("duration")
        if duration is not None:
            duration = as_seconds(duration, "duration")
            if duration <= 0:
                raise ValueError("duration must be positive")
        self.until = None if duration is None else now + duration
        count = spec.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer")
        self.remaining: int | None = count
        if not (self.latency or self.resource_latency or self.status or self.malformed or self.drop):
            raise ValueError(
                "a fault needs at least one of latency, resource_latency, status, malformed, drop"
            )

    @property
    def hits_token(self) -> bool:
        """Whether it does anything to token requests."""
        return bool(self.latency or self.status or self.malformed or self.drop)

    def describe(self, now: float) -> dict[str, Any]:
        """JSON-ready description, with what is left of its duration and count."""
        doc: dict[str, Any] = {"id": self.id}
        for name in ("latency", "resource_latency", "status", "retry_after", "malformed"):
            value = getattr(self, name)
            if value:
                doc[name] = value
        if self.drop:
            doc["drop"] = True
        if self.until is not None:
            doc["remaining_seconds"] = max(0.0, self.until - now)
        if self.remaining is not None:
            doc["remaining_count"] = self.remaining
        return doc


def as_seconds(value: object, name: str) -> float:
    """*value* as a float if it is a valid number of seconds (None is 0); else ValueError."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
        raise ValueError(f"{name} must be a non-negative number of seconds")
    return float(value)


def take_faults(faults: list[Fault], now: float, *, token: bool) -> list[Fault]:
    """The faults of *faults* that apply to this request; counts are consumed, lapsed faults dropped.

    *faults* (a provider's list) is updated in place.
    """
    applying: list[Fault] = []
    keep: list[Fault] = []
    for fault in faults:
        if fault.until is not None and now >= fault.until:
            continue
        if fault.hits_token if token else fault.resource_latency > 0:
            applying.append(fault)
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    continue
        keep.append(fault)
    faults[:] = keep
    return applying


async def pause(receive: Receive, delay: float) -> bool:
    """Wait *delay* seconds (an injected latency); False if the client disconnected meanwhile."""
    with anyio.move_on_after(delay):
        while True:
            # The body has been read, so the next message can only be the disconnect.
            if (await receive())["type"] == "http.disconnect":
                return False
    return True


def fault_reply(fault: Fault) -> Reply:
    """The answer of a ``status`` fault (with its ``Retry-After``, if any)."""
    assert fault.status is not None
    error = {429: "slow_down", 503: "temporarily_unavailable"}.get(fault.status, "server_error")
    headers = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after is not None else []
    return json_reply(
        fault.status, {"error": error, "error_description": f"injected fault: HTTP {fault.status}"}, headers
    )


async def drop(send: Send) -> None:
    """Start a response and break it: the client sees a protocol error, not an answer."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    # The server refuses to end a body shorter than its Content-Length and tears
    # the connection (HTTP/1.1) or the stream (HTTP/2) down, which is the point.
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b'{"access_token": "', "more_body": False})


def broken_reply(kind: str, success_false: Callable[[], Reply]) -> Reply | None:
    """The answer of a ``malformed`` fault that issues no token, or None for the kinds that do.

    *success_false* gives the provider's own "did not succeed" answer.  ``missing_access_token``
    renders the provider's answer without a token, so the token endpoint builds it.
    """
    if kind == "html":
        page = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Log in</body></html>"
        return Reply(200, page, b"text/html; charset=utf-8")
    if kind == "not_json":
        return Reply(200, b'{"access_token": "', headers=NO_STORE)
    if kind == "empty":
        return Reply(200, b"", headers=NO_STORE)
    if kind == "success_false":
        return success_false()
    return None


def spoil(payload: dict[str, Any], kind: str | None) -> None:
    """Break a real token answer the way a ``malformed`` fault that still issues a token says."""
    if kind == "bad_expires_in":
        payload["expires_in"] = "soon"
    elif kind == "zero_expires_in":
        payload["expires_in"] = 0
    elif kind == "wrong_token_type":
        payload["token_type"] = "MAC"  # noqa: S105 - a token type, not a password
