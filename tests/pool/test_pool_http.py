"""The pool against a real token server on loopback, over real HTTP (HTTP/1.1, HTTP/2, TLS).

Counts come from the emulator's own stats, so "exactly one token request" is
what the server saw, not what the client believes it sent.  What a cell does
at each instant (renewal, backoff, outages, waiters giving up, closing) is
checked under a ManualClock in ``tests/core/test_cell.py``; this file keeps
what only the wire shows: the server's count, real 401s from its resource
API, HTTP/2, malformed answers and dropped connections, threads, forks.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from _transports import BoundedTransport

from tokenpool import (
    BlockingTokenPool,
    ConfigurationError,
    CredentialsRejected,
    ForkedPoolError,
    InsecureTransportError,
    InvalidTokenResponse,
    PoolStateError,
    RefreshPolicy,
    Token,
    TokenEndpointTimeout,
    TokenEndpointUnreachable,
    TokenPool,
    TokenRequestError,
    UnknownProviderError,
)
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def generic(emulator: EmulatorProcess, *, tls: bool = True, **kwargs: Any) -> ClientCredentials:
    client_id, client_secret = emulator.credentials("generic")
    return ClientCredentials(
        token_url=f"{emulator.url('generic', tls=tls)}/oauth/token",
        client_id=client_id,
        client_secret=client_secret,
        **kwargs,
    )


def token_requests(emulator: EmulatorProcess, provider: str = "generic") -> int:
    return int(emulator.stats()["providers"][provider]["token_requests"])


def resource_stats(emulator: EmulatorProcess, provider: str = "generic") -> dict[str, Any]:
    stats: dict[str, Any] = emulator.stats()["providers"][provider]
    return stats


def pool_for(emulator: EmulatorProcess, **kwargs: Any) -> TokenPool:
    providers = kwargs.pop("providers", None) or {"acme": generic(emulator)}
    kwargs.setdefault("metrics", False)
    return TokenPool(providers, ca_file=emulator.ca_file, **kwargs)


async def test_ten_thousand_cold_callers_cause_exactly_one_token_request(emulator: EmulatorProcess) -> None:
    emulator.fault("generic", latency=0.3)  # keep the request open while everyone piles up
    results: list[Token] = []

    async def caller(pool: TokenPool) -> None:
        results.append(await pool.token("acme"))

    async with pool_for(emulator, warm_up="lazy") as pool, anyio.create_task_group() as tg:
        for _ in range(10_000):
            tg.start_soon(caller, pool)
    assert len(results) == 10_000
    assert len({token.access_token for token in results}) == 1
    assert token_requests(emulator) == 1
    assert pool.statistics().cells["acme"].misses == 10_000


async def test_all_cold_callers_receive_the_one_error(emulator: EmulatorProcess) -> None:
    emulator.fault("generic", status=401, latency=0.2)
    errors: list[BaseException] = []

    async def caller(pool: TokenPool) -> None:
        try:
            await pool.token("acme")
        except CredentialsRejected as exc:
            errors.append(exc)

    async with pool_for(emulator, warm_up="lazy") as pool, anyio.create_task_group() as tg:
        for _ in range(1_000):
            tg.start_soon(caller, pool)
    assert len(errors) == 1_000
    assert len({id(e) for e in errors}) == 1_000  # each caller raises its own copy
    assert all(e.provider == "acme" and e.status_code == 401 for e in errors)  # type: ignore[attr-defined]
    assert token_requests(emulator) == 1


async def test_thousand_concurrent_401s_on_one_token_cause_one_refresh(emulator: EmulatorProcess) -> None:
    async with pool_for(emulator) as pool:
        first = await pool.token("acme")
        assert token_requests(emulator) == 1
        emulator.revoke_tokens("generic")
        emulator.fault("generic", latency=0.3)  # the refresh stays in flight while the 401s arrive
        statuses: list[int] = []
        transport = BoundedTransport(httpx.AsyncHTTPTransport(verify=_ssl(emulator)), 50)
        async with httpx.AsyncClient(auth=pool.auth("acme"), transport=transport, timeout=60) as client:
            url = f"{emulator.url('generic')}/api/resource"

            async def call() -> None:
                response = await client.post(url, content=b"payout-123")
                statuses.append(response.status_code)
                assert response.json()["body_bytes"] == len(b"payout-123")  # replay carried the body

            async with anyio.create_task_group() as tg:
                for _ in range(1_000):
                    tg.start_soon(call)
        assert statuses == [200] * 1_000
        assert token_requests(emulator) == 2
        stats = resource_stats(emulator)
        assert sum(stats["resource_401"].values()) == 1_000
        assert (await pool.token("acme")) is not first


def _ssl(emulator: EmulatorProcess) -> Any:
    import ssl

    return ssl.create_default_context(cafile=emulator.ca_file)


async def test_token_requests_go_over_http2_and_tls(emulator: EmulatorProcess) -> None:
    async with pool_for(emulator) as pool:
        await pool.token("acme")
    assert resource_stats(emulator)["token_requests_by_http_version"] == {"2": 1}


async def test_errors_for_misuse(emulator: EmulatorProcess) -> None:
    pool = pool_for(emulator, warm_up="lazy")
    with pytest.raises(PoolStateError, match="not open"):
        await pool.token("acme")
    async with pool:
        with pytest.raises(UnknownProviderError, match=r"'nope'.*'acme'"):
            await pool.token("nope")
        with pytest.raises(UnknownProviderError):
            pool.auth("nope")
        async with httpx.AsyncClient(auth=pool.auth("acme")) as client:
            with pytest.raises(InsecureTransportError):
                await client.get("http://example.invalid/api")  # refused before any I/O
    with pytest.raises(PoolStateError):
        async with pool:
            pass
    with pytest.raises(ConfigurationError, match="https is required"):
        ClientCredentials(token_url="http://auth.example.com/token", client_id="a", client_secret="b")


@pytest.mark.parametrize(
    ("malformed", "error"),
    [
        ("html", InvalidTokenResponse),
        ("not_json", InvalidTokenResponse),
        ("missing_access_token", InvalidTokenResponse),
        ("bad_expires_in", InvalidTokenResponse),
        ("zero_expires_in", InvalidTokenResponse),
        ("wrong_token_type", InvalidTokenResponse),
    ],
)
async def test_malformed_answers_are_typed_errors(
    emulator: EmulatorProcess, malformed: str, error: type[TokenRequestError]
) -> None:
    emulator.fault("generic", malformed=malformed, count=1)
    async with pool_for(emulator, warm_up="lazy") as pool:
        with pytest.raises(error) as info:
            await pool.token("acme")
        assert info.value.provider == "acme"


async def test_dropped_connection_is_unreachable_not_a_crash(emulator: EmulatorProcess) -> None:
    emulator.fault("generic", drop=True, count=1)
    async with pool_for(emulator, warm_up="lazy") as pool:
        with pytest.raises(TokenEndpointUnreachable):
            await pool.token("acme")


async def test_warm_up_fetches_every_provider_concurrently(emulator: EmulatorProcess) -> None:
    emulator.fault("generic", latency=0.3)
    providers = {f"tenant-{i}": generic(emulator) for i in range(20)}
    async with pool_for(emulator, providers=providers) as pool:
        stats = pool.statistics()
        assert all(cell.has_token for cell in stats.cells.values())
        assert emulator.stats()["providers"]["generic"]["max_concurrent_token_requests"] > 1
    assert token_requests(emulator) == 20


async def test_rotated_credentials_are_swapped_in_without_a_failed_call(emulator: EmulatorProcess) -> None:
    async with pool_for(emulator) as pool:
        before = await pool.token("acme")
        new_secret = emulator.rotate_secret("generic")
        provider = generic(emulator)
        fresh = await pool.replace_provider("acme", provider.with_credentials(client_secret=new_secret))
        assert fresh is not None
        assert fresh is not before
        assert (await pool.token("acme")) is fresh


def test_blocking_pool_from_many_threads(emulator: EmulatorProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    emulator.fault("generic", latency=0.2)
    with BlockingTokenPool(
        {"acme": generic(emulator)}, warm_up="lazy", ca_file=emulator.ca_file, metrics=False
    ) as pool:
        with ThreadPoolExecutor(max_workers=20) as executor:
            tokens = list(executor.map(lambda _: pool.token("acme"), range(200)))
        assert len({t.access_token for t in tokens}) == 1
        emulator.revoke_tokens("generic")
        with httpx.Client(auth=pool.auth("acme"), verify=_ssl(emulator)) as client:
            response = client.post(f"{emulator.url('generic')}/api/resource", content=b"abc")
        assert response.status_code == 200
        assert response.json()["body_bytes"] == 3
    assert token_requests(emulator) == 2
    with pytest.raises(PoolStateError):
        pool.token("acme")


def _child_uses_pool(pool: BlockingTokenPool | TokenPool, queue: Any) -> None:
    try:
        if isinstance(pool, BlockingTokenPool):
            pool.token("acme")
        else:
            pool.usable_token("acme")  # a public method that needs no event loop in the child
    except ForkedPoolError as exc:
        queue.put(("forked", str(exc)))
    except BaseException as exc:
        queue.put(("other", repr(exc)))
    else:
        queue.put(("no error", ""))


def run_in_forked_child(pool: BlockingTokenPool | TokenPool) -> tuple[str, str, int | None]:
    """Fork, use *pool* in the child, report what happened; never hang the suite."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_uses_pool, args=(pool, queue), daemon=True)
    child.start()
    try:
        outcome, message = queue.get(timeout=30)
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)
        queue.close()
    return outcome, message, child.exitcode


def test_a_pool_used_after_fork_raises_a_clear_error(emulator: EmulatorProcess) -> None:
    with BlockingTokenPool({"acme": generic(emulator)}, ca_file=emulator.ca_file, metrics=False) as pool:
        pool.token("acme")
        outcome, message, exitcode = run_in_forked_child(pool)
        # The parent's pool is untouched by the child.
        assert pool.token("acme").access_token
    assert outcome == "forked", message
    assert exitcode == 0  # and the child exited: nothing waited for the parent's loop thread
    assert "fork" in message
    assert "create a new pool in the child" in message


async def test_async_pool_in_a_forked_child_raises(emulator: EmulatorProcess) -> None:
    async with pool_for(emulator) as pool:
        await pool.token("acme")
        outcome, message, exitcode = await anyio.to_thread.run_sync(run_in_forked_child, pool)
        assert (await pool.token("acme")).access_token
    assert outcome == "forked", message
    assert exitcode == 0


def test_runs_on_uvloop(emulator: EmulatorProcess) -> None:
    pytest.importorskip("uvloop")

    async def main() -> int:
        async with pool_for(emulator, warm_up="lazy") as pool:
            tokens = await _gather(pool.token, 500)
        return len({t.access_token for t in tokens})

    assert anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True}) == 1
    assert token_requests(emulator) == 1


async def _gather(fn: Callable[[str], Awaitable[Token]], n: int) -> list[Token]:
    out: list[Token] = []

    async def one() -> None:
        out.append(await fn("acme"))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return out


async def test_a_second_401_is_returned_not_looped(emulator: EmulatorProcess) -> None:
    async with pool_for(emulator) as pool:
        await pool.token("acme")
        # A generic token is unknown to Navro's API: every attempt gets a 401.
        async with httpx.AsyncClient(auth=pool.auth("acme"), verify=_ssl(emulator)) as client:
            response = await client.get(f"{emulator.url('navro')}/api/resource")
    assert response.status_code == 401
    assert token_requests(emulator) == 2  # one refresh, one replay, then the 401 is the answer
    assert sum(resource_stats(emulator, "navro")["resource_401"].values()) == 2


async def test_every_token_request_has_a_deadline(emulator: EmulatorProcess) -> None:
    emulator.fault("generic", latency=5.0, count=1)
    provider = generic(emulator, refresh=RefreshPolicy(request_timeout=0.3))
    async with pool_for(emulator, providers={"acme": provider}, warm_up="lazy") as pool:
        with pytest.raises(TokenEndpointTimeout, match=r"within 0\.3 s") as info:
            await pool.token("acme")
        assert info.value.reason == "timeout"
