"""The admin API: ``/_admin/...`` on every listener, JSON over :class:`EmulatorApp`'s public methods.

``GET /_admin/`` describes it (:data:`ADMIN_HELP`): stats, credentials and
health to read; faults, revocation, revoke-on-issue, secret rotation,
lifetimes, the lifetime scale and reset to change.  Bad input is a 400 with
the method's own error message; an unknown action is a 404, a known one with
the wrong method a 405.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Final, Protocol

from ._constants import PROVIDERS
from ._wire import Receive, Reply, Request, Scope, Send, json_object, json_reply, read_body

__all__ = ["ADMIN_HELP", "Controls", "admin_reply", "serve_admin"]


class Controls(Protocol):
    """What the admin API calls: :class:`~tokenpool.testing.EmulatorApp`'s public control methods."""

    def stats(self, *, events: bool = True, since: float | None = None) -> dict[str, Any]: ...

    def credentials(self, provider: str) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def add_fault(self, provider: str, **spec: Any) -> int: ...

    def clear_faults(self, provider: str | None = None) -> int: ...

    def revoke_tokens(self, provider: str | None = None) -> int: ...

    def set_revoke_on_issue(self, provider: str, enabled: bool = True) -> bool: ...

    def rotate_secret(self, provider: str, client_id: str | None = None) -> str: ...

    def set_lifetime(
        self, provider: str, seconds: float | None = None, *, expires_in: int | None = None
    ) -> int: ...

    def set_lifetime_scale(self, scale: float) -> float: ...


_MAX_ADMIN_BODY: Final = 1024 * 1024

#: What ``GET /_admin/`` answers under ``endpoints``.
ADMIN_HELP: Final = {
    "GET /_admin/stats[?events=0][&since=T]": "counters per provider and the event timeline",
    "GET /_admin/credentials[?provider=P]": "current client credentials",
    "GET /_admin/health": "liveness",
    "POST /_admin/reset": "clear tokens, faults, counters, events, rotated secrets, lifetimes, "
    "scale changes, revoke-on-issue settings",
    "POST /_admin/faults": '{"provider", "latency"?, "resource_latency"?, "status"?, "retry_after"?, '
    '"malformed"?, "drop"?, "duration"?, "count"?}',
    "POST /_admin/clear-faults": '{"provider"?}',
    "POST /_admin/revoke": '{"provider"?}: revoke every issued token',
    "POST /_admin/revoke-on-issue": '{"provider", "enabled"?}: while enabled (default true), a new token '
    "revokes the same client's earlier live ones",
    "POST /_admin/rotate-secret": '{"provider", "client_id"?}: returns the new secret',
    "POST /_admin/lifetime": '{"provider", "seconds" | "expires_in"}: neither restores the default',
    "POST /_admin/lifetime-scale": '{"scale"}',
}
_ADMIN_HELP_KEYS: Final = frozenset(
    key.split()[1].removeprefix("/_admin/").split("[")[0] for key in ADMIN_HELP
)


async def serve_admin(app: Controls, scope: Scope, request: Request, receive: Receive, send: Send) -> None:
    """Read an admin request's body and query string, and answer it."""
    request.body = await read_body(receive, _MAX_ADMIN_BODY)
    query = urllib.parse.parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    request.params = {key: values[-1] for key, values in query.items()}
    await admin_reply(app, request).send(send)


def admin_reply(app: Controls, request: Request) -> Reply:
    """The answer to one admin request (its body and query parameters read)."""
    action = request.path.removeprefix("/_admin").strip("/")
    method = request.method
    try:
        body = json_object(request.body) if request.body.strip() else {}
        if body is None:
            return json_reply(
                400, {"error": "bad_request", "message": "admin requests take a JSON object body"}
            )
        if method == "GET" and action == "":
            return json_reply(200, {"endpoints": ADMIN_HELP, "providers": list(PROVIDERS)})
        if method == "GET" and action == "health":
            return json_reply(200, {"ok": True})
        if method == "GET" and action == "stats":
            since = request.params.get("since")
            with_events = request.params.get("events", "1") not in ("0", "false", "no")
            return json_reply(200, app.stats(events=with_events, since=float(since) if since else None))
        if method == "GET" and action == "credentials":
            name = request.params.get("provider")
            if name:
                return json_reply(200, app.credentials(name))
            return json_reply(200, {provider: app.credentials(provider) for provider in PROVIDERS})
        if method != "POST":
            return json_reply(405 if action in _ADMIN_HELP_KEYS else 404, {"error": "see GET /_admin/"})
        if action == "reset":
            app.reset()
            return json_reply(200, {"ok": True})
        if action == "faults":
            spec = dict(body)
            fault_id = app.add_fault(spec.pop("provider", None), **spec)
            return json_reply(200, {"id": fault_id})
        if action == "clear-faults":
            return json_reply(200, {"cleared": app.clear_faults(body.get("provider"))})
        if action == "revoke":
            return json_reply(200, {"revoked": app.revoke_tokens(body.get("provider"))})
        if action == "revoke-on-issue":
            provider = body.get("provider", "")
            enabled = app.set_revoke_on_issue(provider, body.get("enabled", True))
            return json_reply(200, {"provider": provider, "revoke_on_issue": enabled})
        if action == "rotate-secret":
            provider = body.get("provider", "")  # rotate_secret refuses a missing or unknown one
            secret = app.rotate_secret(provider, body.get("client_id"))
            client_id = body.get("client_id") or app.credentials(provider)["client_id"]
            return json_reply(200, {"provider": provider, "client_id": client_id, "client_secret": secret})
        if action == "lifetime":
            provider = body.get("provider")
            expires_in = app.set_lifetime(
                body.get("provider", ""), body.get("seconds"), expires_in=body.get("expires_in")
            )
            return json_reply(200, {"provider": provider, "expires_in": expires_in})
        if action == "lifetime-scale":
            return json_reply(200, {"lifetime_scale": app.set_lifetime_scale(body.get("scale", 0))})
    except (ValueError, TypeError) as exc:
        return json_reply(400, {"error": "bad_request", "message": str(exc)})
    return json_reply(404, {"error": "not_found", "message": "see GET /_admin/"})
