"""The emulator's books: each provider's clients and counters, every issued token, the event timeline.

Everything lives in dicts and plain integers: the resource endpoint reads
:attr:`Ledger.tokens` and :attr:`Ledger.clock` directly, so checking a bearer
token is a dict lookup, a clock read and a few comparisons.

Counters (``stats()``) are plain integers updated on the single event loop, so
they are exact; ``token_failures`` is keyed by HTTP status, or ``dropped`` /
``disconnected``; ``revoke_on_issue`` is that mode's current setting and
``revoked_on_issue`` the number of tokens it revoked; the event timeline
(``token_request``, ``token_issued``, ``token_failure``, ``resource_401``) uses
seconds since the app started.
"""

from __future__ import annotations

import heapq
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._constants import DEFAULT_LIFETIMES, PROVIDERS
from ._records import Client, Token

if TYPE_CHECKING:
    from ._faults import Fault
    from ._providers._base import ProviderEmulator
    from ._settings import ClientSpec

__all__ = ["Client", "Ledger", "ProviderState", "Stats", "Token"]


def revoke_live(tokens: Iterable[Token], now: float) -> int:
    """Revoke the live (unrevoked, unexpired) ones of *tokens*; returns how many."""
    revoked = 0
    for token in tokens:
        if not token.revoked and now < token.expires_at:
            token.revoked = True
            revoked += 1
    return revoked


class Stats:
    """One provider's counters."""

    __slots__ = (
        "by_client",
        "by_http_version",
        "in_flight",
        "max_in_flight",
        "max_resource_in_flight",
        "resource_400",
        "resource_401",
        "resource_403",
        "resource_calls",
        "resource_disconnected",
        "resource_in_flight",
        "resource_ok",
        "revoked_on_issue",
        "token_failures",
        "token_malformed",
        "token_requests",
        "tokens_issued",
    )

    def __init__(self) -> None:
        self.token_requests = 0
        self.tokens_issued = 0
        self.token_failures: dict[str, int] = {}
        self.token_malformed: dict[str, int] = {}
        self.by_client: dict[str, int] = {}
        self.by_http_version: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.resource_calls = 0
        self.resource_ok = 0
        self.resource_401: dict[str, int] = {}
        self.resource_400 = 0
        self.resource_403 = 0
        self.resource_disconnected = 0
        self.resource_in_flight = 0
        self.max_resource_in_flight = 0
        self.revoked_on_issue = 0


class ProviderState:
    """One provider at runtime: its emulator module, clients, lifetime, faults, mode and counters."""

    __slots__ = (
        "clients",
        "default",
        "expires_in_exact",
        "faults",
        "handler",
        "header_rule",
        "lifetime",
        "listener_rule",
        "name",
        "revoke_on_issue",
        "scope_rule",
        "stats",
    )

    def __init__(self, handler: ProviderEmulator, specs: Sequence[ClientSpec]) -> None:
        self.handler = handler
        self.name = handler.name
        # The provider's resource rules, bound once (None: no such rule), for the hot path.
        self.listener_rule = handler.refuse_listener
        self.header_rule = handler.resource_problem
        self.scope_rule = handler.needed_scope
        self.clients = {spec.client_id: Client(spec, handler.default_scope) for spec in specs}
        self.default = self.clients[specs[0].client_id]
        self.lifetime: float = float(DEFAULT_LIFETIMES[self.name])
        self.expires_in_exact: int | None = None
        self.faults: list[Fault] = []
        self.revoke_on_issue = False
        self.stats = Stats()

    def describe(self, now: float, live_tokens: int, expires_in: int) -> dict[str, Any]:
        """The provider's entry in :meth:`Ledger.stats`."""
        stats = self.stats
        return {
            "token_requests": stats.token_requests,
            "tokens_issued": stats.tokens_issued,
            "token_failures": dict(stats.token_failures),
            "token_malformed": dict(stats.token_malformed),
            "token_requests_by_client": dict(stats.by_client),
            "token_requests_by_http_version": dict(stats.by_http_version),
            "token_requests_in_flight": stats.in_flight,
            "max_concurrent_token_requests": stats.max_in_flight,
            "resource_calls": stats.resource_calls,
            "resource_ok": stats.resource_ok,
            "resource_401": dict(stats.resource_401),
            "resource_400": stats.resource_400,
            "resource_403": stats.resource_403,
            "resource_disconnected": stats.resource_disconnected,
            "max_concurrent_resource_calls": stats.max_resource_in_flight,
            "live_tokens": live_tokens,
            "revoke_on_issue": self.revoke_on_issue,
            "revoked_on_issue": stats.revoked_on_issue,
            "expires_in": expires_in,
            "faults": [
                fault.describe(now) for fault in self.faults if fault.until is None or now < fault.until
            ],
        }


class Ledger:
    """Everything the emulator remembers between requests, and the bookkeeping on it.

    Args:
        handlers: The provider emulators, by provider name.
        specs: The registered clients, by provider name.
        clock: The server clock.
        lifetime_scale: The lifetime scale to start from (and to come back to on :meth:`reset`).
        event_capacity: How many timeline events to keep.
        expired_token_grace: How long an expired token is remembered before it is pruned.
    """

    __slots__ = (
        "_events",
        "_grace",
        "_handlers",
        "_heap",
        "_initial_scale",
        "_specs",
        "clock",
        "events_total",
        "lifetime_scale",
        "providers",
        "started",
        "tokens",
    )

    def __init__(
        self,
        handlers: Mapping[str, ProviderEmulator],
        specs: Mapping[str, Sequence[ClientSpec]],
        *,
        clock: Callable[[], float],
        lifetime_scale: float,
        event_capacity: int,
        expired_token_grace: float,
    ) -> None:
        self.clock = clock
        self.started = clock()
        self._handlers = handlers
        self._specs = specs
        self._initial_scale = lifetime_scale
        self._grace = expired_token_grace
        self._events: deque[tuple[float, str, str, str]] = deque(maxlen=event_capacity)
        self.lifetime_scale = lifetime_scale
        self.providers: dict[str, ProviderState] = {}
        self.tokens: dict[str, Token] = {}
        self._heap: list[tuple[float, str]] = []
        self.events_total = 0
        self.reset()

    def reset(self) -> None:
        """Fresh provider states (start secrets, lifetimes, no faults), no tokens, no events."""
        self.providers = {name: ProviderState(self._handlers[name], self._specs[name]) for name in PROVIDERS}
        self.tokens = {}
        self._heap = []
        self._events.clear()
        self.events_total = 0
        self.lifetime_scale = self._initial_scale

    def expires_in(self, provider: ProviderState) -> int:
        """The ``expires_in`` the provider's next token will carry."""
        if provider.expires_in_exact is not None:
            return provider.expires_in_exact
        return max(1, round(provider.lifetime * self.lifetime_scale))

    def event(self, now: float, provider: str, kind: str, detail: str) -> None:
        """Add an event to the timeline (*now* is the server clock's reading)."""
        self.events_total += 1
        self._events.append((now - self.started, provider, kind, detail))

    def issue(self, provider: ProviderState, client: Client, scopes: frozenset[str]) -> tuple[str, int]:
        """Issue a token to *client* (revoking its earlier ones in revoke-on-issue mode).

        Returns:
            The token and its ``expires_in``; the server expires it at exactly that.
        """
        stats = provider.stats
        now = self.clock()
        expires_in = self.expires_in(provider)
        token = secrets.token_urlsafe(32)
        if provider.revoke_on_issue:
            stats.revoked_on_issue += revoke_live(client.tokens.values(), now)
            client.tokens.clear()  # all revoked or expired: nothing left for a later issue to revoke
        issued = Token(provider.name, client, scopes, now + expires_in)
        self.tokens[token] = client.tokens[token] = issued
        heapq.heappush(self._heap, (now + expires_in, token))
        self.prune(now)
        stats.tokens_issued += 1
        self.event(now, provider.name, "token_issued", str(expires_in))
        return token, expires_in

    def prune(self, now: float) -> None:
        """Forget the tokens that expired more than the grace period ago."""
        heap = self._heap
        limit = now - self._grace
        while heap and heap[0][0] <= limit:
            _, token = heapq.heappop(heap)
            issued = self.tokens.pop(token, None)
            if issued is not None:
                issued.client.tokens.pop(token, None)

    def revoke(self, provider: str | None) -> int:
        """Revoke every token issued so far (by one provider, or all); returns how many live ones were hit."""
        now = self.clock()
        revoked = 0
        for token in self.tokens.values():
            if (provider is None or token.provider == provider) and not token.revoked:
                token.revoked = True
                revoked += now < token.expires_at
        return revoked

    def stats(self, *, events: bool, since: float | None) -> dict[str, Any]:
        """Exact counters per provider, and the event timeline (server-relative monotonic seconds)."""
        now = self.clock()
        self.prune(now)
        live: dict[str, int] = dict.fromkeys(PROVIDERS, 0)
        for token in self.tokens.values():
            if not token.revoked and now < token.expires_at:
                live[token.provider] += 1
        providers = {
            name: state.describe(now, live[name], self.expires_in(state))
            for name, state in self.providers.items()
        }
        doc: dict[str, Any] = {
            "now": now - self.started,
            "lifetime_scale": self.lifetime_scale,
            "providers": providers,
            "tracked_tokens": len(self.tokens),
            "events_total": self.events_total,
            "events_dropped": self.events_total - len(self._events),
        }
        if events:
            doc["events"] = [
                {"t": t, "provider": provider, "kind": kind, "detail": detail}
                for t, provider, kind, detail in self._events
                if since is None or t >= since
            ]
        return doc
