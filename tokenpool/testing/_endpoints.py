"""The two request flows every provider shares: its token endpoint and its bearer-protected resource.

The provider's module (``providers/``) judges a token request; everything
around that is here: the counters, the faults, issuing the token (with the
``malformed`` fault's broken answers) and, for resource calls, the bearer check
against the server's own clock followed by the provider's header and scope rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._faults import broken_reply, drop, fault_reply, pause, spoil, take_faults
from ._wire import (
    NO_STORE,
    Disconnected,
    Receive,
    Reply,
    Request,
    Send,
    TooLarge,
    count_body,
    json_reply,
    read_body,
)

if TYPE_CHECKING:
    from ._ledger import Ledger, ProviderState, Stats
    from ._providers._base import Grant

__all__ = ["MAX_BODY", "resource_endpoint", "token_endpoint"]

#: The largest token request (and non-admin request) body read.
MAX_BODY: Final = 64 * 1024
_MAX_CLIENT_KEYS: Final = 1000


async def token_endpoint(
    ledger: Ledger, provider: ProviderState, request: Request, receive: Receive, send: Send
) -> None:
    """Serve one POST to the provider's token endpoint."""
    stats = provider.stats
    stats.token_requests += 1
    stats.by_http_version[request.http_version] = stats.by_http_version.get(request.http_version, 0) + 1
    stats.in_flight += 1
    if stats.in_flight > stats.max_in_flight:
        stats.max_in_flight = stats.in_flight
    try:
        try:
            request.body = await read_body(receive, MAX_BODY)
        except TooLarge:
            _token_failed(ledger, provider, stats, "413")
            raise
        except Disconnected:
            _token_failed(ledger, provider, stats, "disconnected")
            raise
        client_id, outcome = provider.handler.token(provider.clients, request)
        key = client_id if client_id else "<none>"
        if key not in stats.by_client and len(stats.by_client) >= _MAX_CLIENT_KEYS:
            key = "<other>"  # client ids come from the wire: keep the table bounded
        stats.by_client[key] = stats.by_client.get(key, 0) + 1
        now = ledger.clock()
        ledger.event(now, provider.name, "token_request", key)
        malformed = None
        if provider.faults:
            faults = take_faults(provider.faults, now, token=True)
            delay = sum(fault.latency for fault in faults)
            if delay > 0 and not await pause(receive, delay):
                _token_failed(ledger, provider, stats, "disconnected")
                return
            if any(fault.drop for fault in faults):
                _token_failed(ledger, provider, stats, "dropped")
                await drop(send)
                return
            for fault in faults:
                if fault.status:
                    _token_failed(ledger, provider, stats, str(fault.status))
                    await fault_reply(fault).send(send)
                    return
            malformed = next((fault.malformed for fault in faults if fault.malformed), None)
        if isinstance(outcome, Reply):
            _token_failed(ledger, provider, stats, str(outcome.status))
            await outcome.send(send)
            return
        await _issue(ledger, provider, outcome, malformed).send(send)
    finally:
        stats.in_flight -= 1


def _token_failed(ledger: Ledger, provider: ProviderState, stats: Stats, key: str) -> None:
    stats.token_failures[key] = stats.token_failures.get(key, 0) + 1
    ledger.event(ledger.clock(), provider.name, "token_failure", key)


def _issue(ledger: Ledger, provider: ProviderState, grant: Grant, malformed: str | None) -> Reply:
    if malformed is not None:
        stats = provider.stats
        stats.token_malformed[malformed] = stats.token_malformed.get(malformed, 0) + 1
        broken = broken_reply(malformed, provider.handler.success_false_reply)
        if broken is not None:
            return broken
        if malformed == "missing_access_token":
            payload = grant.render("", ledger.expires_in(provider))
            del payload["access_token"]
            return json_reply(grant.status, payload, NO_STORE)
    token, expires_in = ledger.issue(provider, grant.client, grant.scopes)
    payload = grant.render(token, expires_in)
    spoil(payload, malformed)
    return json_reply(grant.status, payload, NO_STORE)


async def resource_endpoint(
    ledger: Ledger, provider: ProviderState, request: Request, receive: Receive, send: Send, *, cash_out: bool
) -> None:
    """Serve one call to the provider's resource (or, with *cash_out*, NTX MX's payout)."""
    stats = provider.stats
    stats.resource_calls += 1
    stats.resource_in_flight += 1
    if stats.resource_in_flight > stats.max_resource_in_flight:
        stats.max_resource_in_flight = stats.resource_in_flight
    try:
        size = await count_body(receive)
        if provider.faults:
            delay = sum(f.resource_latency for f in take_faults(provider.faults, ledger.clock(), token=False))
            if delay > 0 and not await pause(receive, delay):
                stats.resource_disconnected += 1  # the caller gave up; nobody to answer
                return
        reply = _authorize(ledger, provider, request)
        if reply is None:
            stats.resource_ok += 1
            if cash_out:
                reply = json_reply(201, {"status": "PENDING", "provider": provider.name, "body_bytes": size})
            else:
                reply = json_reply(
                    200,
                    {"ok": True, "provider": provider.name, "method": request.method, "body_bytes": size},
                )
        await reply.send(send)
    finally:
        stats.resource_in_flight -= 1


def _authorize(ledger: Ledger, provider: ProviderState, request: Request) -> Reply | None:
    """None if the call may proceed, else the error reply (and the counters updated)."""
    stats = provider.stats
    rule = provider.listener_rule
    if rule is not None:
        refusal = rule(request.listener)
        if refusal is not None:
            stats.resource_400 += 1
            return refusal
    now = ledger.clock()
    headers = request.headers
    authorization = headers.get(b"authorization", b"")
    scheme, _, value = authorization.partition(b" ")
    token = ledger.tokens.get(value.strip().decode("latin-1")) if value else None
    if not authorization or scheme.lower() != b"bearer" or not value.strip():
        reason = "missing"
    elif token is None or token.provider != provider.name:
        reason = "unknown"
    elif token.revoked:
        reason = "revoked"
    elif now >= token.expires_at:
        reason = "expired"
    else:
        reason = ""
    if reason:
        stats.resource_401[reason] = stats.resource_401.get(reason, 0) + 1
        ledger.event(now, provider.name, "resource_401", reason)
        challenge = (
            f'Bearer realm="{provider.name}", error="invalid_token", error_description="token {reason}"'
        )
        return json_reply(
            401,
            {"error": "invalid_token", "reason": reason, "error_description": f"access token {reason}"},
            [(b"www-authenticate", challenge.encode())],
        )
    assert token is not None
    header_rule = provider.header_rule
    if header_rule is not None:
        problem = header_rule(token, headers)
        if problem is not None:
            stats.resource_400 += 1
            return json_reply(400, {"error": "bad_request", "message": problem})
    scope_rule = provider.scope_rule
    if scope_rule is not None:
        needed = scope_rule(request.method)
        if needed is not None and needed not in token.scopes:
            stats.resource_403 += 1
            return json_reply(403, {"error": "insufficient_scope", "scope": needed})
    return None
