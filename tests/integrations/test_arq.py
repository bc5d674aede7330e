"""tokenpool.contrib.arq with two real arq worker processes, a real Redis and the emulator.

Same bar as the Celery test: 3 s tokens, a 10 s run, every job's resource
call succeeds on its first try, and each worker process sends one token
request per refresh window.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _workers import (
    LIFETIME,
    Worker,
    app_env,
    closed_by_pid,
    ideal_token_requests,
    python_module,
    redis_server,
    require_module,
    resource_401s,
)

from tokenpool import ConfigurationError, PoolStateError, UnknownProviderError
from tokenpool.testing import EmulatorProcess

arq_connections = require_module("arq.connections", "pip install 'tokenpool[arq]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUEUE = "tokenpool-test:arq"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


async def run_jobs(redis_url: str, *, ticks: int, per_tick: int, interval: float) -> list[dict[str, Any]]:
    """Enqueue *per_tick* jobs every *interval* seconds, *ticks* times; return every job's result."""
    redis = await arq_connections.create_pool(
        arq_connections.RedisSettings.from_dsn(redis_url), default_queue_name=QUEUE
    )
    try:
        jobs = []
        start = time.monotonic()
        for tick in range(1, ticks + 1):
            for _ in range(per_tick):
                job = await redis.enqueue_job("call_resource")
                assert job is not None
                jobs.append(job)
            # Paced on a schedule, so the time spent enqueueing does not stretch the run.
            await asyncio.sleep(max(0.0, start + tick * interval - time.monotonic()))
        return [dict(await job.result(timeout=60, poll_delay=0.05)) for job in jobs]
    finally:
        await redis.aclose(close_connection_pool=True)


def test_two_arq_workers_one_pool_each(emulator: EmulatorProcess, redis_url: str) -> None:
    emulator.set_lifetime("generic", expires_in=LIFETIME)
    env = app_env(emulator, TOKENPOOL_TEST_REDIS_URL=redis_url, TOKENPOOL_TEST_QUEUE=QUEUE)
    argv = python_module("arq", "arq_app.WorkerSettings")
    with Worker(argv, env=env) as first, Worker(argv, env=env) as second:
        workers = {first.pid: first, second.pid: second}
        for worker in workers.values():
            worker.output.wait_for_events("pool.opened", count=1, timeout=60)
        results = asyncio.run(run_jobs(redis_url, ticks=50, per_tick=10, interval=0.2))
        for worker in workers.values():
            assert worker.stop(signal.SIGTERM) == 0, worker.output.tail()

    stats = emulator.stats(events=False)["providers"]["generic"]
    per_process: dict[int, int] = {}
    for pid, worker in workers.items():
        closed = closed_by_pid(worker.output)
        assert list(closed) == [pid], worker.output.tail()
        assert worker.output.problems() == []
        per_process[pid] = int(closed[pid]["token_requests"])
    lifetime = max(worker.lifetime for worker in workers.values())
    ideal = ideal_token_requests(lifetime)
    task_pids = {int(result["pid"]) for result in results}
    print(
        f"\narq: jobs={len(results)} 401s={resource_401s(emulator.stats(events=False))} "
        f"token requests per process={per_process} (ideal ≤ {ideal} over {lifetime:.1f} s)"
    )

    assert len(results) == 500
    assert {result["status"] for result in results} == {200}
    assert task_pids == set(workers), "both workers should have run jobs"
    assert resource_401s(emulator.stats(events=False)) == 0
    assert stats["resource_ok"] == 500
    assert sum(per_process.values()) == stats["token_requests"]
    for pid, count in per_process.items():
        assert 2 <= count <= ideal + 2, f"process {pid} sent {count} token requests (ideal {ideal})"


def test_hooks_fill_ctx_and_clean_up_when_called_from_different_tasks(emulator: EmulatorProcess) -> None:
    from tokenpool import Secret, TokenPool
    from tokenpool.contrib.arq import PoolHooks, client, get_pool
    from tokenpool.providers import ClientCredentials

    client_id, client_secret = emulator.credentials("generic")

    def providers() -> dict[str, ClientCredentials]:
        return {
            "generic": ClientCredentials(
                token_url=httpx.URL(emulator.token_url("generic")),
                client_id=client_id,
                client_secret=Secret(client_secret),
            )
        }

    hooks = PoolHooks(
        providers,
        client_factory=lambda name, auth: httpx.AsyncClient(
            auth=auth, base_url=emulator.url("generic"), verify=emulator.ssl_context()
        ),
        ca_file=emulator.ca_file,
        metrics=False,
    )

    async def scenario() -> None:
        ctx: dict[str, Any] = {}
        # arq awaits on_startup and on_shutdown from different tasks.
        await asyncio.create_task(hooks.on_startup(ctx))
        assert isinstance(get_pool(ctx), TokenPool)
        response = await client(ctx, "generic").get("/api/resource")
        assert response.status_code == 200
        with pytest.raises(PoolStateError):
            await hooks.on_startup(ctx)
        with pytest.raises(UnknownProviderError):
            client(ctx, "nope")
        await asyncio.create_task(hooks.on_shutdown(ctx))
        assert ctx == {}
        with pytest.raises(PoolStateError):
            get_pool(ctx)
        await hooks.on_shutdown(ctx)  # again: nothing to do

    asyncio.run(scenario())
    assert emulator.stats(events=False)["providers"]["generic"]["token_requests"] == 1


def test_a_failing_providers_factory_fails_on_startup_and_leaves_ctx_alone() -> None:
    from tokenpool.contrib.arq import PoolHooks

    def providers() -> dict[str, Any]:
        raise ConfigurationError("ACME_CLIENT_SECRET is not set")

    async def scenario() -> None:
        ctx: dict[str, Any] = {}
        with pytest.raises(ConfigurationError, match="ACME_CLIENT_SECRET"):
            await PoolHooks(providers).on_startup(ctx)
        assert ctx == {}

    asyncio.run(scenario())
