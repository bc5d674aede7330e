"""A cell: one (worker, provider) token, its refresh loop and its waiters.

The cell is the only place that knows about time.  One long-lived task per
cell (``run``) sends every token request the cell ever makes, so "at most one
token request in flight per cell" holds by construction rather than by
locking.  Callers never send requests: they read ``cell.token`` (the pool's
hit path) or, when there is no usable token, join the current *flight* and
wait for its outcome.  A waiter that is cancelled or times out only stops
waiting; the request itself belongs to the cell's task.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from ._clock import Clock
from ._exceptions import (
    CredentialsRejected,
    PoolStateError,
    TokenEndpointError,
    TokenEndpointUnreachable,
    TokenRequestError,
    TokenWaitTimeout,
    clone_for_raise,
)
from ._token import Token, TokenResponse

if TYPE_CHECKING:
    from ._observe import Observer
    from .providers import Provider

__all__ = ["Cell", "Fetch"]

#: The seam where a token comes from: send the provider's token request, parse the answer.
Fetch = Callable[[str, "Provider"], Awaitable[TokenResponse]]


class _Flight:
    """One token request's outcome, shared by everyone waiting on it."""

    __slots__ = ("done", "error", "provider", "token")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.token: Token | None = None
        self.error: BaseException | None = None
        #: The settings the request was built from (``None`` until it is sent).
        self.provider: Provider | None = None


class Cell:
    """State, schedule and single-flight refresh of one provider's token in one worker."""

    __slots__ = (
        "_demand",
        "_failures",
        "_fetch",
        "_flight",
        "_last_error",
        "_not_before",
        "_observer",
        "_rng",
        "_successes",
        "_token_provider",
        "_u",
        "_wake",
        "api_headers",
        "clock",
        "foreign_hits",
        "hits",
        "misses",
        "name",
        "provider",
        "requests",
        "token",
        "waiting",
    )

    def __init__(
        self,
        name: str,
        provider: Provider,
        *,
        fetch: Fetch,
        clock: Clock,
        rng: random.Random,
        observer: Observer,
    ) -> None:
        self.name = name
        self.provider = provider
        #: The provider's extra API headers, built once (the auth flow reads them per request).
        self.api_headers = dict(provider.api_headers())
        self.clock = clock
        #: The current token, possibly stale or expired; ``None`` before the first one.
        self.token: Token | None = None
        #: Plain counters read by the metrics publisher (cheaper than a Prometheus inc()).
        self.hits = 0
        #: Hits served on other threads by BlockingTokenPool (incremented under its lock).
        self.foreign_hits = 0
        self.misses = 0
        self.waiting = 0
        #: Token requests sent by this cell (successful or not).
        self.requests = 0
        self._fetch = fetch
        self._observer = observer
        self._rng = rng
        # Drawn once per cell: where inside the jitter band this cell renews.
        self._u = rng.random()
        self._flight: _Flight | None = None
        self._wake = anyio.Event()
        self._demand = False
        self._failures = 0
        self._not_before = -math.inf
        self._last_error: TokenRequestError | None = None
        self._successes = 0
        self._token_provider: Provider | None = None

    # -- what callers see -------------------------------------------------------------------

    @property
    def failures(self) -> int:
        """Consecutive failed token requests (0 when healthy)."""
        return self._failures

    @property
    def last_error(self) -> TokenRequestError | None:
        return self._last_error

    @property
    def next_attempt_at(self) -> float:
        """Earliest instant the next token request may go out (backoff gate)."""
        return self._not_before

    @property
    def refreshing(self) -> bool:
        return self._flight is not None

    def usable(self, now: float) -> Token | None:
        token = self.token
        return token if token is not None and now < token.usable_until else None

    async def wait_for_token(self, timeout: float | None) -> Token:
        """The slow path: no usable token, so join (or start) the single flight."""
        token = self.usable(self.clock.now())
        if token is not None:
            # A refresh landed between the caller's check and this one.
            self.hits += 1
            return token
        flight = self._flight
        if flight is None:
            if self._last_error is not None and self.clock.now() < self._not_before:
                # Backing off after a failure: fail fast instead of piling up
                # waiters or sending a request the backoff forbids.
                raise clone_for_raise(self._last_error)
            flight = self._flight = _Flight()
            self._demand = True
            self._wake.set()
        self.misses += 1
        self.waiting += 1
        self._observer.waiting(self, +1)
        try:
            if timeout is None:
                await flight.done.wait()
            else:
                with anyio.move_on_after(timeout):
                    await flight.done.wait()
                if not flight.done.is_set():
                    raise TokenWaitTimeout(
                        f"[{self.name}] no token within {timeout:g} s; the refresh goes on for others",
                        provider=self.name,
                    )
        finally:
            self.waiting -= 1
            self._observer.waiting(self, -1)
        if flight.token is not None:
            return flight.token
        assert flight.error is not None
        raise clone_for_raise(flight.error)

    def invalidate(self, token: Token) -> bool:
        """Drop *token* if it is still the current one and ask for a new one.

        Returns whether anything was invalidated: a 401 for a token that has
        already been replaced must not cause another refresh.
        """
        if self.token is not token:
            return False
        self.token = None
        self._demand = True
        self._wake.set()
        self._observer.invalidated(self, token)
        return True

    def replace_provider(self, provider: Provider) -> None:
        """Use *provider* (new credentials, say) from the next token request on.

        The current token keeps being served; any backoff from failures under
        the old settings is forgotten, and if the cell is failing a request
        goes out at once.
        """
        self.provider = provider
        self.api_headers = dict(provider.api_headers())
        self._not_before = -math.inf
        if self._last_error is not None or self.token is None:
            self._demand = True
        self._wake.set()

    async def refresh(self, timeout: float | None = None) -> Token:
        """A token fetched with the current settings, requested now (respecting backoff)."""
        wanted = self.provider
        successes = self._successes
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                flight = self._flight
                if flight is not None and flight.provider is not None and flight.provider is not wanted:
                    # Out with older settings (before replace_provider): let it land, then ask again.
                    await flight.done.wait()
                    continue
                if flight is None and self._successes > successes and self._token_provider is wanted:
                    # A request sent since we were called, with these settings, already succeeded.
                    assert self.token is not None
                    return self.token
                if flight is None:
                    if self._last_error is not None and self.clock.now() < self._not_before:
                        raise clone_for_raise(self._last_error)
                    flight = self._flight = _Flight()
                    self._demand = True
                    self._wake.set()
                await flight.done.wait()
                if flight.token is not None:
                    return flight.token
                assert flight.error is not None
                raise clone_for_raise(flight.error)
        raise TokenWaitTimeout(
            f"[{self.name}] refresh did not finish within {timeout:g} s", provider=self.name
        )

    # -- the cell's own task ----------------------------------------------------------------

    def next_request_at(self) -> float:
        """When the loop should send its next token request (pure; ``inf`` = idle)."""
        if self._demand or self._flight is not None:
            wanted = -math.inf
        elif self.token is not None:
            wanted = self.token.refresh_at
        else:
            # No token and nobody asking (lazy start, or gave up after a
            # failure nobody is waiting for): stay idle until a caller comes.
            wanted = math.inf
        return max(wanted, self._not_before)

    async def run(self) -> None:
        """The refresh loop; runs in the pool's task group until the pool closes."""
        try:
            while True:
                due = self.next_request_at()
                if due > self.clock.now():
                    self._wake = anyio.Event()
                    await self.clock.wait(self._wake, due)
                    continue
                await self._attempt()
        finally:
            flight, self._flight = self._flight, None
            if flight is not None and not flight.done.is_set():
                flight.error = PoolStateError(
                    f"[{self.name}] the pool closed while a token was being fetched"
                )
                flight.done.set()

    async def _attempt(self) -> None:
        flight = self._flight
        if flight is None:
            flight = self._flight = _Flight()
        self._demand = False
        provider = flight.provider = self.provider
        attempt = self._failures + 1
        self.requests += 1
        self._observer.refresh_started(self, attempt)
        sent_at = self.clock.now()
        try:
            # The fetch applies provider.refresh.request_timeout to the request
            # itself, not to its wait for a free request slot.
            response = await self._fetch(self.name, provider)
            token = provider.refresh.stamp(response, sent_at=sent_at, u=self._u)
        except TimeoutError:
            error: TokenRequestError = TokenEndpointUnreachable(
                f"token request timed out after {provider.refresh.request_timeout:g} s",
                provider=self.name,
            )
        except TokenRequestError as exc:
            error = exc
        except Exception as exc:
            # A bug in an adapter or the HTTP stack must not end the refresh
            # loop; it is reported by type only (its text may quote the request).
            error = TokenEndpointUnreachable(
                f"unexpected {type(exc).__name__} while fetching a token", provider=self.name
            )
        else:
            self.token = token
            self._successes += 1
            self._token_provider = provider
            self._failures = 0
            self._not_before = -math.inf
            self._last_error = None
            flight.token = token
            self._flight = None
            flight.done.set()
            self._observer.refresh_succeeded(self, token, self.clock.now() - sent_at)
            return
        error.provider = self.name
        now = self.clock.now()
        if provider is not self.provider:
            # The settings were replaced (rotated credentials, say) while this
            # request was out: its failure says nothing about the new ones.
            # No backoff, no last error; try the new settings at once.
            self._demand = True
            flight.error = error
            self._flight = None
            flight.done.set()
            self._observer.refresh_failed(self, error, now - sent_at, 0.0)
            return
        self._failures += 1
        retry_after = error.retry_after if isinstance(error, TokenEndpointError) else None
        rejected = isinstance(error, CredentialsRejected)
        delay = provider.refresh.backoff(
            self._failures, self._rng.random(), retry_after=retry_after, credentials_rejected=rejected
        )
        current = self.token
        if current is not None and retry_after is None and not rejected:
            # Never let a plain backoff step jump past the moment the current
            # token stops being served: the last retry goes out just before.
            last_chance = current.usable_until - min(2.0, 0.01 * current.expires_in)
            if now < last_chance < now + delay:
                delay = last_chance - now
        self._not_before = now + delay
        self._last_error = error
        flight.error = error
        self._flight = None
        flight.done.set()
        self._observer.refresh_failed(self, error, now - sent_at, delay)
