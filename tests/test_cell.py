"""The cell's behaviour under a ManualClock: exact instants, single flight, backoff, waiting.

The token endpoint here is a scripted stand-in for the HTTP seam (pure code,
no I/O); the same behaviours are checked over real HTTP in test_pool_http.py.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from tokenpool import (
    CredentialsRejected,
    ManualClock,
    PoolStateError,
    RefreshPolicy,
    Token,
    TokenEndpointError,
    TokenRequestError,
    TokenResponse,
    TokenWaitTimeout,
)
from tokenpool._cell import Cell
from tokenpool._observe import Observer
from tokenpool.providers import ClientCredentials, Provider

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
        self.outcomes: list[TokenResponse | Exception] = []
        self.fail_until = -math.inf
        self.failure: Exception = TokenEndpointError("503", status_code=503)
        self.gate: anyio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, name: str, provider: Provider) -> TokenResponse:
        self.calls.append(self.clock.now())
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


def make_cell(
    clock: ManualClock, endpoint: ScriptedEndpoint, *, u: float = 0.0, policy: RefreshPolicy | None = None
) -> Cell:
    provider = ClientCredentials(
        token_url="http://127.0.0.1:9/token",
        client_id="id",
        client_secret="secret",
        refresh=policy or RefreshPolicy(),
    )
    return Cell(
        "acme", provider, fetch=endpoint, clock=clock, rng=FixedRandom(u), observer=Observer(None, None)
    )


async def get(cell: Cell, timeout: float | None = None) -> Token:
    """What TokenPool.token() does once it has found the cell."""
    token = cell.usable(cell.clock.now())
    if token is not None:
        cell.hits += 1
        return token
    return await cell.wait_for_token(timeout)


@asynccontextmanager
async def running(cell: Cell) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(cell.run)
        yield
        tg.cancel_scope.cancel()


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
    cell = make_cell(clock, endpoint)
    endpoint.gate = anyio.Event()
    results: list[Token] = []

    async def caller() -> None:
        results.append(await get(cell))

    async with running(cell), anyio.create_task_group() as tg:
        for _ in range(2_000):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        assert cell.waiting == 2_000
        endpoint.gate.set()
    assert len(endpoint.calls) == 1
    assert endpoint.max_in_flight == 1
    assert len(results) == 2_000
    assert len({id(t) for t in results}) == 1
    assert cell.misses == 2_000


async def test_refresh_fires_exactly_at_refresh_at(clock: ManualClock, endpoint: ScriptedEndpoint) -> None:
    cell = make_cell(clock, endpoint, u=0.5)
    async with running(cell):
        first = await get(cell)
        assert first.refresh_at == pytest.approx(1000.0 + 0.8 * LIFETIME - 0.5 * 0.05 * LIFETIME)
        await advance_to(clock, first.refresh_at - 0.001)
        assert len(endpoint.calls) == 1
        await advance_to(clock, first.refresh_at)
        assert endpoint.calls == [1000.0, first.refresh_at]
        second = await get(cell)
        assert second is not first
        assert second.sent_at == first.refresh_at  # lifetime counts from the send


async def test_stale_token_is_served_while_the_refresh_is_in_flight(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    cell = make_cell(clock, endpoint)
    async with running(cell):
        first = await get(cell)
        endpoint.gate = anyio.Event()
        await advance_to(clock, first.refresh_at + 1)
        assert cell.refreshing
        for _ in range(100):
            assert await get(cell) is first
        assert cell.misses == 1  # only the cold start waited
        endpoint.gate.set()
        await anyio.wait_all_tasks_blocked()
        assert (await get(cell)) is not first
    assert len(endpoint.calls) == 2


async def test_callers_wait_once_the_token_is_past_its_margin(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    cell = make_cell(clock, endpoint)
    async with running(cell):
        first = await get(cell)
        endpoint.gate = anyio.Event()
        await advance_to(clock, first.usable_until)  # refresh started at refresh_at, still held
        got: list[Token] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _append(got, get(cell)))
            await anyio.wait_all_tasks_blocked()
            assert got == []
            assert cell.waiting == 1
            endpoint.gate.set()
        assert got[0] is not first
        assert len(endpoint.calls) == 2


async def _append(into: list[Token], awaitable: object) -> None:
    into.append(await awaitable)  # type: ignore[misc]


async def test_backoff_sequence_and_stale_serving_during_failures(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    policy = RefreshPolicy()
    cell = make_cell(clock, endpoint, u=0.5, policy=policy)
    async with running(cell):
        first = await get(cell)
        endpoint.fail_until = math.inf
        await advance_to(clock, first.refresh_at)
        expected = [first.refresh_at]
        for attempt in range(1, 8):
            delay = policy.backoff(attempt, 0.5)
            await advance_to(clock, expected[-1] + delay - 1e-6)
            assert endpoint.calls[1:] == expected, f"retry {attempt} came early"
            assert await get(cell) is first  # still served, nobody fails
            await advance_to(clock, expected[-1] + delay)
            expected.append(expected[-1] + delay)
            assert endpoint.calls[1:] == expected
        assert cell.failures == 8
        assert expected[-1] < first.usable_until


async def test_retry_after_is_honoured(clock: ManualClock, endpoint: ScriptedEndpoint) -> None:
    cell = make_cell(clock, endpoint, u=0.0)
    async with running(cell):
        first = await get(cell)
        endpoint.outcomes = [TokenEndpointError("slow down", status_code=429, retry_after=7.0)]
        await advance_to(clock, first.refresh_at)
        await advance_to(clock, first.refresh_at + 6.999)
        assert len(endpoint.calls) == 2
        await advance_to(clock, first.refresh_at + 7.0)
        assert len(endpoint.calls) == 3
        assert cell.failures == 0


async def test_rejected_credentials_fail_fast_and_retry_slowly(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    cell = make_cell(clock, endpoint)
    rejected = CredentialsRejected("bad", status_code=401, hint="check it")
    endpoint.outcomes = [rejected]
    async with running(cell):
        with pytest.raises(CredentialsRejected) as info:
            await get(cell)
        assert info.value.provider == "acme"
        assert "check it" in str(info.value)
        # During the slow backoff, callers fail at once and no request goes out.
        for _ in range(1_000):
            with pytest.raises(CredentialsRejected):
                await get(cell)
        await advance_to(clock, 1000.0 + 59.9)
        assert len(endpoint.calls) == 1
        # No token and nobody asking: the cell stays idle even after the backoff.
        await advance_to(clock, 1000.0 + 120.0)
        assert len(endpoint.calls) == 1
        assert (await get(cell)).access_token == "tok-2"
        assert len(endpoint.calls) == 2


async def test_a_waiter_that_gives_up_does_not_cancel_the_refresh(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    cell = make_cell(clock, endpoint)
    endpoint.gate = anyio.Event()
    got: list[Token] = []
    async with running(cell):
        with pytest.raises(TokenWaitTimeout):
            await get(cell, timeout=0.01)
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as doomed:
                tg.start_soon(lambda: _append(got, get(cell)))
                await anyio.wait_all_tasks_blocked()
                doomed.cancel()
            waiter = anyio.CancelScope()

            async def cancelled_waiter() -> None:
                with waiter:
                    await get(cell)

            tg.start_soon(cancelled_waiter)
            await anyio.wait_all_tasks_blocked()
            waiter.cancel()
            await anyio.wait_all_tasks_blocked()
            assert cell.refreshing
            endpoint.gate.set()
    assert len(endpoint.calls) == 1
    assert got
    assert got[0].access_token == "tok-1"
    assert cell.waiting == 0


async def test_invalidation_only_of_the_current_token_and_only_once(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    cell = make_cell(clock, endpoint)
    async with running(cell):
        first = await get(cell)
        endpoint.gate = anyio.Event()
        outcomes = [cell.invalidate(first) for _ in range(1_000)]
        assert outcomes.count(True) == 1
        got: list[Token] = []
        async with anyio.create_task_group() as tg:
            for _ in range(1_000):
                tg.start_soon(lambda: _append(got, get(cell)))
            await anyio.wait_all_tasks_blocked()
            endpoint.gate.set()
        assert len(endpoint.calls) == 2
        assert {t.access_token for t in got} == {"tok-2"}
        # A late 401 for the old token must not cause another refresh.
        assert cell.invalidate(first) is False
        await anyio.wait_all_tasks_blocked()
        assert len(endpoint.calls) == 2


async def test_outage_shorter_than_the_headroom_fails_no_call(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    cell = make_cell(clock, endpoint, u=0.5)
    async with running(cell):
        first = await get(cell)
        # (1 − r)·L = 120 s of headroom; the margin takes 10 s of it.
        endpoint.fail_until = first.refresh_at + 100.0
        failures = 0
        t = first.refresh_at - 5
        while t < first.refresh_at + 200:
            await advance_to(clock, t)
            try:
                await get(cell)
            except TokenRequestError:
                failures += 1
            t += 0.5
        assert failures == 0
        assert cell.failures == 0
        assert cell.token is not None
        assert cell.token.sent_at >= endpoint.fail_until


async def test_longer_outage_gives_typed_errors_and_a_bounded_number_of_requests(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    policy = RefreshPolicy()
    cell = make_cell(clock, endpoint, u=0.5, policy=policy)
    async with running(cell):
        first = await get(cell)
        outage = 1_000.0
        endpoint.fail_until = first.refresh_at + outage
        errors: list[BaseException] = []
        t = first.refresh_at
        while t < endpoint.fail_until:
            await advance_to(clock, t)
            try:
                await get(cell)
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
        assert (await get(cell)).sent_at >= endpoint.fail_until


async def test_closing_releases_waiters_with_a_clear_error(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    cell = make_cell(clock, endpoint)
    endpoint.gate = anyio.Event()
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await get(cell)
        except PoolStateError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as outer:
        outer.start_soon(waiter)
        async with anyio.create_task_group() as tg:
            tg.start_soon(cell.run)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert len(errors) == 1
    assert "closed" in str(errors[0])


async def test_backoff_never_jumps_past_the_last_moment_the_token_is_served(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    cell = make_cell(clock, endpoint, u=0.999)  # every backoff step near its ceiling
    async with running(cell):
        first = await get(cell)
        # Uncapped, the retries would land at …, usable_until − 18.6 s, usable_until + 11.4 s.
        endpoint.fail_until = first.usable_until - 5.0
        failures = 0
        t = first.refresh_at
        while t < first.usable_until + 20.0:
            await advance_to(clock, t)
            try:
                await get(cell)
            except TokenRequestError:
                failures += 1
            t += 0.5
        assert failures == 0
        # The last retry went out at the first clock step past usable_until − 2 s.
        assert first.usable_until - 2.0 <= endpoint.calls[-1] < first.usable_until - 1.5


async def test_a_failure_under_replaced_settings_does_not_back_off_the_new_ones(
    clock: ManualClock, endpoint: ScriptedEndpoint
) -> None:
    cell = make_cell(clock, endpoint)
    async with running(cell):
        first = await get(cell)
        endpoint.gate = anyio.Event()
        endpoint.outcomes = [CredentialsRejected("old secret", status_code=401)]
        got: list[Token] = []
        old_errors: list[BaseException] = []

        async def old_refresh() -> None:
            try:
                await cell.refresh()
            except CredentialsRejected as exc:
                old_errors.append(exc)  # it really was sent with the old secret

        async def swap() -> None:
            cell.replace_provider(cell.provider.with_credentials(client_secret="new-secret"))
            got.append(await cell.refresh())  # what TokenPool.replace_provider does

        async with anyio.create_task_group() as tg:
            tg.start_soon(old_refresh)
            await anyio.wait_all_tasks_blocked()
            assert cell.refreshing  # the request with the old secret is out
            tg.start_soon(swap)
            await anyio.wait_all_tasks_blocked()
            endpoint.gate.set()
        assert len(old_errors) == 1
        assert len(endpoint.calls) == 3  # warm-up, old secret (rejected), new secret
        assert got[0] is not first
        assert cell.failures == 0
        assert cell.last_error is None
