"""The core under a ManualClock: exact instants, single flight, backoff, waiting, 401s.

The token source here is a scripted stand-in for the HTTP one (pure code, no
I/O), plugged into a real ``TokenPool`` through its public ``source=`` seam.
Over real HTTP, ``tests/pool/`` checks what the wire adds, not these scenarios again.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from tokenpool import (
    CredentialsRejected,
    InvalidTokenResponse,
    PoolStateError,
    RefreshPolicy,
    RenewalDeferred,
    Token,
    TokenEndpointError,
    TokenPool,
    TokenRequestError,
    TokenResponse,
    TokenWaitTimeout,
)
from tokenpool.providers import ClientCredentials, Provider
from tokenpool.testing import ManualClock

pytestmark = pytest.mark.anyio

LIFETIME = 600.0


class FixedRandom(random.Random):
    """Every draw returns the same value, so every instant is predictable."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class ScriptedEndpoint:
    """Stands in for "send the token request and parse the answer"."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[float] = []
        self.rejected: list[bool] = []
        self.may_defer: list[bool] = []
        self.previous: list[Token | None] = []
        self.outcomes: list[TokenResponse | Exception] = []
        self.fail_until = -math.inf
        self.failure: Exception = TokenEndpointError("503", status_code=503)
        self.gate: anyio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    async def open(self) -> None:
        pass

    async def prepare(self, provider: Provider) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def fetch(
        self,
        name: str,
        provider: Provider,
        *,
        previous: Token | None,
        rejected: bool,
        may_defer: bool = False,
    ) -> TokenResponse:
        self.calls.append(self.clock.now())
        self.rejected.append(rejected)
        self.may_defer.append(may_defer)
        self.previous.append(previous)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.outcomes:
                outcome = self.outcomes.pop(0)
            elif self.clock.now() < self.fail_until:
                outcome = self.failure
            else:
                outcome = TokenResponse(access_token=f"tok-{len(self.calls)}", expires_in=LIFETIME)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            self.in_flight -= 1


PROVIDER = ClientCredentials(token_url="http://127.0.0.1:9/token", client_id="id", client_secret="secret")


def make_pool(
    clock: ManualClock, endpoint: ScriptedEndpoint, *, u: float = 0.0, policy: RefreshPolicy | None = None
) -> TokenPool:
    provider = dataclasses.replace(PROVIDER, refresh=policy or RefreshPolicy())
    return TokenPool(
        {"acme": provider}, source=endpoint, clock=clock, rng=FixedRandom(u), metrics=False, warm_up="lazy"
    )


async def get(pool: TokenPool, timeout: float | None = None) -> Token:
    return await pool.token("acme", timeout=timeout)


def stats(pool: TokenPool) -> Any:
    return pool.statistics().cells["acme"]


@asynccontextmanager
async def running(pool: TokenPool) -> AsyncIterator[TokenPool]:
    async with pool:
        yield pool


async def advance_to(clock: ManualClock, when: float) -> None:
    clock.set(when)
    await anyio.wait_all_tasks_blocked()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def endpoint(clock: ManualClock) -> ScriptedEndpoint:
    return ScriptedEndpoint(clock)


async def test_concurrent_cold_callers_share_one_request(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint)
    endpoint.gate = anyio.Event()
    results: list[Token] = []

    async def caller() -> None:
        results.append(await get(pool))

    async with running(pool), anyio.create_task_group() as tg:
        for _ in range(2_000):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        assert stats(pool).waiting == 2_000
        endpoint.gate.set()
    assert len(endpoint.calls) == 1
    assert endpoint.max_in_flight == 1
    assert len(results) == 2_000
    assert len({id(t) for t in results}) == 1
    assert stats(pool).misses == 2_000


async def test_refresh_fires_exactly_at_refresh_at(clock: ManualClock, endpoint: ScriptedEndpoint) -> None:
    pool = make_pool(clock, endpoint, u=0.5)
    async with running(pool):
        first = await get(pool)
        assert first.refresh_at == pytest.approx(1000.0 + 0.8 * LIFETIME - 0.5 * 0.05 * LIFETIME)
        await advance_to(clock, first.refresh_at - 0.001)
        assert len(endpoint.calls) == 1
        await advance_to(clock, first.refresh_at)
        assert endpoint.calls == [1000.0, first.refresh_at]
        second = await get(pool)
        assert second is not first
        assert second.sent_at == first.refresh_at  # lifetime counts from the send


async def test_stale_token_is_served_while_the_refresh_is_in_flight(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint)
    async with running(pool):
        first = await get(pool)
        endpoint.gate = anyio.Event()
        await advance_to(clock, first.refresh_at + 1)
        assert stats(pool).refreshing
        for _ in range(100):
            assert await get(pool) is first
        assert stats(pool).misses == 1  # only the cold start waited
        endpoint.gate.set()
        await anyio.wait_all_tasks_blocked()
        assert (await get(pool)) is not first
    assert len(endpoint.calls) == 2


async def test_callers_wait_once_the_token_is_past_its_margin(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint)
    async with running(pool):
        first = await get(pool)
        endpoint.gate = anyio.Event()
        await advance_to(clock, first.usable_until)  # refresh started at refresh_at, still held
        got: list[Token] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _append(got, get(pool)))
            await anyio.wait_all_tasks_blocked()
            assert got == []
            assert stats(pool).waiting == 1
            endpoint.gate.set()
        assert got[0] is not first
        assert len(endpoint.calls) == 2


async def _append(into: list[Token], awaitable: object) -> None:
    into.append(await awaitable)  # type: ignore[misc]


async def test_backoff_sequence_and_stale_serving_during_failures(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    policy = RefreshPolicy()
    pool = make_pool(clock, endpoint, u=0.5, policy=policy)
    async with running(pool):
        first = await get(pool)
        endpoint.fail_until = math.inf
        await advance_to(clock, first.refresh_at)
        expected = [first.refresh_at]
        for attempt in range(1, 8):
            delay = policy.backoff(attempt, 0.5)
            await advance_to(clock, expected[-1] + delay - 1e-6)
            assert endpoint.calls[1:] == expected, f"retry {attempt} came early"
            assert await get(pool) is first  # still served, nobody fails
            await advance_to(clock, expected[-1] + delay)
            expected.append(expected[-1] + delay)
            assert endpoint.calls[1:] == expected
        assert stats(pool).consecutive_failures == 8
        assert expected[-1] < first.usable_until


async def test_retry_after_is_honoured(clock: ManualClock, endpoint: ScriptedEndpoint) -> None:
    pool = make_pool(clock, endpoint, u=0.0)
    async with running(pool):
        first = await get(pool)
        endpoint.outcomes = [TokenEndpointError("slow down", status_code=429, retry_after=7.0)]
        await advance_to(clock, first.refresh_at)
        await advance_to(clock, first.refresh_at + 6.999)
        assert len(endpoint.calls) == 2
        await advance_to(clock, first.refresh_at + 7.0)
        assert len(endpoint.calls) == 3
        assert stats(pool).consecutive_failures == 0


async def test_rejected_credentials_fail_fast_and_retry_slowly(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint)
    rejected = CredentialsRejected("bad", status_code=401, hint="check it")
    endpoint.outcomes = [rejected]
    async with running(pool):
        with pytest.raises(CredentialsRejected) as info:
            await get(pool)
        assert info.value.provider == "acme"
        assert "check it" in str(info.value)
        # During the slow backoff, callers fail at once and no request goes out.
        for _ in range(1_000):
            with pytest.raises(CredentialsRejected):
                await get(pool)
        await advance_to(clock, 1000.0 + 59.9)
        assert len(endpoint.calls) == 1
        # No token and nobody asking: the cell stays idle even after the backoff.
        await advance_to(clock, 1000.0 + 120.0)
        assert len(endpoint.calls) == 1
        assert (await get(pool)).access_token == "tok-2"
        assert len(endpoint.calls) == 2


async def test_a_waiter_that_gives_up_does_not_cancel_the_refresh(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint)
    endpoint.gate = anyio.Event()
    got: list[Token] = []
    async with running(pool):
        with pytest.raises(TokenWaitTimeout):
            await get(pool, timeout=0.01)
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as doomed:
                tg.start_soon(lambda: _append(got, get(pool)))
                await anyio.wait_all_tasks_blocked()
                doomed.cancel()
            waiter = anyio.CancelScope()

            async def cancelled_waiter() -> None:
                with waiter:
                    await get(pool)

            tg.start_soon(cancelled_waiter)
            await anyio.wait_all_tasks_blocked()
            waiter.cancel()
            await anyio.wait_all_tasks_blocked()
            assert stats(pool).refreshing
            endpoint.gate.set()
    assert len(endpoint.calls) == 1
    assert got
    assert got[0].access_token == "tok-1"
    assert stats(pool).waiting == 0


async def test_invalidation_only_of_the_current_token_and_only_once(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint)
    async with running(pool):
        first = await get(pool)
        endpoint.gate = anyio.Event()
        outcomes = [await pool.invalidate("acme", first) for _ in range(1_000)]
        assert outcomes.count(True) == 1
        got: list[Token] = []
        async with anyio.create_task_group() as tg:
            for _ in range(1_000):
                tg.start_soon(lambda: _append(got, get(pool)))
            await anyio.wait_all_tasks_blocked()
            endpoint.gate.set()
        assert len(endpoint.calls) == 2
        assert {t.access_token for t in got} == {"tok-2"}
        # A late 401 for the old token must not cause another refresh.
        assert await pool.invalidate("acme", first) is False
        await anyio.wait_all_tasks_blocked()
        assert len(endpoint.calls) == 2


async def test_outage_shorter_than_the_headroom_fails_no_call(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint, u=0.5)
    async with running(pool):
        first = await get(pool)
        # (1 − r)·L = 120 s of headroom; the margin takes 10 s of it.
        endpoint.fail_until = first.refresh_at + 100.0
        failures = 0
        t = first.refresh_at - 5
        while t < first.refresh_at + 200:
            await advance_to(clock, t)
            try:
                await get(pool)
            except TokenRequestError:
                failures += 1
            t += 0.5
        assert failures == 0
        assert stats(pool).consecutive_failures == 0
        current = pool.usable_token("acme")
        assert current is not None
        assert current.sent_at >= endpoint.fail_until


async def test_longer_outage_gives_typed_errors_and_a_bounded_number_of_requests(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    policy = RefreshPolicy()
    pool = make_pool(clock, endpoint, u=0.5, policy=policy)
    async with running(pool):
        first = await get(pool)
        outage = 1_000.0
        endpoint.fail_until = first.refresh_at + outage
        errors: list[BaseException] = []
        t = first.refresh_at
        while t < endpoint.fail_until:
            await advance_to(clock, t)
            try:
                await get(pool)
            except TokenRequestError as exc:
                errors.append(exc)
            t += 1.0
        assert errors
        assert all(isinstance(e, TokenEndpointError) and e.provider == "acme" for e in errors)
        # The retry schedule is the bound: with v = 0.5 the waits are 0.25, 0.5, … 15, 15, …
        bound = 0
        elapsed = 0.0
        while elapsed < outage:
            bound += 1
            elapsed += policy.backoff(bound, 0.5)
        assert len(endpoint.calls) - 1 <= bound + 1
        # Recovery within one backoff cap after the outage ends.
        await advance_to(clock, endpoint.fail_until + policy.backoff_cap)
        assert (await get(pool)).sent_at >= endpoint.fail_until


async def test_closing_releases_waiters_with_a_clear_error(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint)
    endpoint.gate = anyio.Event()
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await get(pool)
        except PoolStateError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as outer:
        await pool.__aenter__()
        outer.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert len(endpoint.calls) == 1  # the request is out, held at the gate
        await pool.aclose()
    assert len(errors) == 1
    assert "closed" in str(errors[0])


async def test_backoff_never_jumps_past_the_last_moment_the_token_is_served(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint, u=0.999)  # every backoff step near its ceiling
    async with running(pool):
        first = await get(pool)
        # Uncapped, the retries would land at …, usable_until − 18.6 s, usable_until + 11.4 s.
        endpoint.fail_until = first.usable_until - 5.0
        failures = 0
        t = first.refresh_at
        while t < first.usable_until + 20.0:
            await advance_to(clock, t)
            try:
                await get(pool)
            except TokenRequestError:
                failures += 1
            t += 0.5
        assert failures == 0
        # The last retry went out at the first clock step past usable_until − 2 s.
        assert first.usable_until - 2.0 <= endpoint.calls[-1] < first.usable_until - 1.5


async def test_a_failure_under_replaced_settings_does_not_back_off_the_new_ones(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint)
    async with running(pool):
        first = await get(pool)
        endpoint.gate = anyio.Event()
        endpoint.outcomes = [CredentialsRejected("old secret", status_code=401)]
        got: list[Token] = []
        old_errors: list[BaseException] = []

        async def old_refresh() -> None:
            try:
                await pool.refresh("acme")
            except CredentialsRejected as exc:
                old_errors.append(exc)  # it really was sent with the old secret

        async def swap() -> None:
            fresh = await pool.replace_provider("acme", PROVIDER.with_credentials(client_secret="new-secret"))
            assert fresh is not None
            got.append(fresh)

        async with anyio.create_task_group() as tg:
            tg.start_soon(old_refresh)
            await anyio.wait_all_tasks_blocked()
            assert stats(pool).refreshing  # the request with the old secret is out
            tg.start_soon(swap)
            await anyio.wait_all_tasks_blocked()
            endpoint.gate.set()
        assert len(old_errors) == 1
        assert len(endpoint.calls) == 3  # warm-up, old secret (rejected), new secret
        assert got[0] is not first
        assert stats(pool).consecutive_failures == 0
        assert stats(pool).last_error is None


# -- core v2: adopted tokens, the 401 cooldown, tiny lifetimes, one scheduler ------------------


async def test_an_adopted_token_is_scheduled_from_its_own_send_time(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    """A source may hand out a token another process fetched earlier (the fleet store)."""
    pool = make_pool(clock, endpoint, u=0.0)
    fetched_elsewhere_at = clock.now() - 100.0
    endpoint.outcomes = [
        TokenResponse(access_token="shared", expires_in=LIFETIME, sent_at=fetched_elsewhere_at)
    ]
    async with running(pool):
        token = await get(pool)
        assert token.sent_at == fetched_elsewhere_at
        assert token.expires_at == fetched_elsewhere_at + LIFETIME
        assert token.refresh_at == fetched_elsewhere_at + 0.8 * LIFETIME
        await advance_to(clock, token.refresh_at - 0.001)
        assert len(endpoint.calls) == 1
        await advance_to(clock, token.refresh_at)
        assert len(endpoint.calls) == 2  # renewed on the adopted token's schedule, not 480 s after "now"


async def test_an_adopted_token_with_no_usable_time_left_is_refused(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint)
    endpoint.outcomes = [
        TokenResponse(access_token="stale", expires_in=LIFETIME, sent_at=clock.now() - LIFETIME)
    ]
    async with running(pool):
        with pytest.raises(InvalidTokenResponse, match="no usable lifetime left"):
            await get(pool)


async def test_a_401_on_a_brand_new_replacement_causes_no_second_refresh(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    """An API that rejects every token must not turn each call into a token request."""
    pool = make_pool(clock, endpoint)
    async with running(pool):
        first = await get(pool)
        await advance_to(clock, clock.now() + 30.0)
        assert await pool.invalidate("acme", first)  # a real revocation: refreshed
        second = await get(pool)
        assert endpoint.rejected == [False, True]  # the source learns the refresh answers a 401
        # A brand-new replacement refused once more may still be a real (second) revocation.
        assert await pool.invalidate("acme", second)
        third = await get(pool)
        # Refused again within the cooldown (min(5 s, 0.1·L)): the API rejects every token.
        for _ in range(100):
            assert await pool.invalidate("acme", third) is False
            assert (await get(pool)) is third
        assert len(endpoint.calls) == 3
        # Past the cooldown, a 401 is believed again.
        await advance_to(clock, third.sent_at + 5.0)
        assert await pool.invalidate("acme", third)
        assert (await get(pool)) is not third
        assert len(endpoint.calls) == 4


async def test_a_401_right_after_a_proactive_renewal_is_believed(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    """The cooldown applies only to tokens that were themselves fetched because of a 401."""
    pool = make_pool(clock, endpoint, u=0.0)
    async with running(pool):
        first = await get(pool)
        await advance_to(clock, first.refresh_at)
        renewed = await get(pool)
        assert renewed is not first
        assert await pool.invalidate("acme", renewed)  # 0 s old, but renewed on schedule
        assert (await get(pool)) is not renewed


async def test_a_lifetime_below_the_floor_is_refused_and_backed_off(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint, u=0.5)  # every backoff step half its ceiling
    endpoint.outcomes = [TokenResponse(access_token=f"tiny-{i}", expires_in=0.001) for i in range(50)]
    async with running(pool):
        errors: list[InvalidTokenResponse] = []
        for _ in range(200):
            try:
                token = await get(pool)
            except InvalidTokenResponse as exc:
                errors.append(exc)
            else:
                assert clock.now() < token.usable_until  # never handed out past its usable point
            await advance_to(clock, clock.now() + 0.01)
        assert len(errors) == 200
        assert all("min_lifetime" in str(e) and e.reason == "invalid_response" for e in errors)
        # One request, then fail-fast during the backoff: 2 s of calls, a handful of requests.
        assert len(endpoint.calls) <= 6


async def test_many_idle_cells_share_one_scheduler_task(anyio_backend: str) -> None:
    """No task per cell: 1,000 lazy cells cost no more tasks than one."""
    if anyio_backend != "asyncio":
        pytest.skip("counts asyncio tasks")
    import asyncio

    clock = ManualClock()

    async def tasks_with(cells: int) -> int:
        providers = {f"t{i}": PROVIDER for i in range(cells)}
        async with TokenPool(
            providers, source=ScriptedEndpoint(clock), clock=clock, warm_up="lazy", metrics=False
        ):
            await anyio.wait_all_tasks_blocked()
            return len(asyncio.all_tasks())

    assert await tasks_with(1_000) == await tasks_with(1)


async def test_a_401_during_a_renewal_in_flight_is_answered_by_a_request_sent_after_it(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    """The renewal already out may bring a token issued before the revocation: one more request follows.

    Its token is served meanwhile; whoever waits after the 401 gets the next
    one, fetched with the refused token as ``previous`` (so that a fleet store
    fences that one, and adopts the renewal's instead of fetching).
    """
    pool = make_pool(clock, endpoint, u=0.0)
    async with running(pool), anyio.create_task_group() as tg:
        first = await get(pool)
        endpoint.gate = anyio.Event()
        await advance_to(clock, first.refresh_at)  # the scheduled renewal goes out, held at the gate
        assert len(endpoint.calls) == 2
        assert await pool.invalidate("acme", first)  # a 401 for the token being renewed
        waited: list[Token] = []
        tg.start_soon(lambda: _append(waited, pool.token("acme")))
        await anyio.wait_all_tasks_blocked()
        assert waited == []
        endpoint.gate.set()
        await anyio.wait_all_tasks_blocked()
    assert len(endpoint.calls) == 3
    assert endpoint.rejected == [False, False, True]
    assert endpoint.previous[2] is first
    assert [t.access_token for t in waited] == ["tok-3"]


# -- deferred renewals (a source such as the fleet store may say "not now") ---------------------


async def test_a_deferred_renewal_keeps_serving_and_asks_again_later(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint, u=0.0)
    async with running(pool):
        first = await get(pool)
        endpoint.outcomes = [
            RenewalDeferred(5.0, "store_unavailable"),
            RenewalDeferred(5.0, "store_unavailable"),
        ]
        await advance_to(clock, first.refresh_at)
        assert endpoint.may_defer == [False, True]  # the cold start could not wait; the renewal could
        assert (await get(pool)) is first  # served on, no error for anyone
        await advance_to(clock, first.refresh_at + 4.999)
        assert len(endpoint.calls) == 2
        await advance_to(clock, first.refresh_at + 5.0)
        assert endpoint.calls[2] == first.refresh_at + 5.0
        await advance_to(clock, first.refresh_at + 10.0)
        renewed = await get(pool)
        assert renewed is not first
        assert renewed.sent_at == first.refresh_at + 10.0
        # Deferrals are not token requests.
        assert stats(pool).token_requests == 2
        assert stats(pool).consecutive_failures == 0


async def test_a_deferral_never_waits_past_the_last_chance(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint, u=0.0)
    async with running(pool):
        first = await get(pool)
        endpoint.outcomes = [RenewalDeferred(3600.0, "store_unavailable")]
        await advance_to(clock, first.refresh_at)
        last = first.usable_until - min(2.0, 0.01 * LIFETIME)
        await advance_to(clock, last - 0.001)
        assert len(endpoint.calls) == 2
        await advance_to(clock, last)
        # At the last chance the cell no longer lets the source defer: it must answer.
        assert endpoint.calls[2] == last
        assert endpoint.may_defer[2] is False
        assert (await get(pool)) is not first


@pytest.mark.parametrize("interrupt", ["401", "refresh"])
async def test_a_deferred_renewal_cannot_wait_once_someone_needs_a_token(
    clock: ManualClock, endpoint: ScriptedEndpoint, interrupt: str
) -> None:
    pool = make_pool(clock, endpoint, u=0.0)
    async with running(pool), anyio.create_task_group() as tg:
        first = await get(pool)
        endpoint.outcomes = [RenewalDeferred(60.0, "store_unavailable")]
        await advance_to(clock, first.refresh_at)
        assert len(endpoint.calls) == 2
        got: list[Token] = []
        if interrupt == "401":
            assert await pool.invalidate("acme", first)
        else:
            tg.start_soon(lambda: _append(got, pool.refresh("acme")))
        await anyio.wait_all_tasks_blocked()
        # At once, not 60 s later, and told to answer now.
        assert len(endpoint.calls) == 3
        assert endpoint.may_defer[2] is False
        assert endpoint.rejected[2] is (interrupt == "401")
        token = await get(pool)
        assert token is not first
        # The refresh() caller got the token fetched at once; the 401 case has no such caller.
        assert got == ([] if interrupt == "401" else [token])


async def test_a_source_that_defers_when_told_not_to_is_a_failure(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    pool = make_pool(clock, endpoint, u=0.0)
    endpoint.outcomes = [RenewalDeferred(5.0, "store_unavailable")]
    async with running(pool):
        with pytest.raises(TokenRequestError, match="deferred a token request it was told cannot wait"):
            await get(pool)
        assert stats(pool).consecutive_failures == 1
