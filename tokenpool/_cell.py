"""A cell: one (worker, provider) token, its single flight and its waiters.

The cell changes the state it inherits (:class:`~tokenpool._cell_state.CellState`);
:mod:`tokenpool._schedule` decides, purely, what to do with it at instant
*t*; the pool's scheduler wakes the cell when it is due and runs its
:meth:`Cell.attempt` as a task.  The cell marks itself *sending* before that
task starts and clears the mark when it ends, and the scheduler launches only
cells that are not sending: "at most one token request in flight per cell"
holds by construction rather than by locking.  Callers never send requests:
they read ``cell.token`` (the pool's hit path) or, when there is no usable
token, join the current *flight* and wait for its outcome.  A waiter that is
cancelled or times out only stops waiting.

The cell is, with its schedule, the only place that knows about time.  It gets
token responses from a :class:`~tokenpool._source.TokenSource` handed down by
the pool; it never calls back up.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ._cell_state import NO_HEADERS, CellState, Flight
from ._exceptions import AdapterError, PoolStateError, TokenRequestError, TokenWaitTimeout, clone_for_raise
from ._schedule import (
    accept,
    is_young_replacement,
    last_chance,
    may_refresh_on_401,
    next_request_at,
    retry_delay,
)
from ._source import RenewalDeferred

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._clock import Clock
    from ._observe import Observer
    from ._source import TokenSource
    from ._token import Token
    from .providers import Provider

__all__ = ["Cell"]


class Cell(CellState):
    """State and single-flight refresh of one provider's token in one worker.

    Args:
        name: The pool's name for the provider.
        provider: The adapter (settings) to fetch with.
        source: Where token responses come from.
        clock: The pool's clock.
        rng: Jitter source (one draw per cell, one per backoff step).
        observer: Logs and metrics for the rare paths.
        wake: Called with the cell whenever its :attr:`due` instant moved
            earlier or became finite (the scheduler's heap push).
        group: The metrics label value for this cell.
    """

    __slots__ = (
        "_deferred_until",
        "_demand",
        "_forced",
        "_observer",
        "_reissue",
        "_reissued",
        "_rejected",
        "_rng",
        "_source",
        "_strikes",
        "_successes",
        "_token_provider",
        "_u",
        "_wake",
    )

    def __init__(
        self,
        name: str,
        provider: Provider,
        *,
        source: TokenSource,
        clock: Clock,
        rng: random.Random,
        observer: Observer,
        wake: Callable[[Cell], None],
        group: str,
    ) -> None:
        super().__init__(name, provider, clock=clock, group=group)
        self._source = source
        self._observer = observer
        self._rng = rng
        self._wake = wake
        # Drawn once per cell: where inside the jitter band this cell renews.
        self._u = rng.random()
        # refresh() callers waiting: like waiters, they cannot wait for a deferred renewal.
        self._forced = 0
        self._demand = False
        # The source deferred a renewal that can wait (RenewalDeferred): ask again then,
        # unless a caller or a 401 needs a token sooner.
        self._deferred_until = -math.inf
        self._successes = 0
        self._token_provider: Provider | None = None
        # The 401 bookkeeping: the token a 401 dropped (for the next fetch), whether
        # the next request answers a 401, and the token that such a request got.
        self._rejected: Token | None = None
        self._reissue = False
        self._reissued: Token | None = None
        self._strikes = 0

    # -- what callers do --------------------------------------------------------------------

    async def wait_for_token(self, timeout: float | None) -> Token:
        """The slow path: no usable token, so join (or start) the single flight.

        Never returns a token past its ``usable_until``: one that expired
        between its arrival and this waiter's wake-up sends the waiter round
        again (``RefreshPolicy.min_lifetime`` keeps that rare).
        """
        token = self.usable(self._clock.now())
        if token is not None:
            # A refresh landed between the caller's check and this one.
            self.hits += 1
            return token
        self.misses += 1
        self.waiting += 1
        self._observer.waiting(self, +1)
        if self._deferred_until > -math.inf:
            self._reschedule()  # a deferred renewal cannot wait any more
        try:
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                while True:
                    flight = self._flight
                    if flight is None:
                        if self._last_error is not None and self._clock.now() < self._not_before:
                            # Backing off after a failure: fail fast instead of piling up
                            # waiters or sending a request the backoff forbids.
                            raise clone_for_raise(self._last_error)
                        flight = self._ask()
                    await flight.done.wait()
                    token = flight.token
                    if token is None:
                        assert flight.error is not None
                        raise clone_for_raise(flight.error)
                    if self._clock.now() < token.usable_until:
                        return token
            assert timeout is not None
            raise TokenWaitTimeout(
                f"[{self.name}] no token within {timeout:g} s; the refresh goes on for others",
                provider=self.name,
            )
        finally:
            self.waiting -= 1
            self._observer.waiting(self, -1)

    def invalidate(self, token: Token) -> bool:
        """Drop *token* (refused by the API) if it is still the current one, and ask for a new one.

        Returns whether a refresh will follow: not for a token that has
        already been replaced (a thousand concurrent 401s cause one refresh),
        and not for a brand-new replacement that was itself refused within
        the cooldown (see ``RefreshPolicy.unauthorized_cooldown``).
        """
        if self.token is not token:
            return False
        now = self._clock.now()
        policy, reissued = self.provider.refresh, token is self._reissued
        if not may_refresh_on_401(policy, token, reissued=reissued, strikes=self._strikes, now=now):
            self._observer.unauthorized_ignored(self, token)
            return False
        young = is_young_replacement(policy, token, reissued=reissued, now=now)
        self._strikes = self._strikes + 1 if young else 0
        self._set_token(None)
        self._rejected = token
        self._reissue = True
        self._demand = True
        self._observer.invalidated(self, token)
        self._reschedule()
        return True

    def replace_provider(self, provider: Provider) -> None:
        """Use *provider* (new credentials, say) from the next token request on.

        The current token keeps being served; any backoff from failures under
        the old settings is forgotten, and if the cell is failing a request
        goes out at once.
        """
        self.provider = provider
        self.api_headers = dict(provider.api_headers()) or NO_HEADERS
        self._not_before = -math.inf
        self._deferred_until = -math.inf
        if self._last_error is not None or self.token is None:
            self._demand = True
        self._reschedule()

    async def refresh(self, timeout: float | None = None) -> Token:
        """A token fetched with the current settings, requested now (respecting backoff)."""
        wanted = self.provider
        successes = self._successes
        self._forced += 1
        if self._deferred_until > -math.inf:
            self._reschedule()
        try:
            return await self._refresh(wanted, successes, timeout)
        finally:
            self._forced -= 1

    async def _refresh(self, wanted: Provider, successes: int, timeout: float | None) -> Token:
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
                    if self._last_error is not None and self._clock.now() < self._not_before:
                        raise clone_for_raise(self._last_error)
                    flight = self._ask()
                await flight.done.wait()
                if flight.token is not None:
                    return flight.token
                assert flight.error is not None
                raise clone_for_raise(flight.error)
        assert timeout is not None
        raise TokenWaitTimeout(
            f"[{self.name}] refresh did not finish within {timeout:g} s", provider=self.name
        )

    def request_token(self) -> None:
        """Ask for a token in the background unless one is usable or on its way (warm-up)."""
        if self._flight is None and self.usable(self._clock.now()) is None:
            self._ask()

    def close(self) -> None:
        """Release the waiters of a flight that will never be sent (the pool is closing)."""
        flight, self._flight = self._flight, None
        if flight is not None and not flight.done.is_set():
            flight.error = PoolStateError(f"[{self.name}] the pool closed while a token was being fetched")
            flight.done.set()
        self.due = math.inf

    # -- scheduling -------------------------------------------------------------------------

    def _ask(self) -> Flight:
        flight = self._flight = Flight()
        self._demand = True
        self._reschedule()
        return flight

    def _reschedule(self) -> None:
        """Tell the scheduler when the next attempt is due (re-evaluated when an attempt ends)."""
        if self.sending:
            return
        due = next_request_at(
            self.token, demand=self._demand or self._flight is not None, not_before=self._not_before
        )
        if self._deferred_until > due and not self._needed_now():
            due = self._deferred_until
        if due != self.due:
            self.due = due
            if due < math.inf:
                self._wake(self)

    def _needed_now(self) -> bool:
        """Whether a caller waits or a 401 dropped the token: a deferred renewal cannot wait."""
        return self._reissue or self.waiting > 0 or self._forced > 0 or self.usable(self._clock.now()) is None

    def launch(self, group: TaskGroup) -> None:
        """Start one attempt in *group* (the scheduler calls this when the cell is due)."""
        self.sending = True
        self.due = math.inf
        group.start_soon(self.attempt, name=f"tokenpool-refresh-{self.name}")

    async def attempt(self) -> None:
        """Send one token request and settle the flight; runs as a task of the pool."""
        flight = self._flight
        if flight is None:
            flight = self._flight = Flight()
        self._demand = False
        reissue, self._reissue = self._reissue, False
        # After a 401, the refused token (a fleet store fences that one, not a
        # renewal that landed meanwhile).
        previous = self._rejected if reissue and self._rejected is not None else self.token or self._rejected
        provider = flight.provider = self.provider
        self.requests += 1
        self._observer.refresh_started(self, self._failures + 1)
        settled = False
        sent_at = self._clock.now()
        # Deferrable: a renewal nobody waits for, with time to spare before its last chance.
        may_defer = (
            not reissue
            and not self._needed_now()
            and self.token is not None
            and sent_at < last_chance(self.token)
        )
        error: TokenRequestError
        try:
            try:
                response = await self._source.fetch(
                    self.name, provider, previous=previous, rejected=reissue, may_defer=may_defer
                )
                token = accept(provider.refresh, response, sent_at=sent_at, now=self._clock.now(), u=self._u)
            except RenewalDeferred as deferral:
                if may_defer:
                    self._deferred(deferral)
                    settled = True
                    return
                error = AdapterError("the token source deferred a token request it was told cannot wait")
            except TokenRequestError as exc:
                error = exc
            except Exception as exc:
                # A bug in a token source must not end the pool; reported by type
                # only (its text may quote the request).
                error = AdapterError(f"unexpected {type(exc).__name__} from the token source")
            else:
                self._succeeded(flight, provider, token, reissue, sent_at)
                settled = True
                return
            error.provider = self.name
            self._failed(flight, provider, error, sent_at)
            settled = True
        finally:
            self.sending = False
            if not settled:
                # Cancelled: the pool is closing.  Waiters learn it now.
                self.close()
            else:
                self._reschedule()

    def _deferred(self, deferral: RenewalDeferred) -> None:
        """Keep the flight open and ask again after ``deferral.retry_in`` (see :meth:`_reschedule`)."""
        self.requests -= 1  # nothing was requested from the provider
        token = self.token
        assert token is not None
        now = self._clock.now()
        retry_in = deferral.retry_in if math.isfinite(deferral.retry_in) and deferral.retry_in > 0 else 0.0
        # As with a backoff step: never past the moment the current token stops being served.
        self._deferred_until = max(now, min(now + retry_in, last_chance(token)))
        self._observer.refresh_deferred(self, self._deferred_until - now, deferral.reason)

    def _succeeded(
        self, flight: Flight, provider: Provider, token: Token, reissue: bool, sent_at: float
    ) -> None:
        self._set_token(token)
        self._deferred_until = -math.inf
        # A 401 that arrived while this request was out (a scheduled renewal, say):
        # this answer may predate the revocation behind it.  The token is served
        # meanwhile, but the flight stays open for a request sent after the 401:
        # over HTTP a new token; through a fleet store a fence of the refused token
        # and, usually, the adoption of this very one (no token request).
        follow_up = self._reissue
        if not follow_up:
            self._demand = False
            self._rejected = None
        self._reissued = token if reissue else None
        self._successes += 1
        self._token_provider = provider
        self._failures = 0
        self._not_before = -math.inf
        self._last_error = None
        if not follow_up:
            flight.token = token
            if self._flight is flight:
                self._flight = None
            flight.done.set()
        self._observer.refresh_succeeded(self, token, self._clock.now() - sent_at)

    def _failed(self, flight: Flight, provider: Provider, error: TokenRequestError, sent_at: float) -> None:
        now = self._clock.now()
        flight.error = error
        if self._flight is flight:
            self._flight = None
        self._deferred_until = -math.inf
        if provider is not self.provider:
            # The settings were replaced (rotated credentials, say) while this
            # request was out: its failure says nothing about the new ones.
            # No backoff, no last error; try the new settings at once.
            self._demand = True
            flight.done.set()
            self._observer.refresh_failed(self, error, now - sent_at, 0.0)
            return
        self._failures += 1
        delay = retry_delay(
            provider.refresh, error, failures=self._failures, v=self._rng.random(), token=self.token, now=now
        )
        self._not_before = now + delay
        self._last_error = error
        flight.done.set()
        self._observer.refresh_failed(self, error, now - sent_at, delay)
