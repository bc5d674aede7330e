"""tokenpool.contrib.celery with a real Celery worker, a real Redis broker and the emulator.

Tokens live 3 s (``expires_in=3``), so a 10 s run spans several refresh
windows: every task's resource call must succeed on its first try (the
emulator counts 401s by its own clock), and each worker process must send one
token request per refresh window, no more.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _workers import (
    LIFETIME,
    Worker,
    app_env,
    celery_worker_argv,
    closed_by_pid,
    ideal_token_requests,
    redis_server,
    require_module,
    resource_401s,
    run_celery_tasks,
)

from tokenpool import ConfigurationError
from tokenpool.testing import EmulatorProcess

celery = require_module("celery", "pip install 'tokenpool[celery]'")
celery_result = require_module("celery.result", "pip install 'tokenpool[celery]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def database(redis_url: str, number: int) -> str:
    """The URL of Redis database *number*: each test gets its own broker state."""
    return f"{redis_url.rsplit('/', 1)[0]}/{number}"


def start_worker(
    emulator: EmulatorProcess, redis_url: str, *, queue: str, pool: str, concurrency: int, **env: str
) -> Worker:
    argv = celery_worker_argv(queue=queue, pool=pool, concurrency=concurrency)
    return Worker(argv, env=app_env(emulator, TOKENPOOL_TEST_REDIS_URL=redis_url, **env))


def run_tasks(
    redis_url: str, queue: str, *, ticks: int, per_tick: int, interval: float
) -> list[dict[str, Any]]:
    """Send *per_tick* tasks every *interval* seconds, *ticks* times; return every task's result."""
    return run_celery_tasks(redis_url, queue, per_tick=per_tick, ticks=ticks, interval=interval)


def test_prefork_worker_one_pool_per_child(emulator: EmulatorProcess, redis_url: str, tmp_path: Path) -> None:
    emulator.set_lifetime("generic", expires_in=LIFETIME)
    redis_url = database(redis_url, 1)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    worker = start_worker(
        emulator,
        redis_url,
        queue="prefork",
        pool="prefork",
        concurrency=2,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    with worker:
        opened = worker.output.wait_for_events("pool.opened", count=2, timeout=60)
        results = run_tasks(redis_url, "prefork", ticks=50, per_tick=10, interval=0.2)
        assert worker.stop(signal.SIGTERM) == 0, worker.output.tail()

    stats = emulator.stats(events=False)["providers"]["generic"]
    children = {int(event["pid"]) for event in opened}
    task_pids = {int(result["pid"]) for result in results}
    closed = closed_by_pid(worker.output)
    per_process = {pid: int(event["token_requests"]) for pid, event in closed.items()}
    ideal = ideal_token_requests(worker.lifetime)
    print(
        f"\nprefork: tasks={len(results)} 401s={resource_401s(emulator.stats(events=False))} "
        f"token requests per process={per_process} (ideal ≤ {ideal} over {worker.lifetime:.1f} s)"
    )

    # Every task ran, in a child (never the parent), and its call succeeded first time.
    assert len(results) == 500
    assert {result["status"] for result in results} == {200}
    assert len(children) == 2
    assert worker.pid not in children
    assert task_pids <= children
    assert len(task_pids) == 2, "both children should have run tasks"
    assert resource_401s(emulator.stats(events=False)) == 0
    assert stats["resource_ok"] == 500

    # One pool per child, closed on worker_process_shutdown; one token request per window.
    assert worker.output.problems() == []
    assert set(closed) == children
    for result in results:  # what a task saw its process's pool had sent so far
        assert int(result["token_requests"]) <= per_process[int(result["pid"])]
    assert sum(per_process.values()) == stats["token_requests"]
    for pid, count in per_process.items():
        assert 2 <= count <= ideal + 2, f"process {pid} sent {count} token requests (ideal {ideal})"

    # prometheus-client multiprocess mode: the children's counters add up to what the
    # emulator saw, and their live gauges were dropped when they exited.
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    # The label is the adapter's kind by default (metrics_label="kind"), not the pool's name.
    attempts = registry.get_sample_value(
        "tokenpool_refresh_attempts_total", {"provider": "client_credentials"}
    )
    assert attempts == stats["token_requests"]
    for pid in children:
        assert not list(metrics_dir.glob(f"gauge_live*_{pid}.db")), f"live gauges of {pid} were not dropped"


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_in_process_pools_share_one_pool(emulator: EmulatorProcess, redis_url: str, pool: str) -> None:
    emulator.set_lifetime("generic", expires_in=LIFETIME)
    redis_url = database(redis_url, 2 if pool == "threads" else 3)
    worker = start_worker(
        emulator, redis_url, queue=pool, pool=pool, concurrency=4 if pool == "threads" else 1
    )
    with worker:
        opened = worker.output.wait_for_events("pool.opened", count=1, timeout=60)
        results = run_tasks(redis_url, pool, ticks=20, per_tick=8, interval=0.2)
        assert worker.stop(signal.SIGTERM) == 0, worker.output.tail()

    closed = closed_by_pid(worker.output)
    count = int(closed[worker.pid]["token_requests"]) if worker.pid in closed else -1
    ideal = ideal_token_requests(worker.lifetime)
    print(
        f"\n{pool}: tasks={len(results)} 401s={resource_401s(emulator.stats(events=False))} "
        f"token requests={count} (ideal ≤ {ideal} over {worker.lifetime:.1f} s)"
    )

    # The worker process itself runs the tasks and owns the only pool.
    assert [int(event["pid"]) for event in opened] == [worker.pid]
    expected_reason = "worker_ready" if pool == "threads" else "worker_process_init"
    assert opened[0]["reason"] in (expected_reason, "first use")
    assert len(results) == 160
    assert {int(result["pid"]) for result in results} == {worker.pid}
    assert {result["status"] for result in results} == {200}
    assert resource_401s(emulator.stats(events=False)) == 0
    # Closed on worker_shutdown; one token request per refresh window.
    assert worker.output.problems() == []
    assert list(closed) == [worker.pid]
    assert count == emulator.stats(events=False)["providers"]["generic"]["token_requests"]
    assert 2 <= count <= ideal + 2


def test_outside_a_worker_the_pool_opens_on_first_use_and_the_script_exits(
    emulator: EmulatorProcess, redis_url: str
) -> None:
    # A script (or task_always_eager) using the accessors: no worker signal ever
    # fires.  The pool opens on first use, and the script must still exit on its
    # own: an open pool's loop thread would otherwise keep the interpreter alive.
    script = (
        "import celery_app\n"
        "from tokenpool.contrib import celery as tokenpool_celery\n"
        "response = tokenpool_celery.client('generic').get('/api/resource')\n"
        "print('status', response.status_code)\n"
    )
    env = app_env(emulator, TOKENPOOL_TEST_REDIS_URL=database(redis_url, 4))
    with Worker([sys.executable, "-c", script], env=env) as run:
        assert run.wait(timeout=60) == 0, run.output.tail()
    assert "status 200" in run.output.lines
    (opened,) = run.output.events("pool.opened")
    assert opened["reason"] == "first use"
    assert list(closed_by_pid(run.output)) == [run.pid]
    assert run.output.problems() == []


def test_accessors_explain_a_missing_install() -> None:
    from tokenpool.contrib import celery as tokenpool_celery

    with pytest.raises(ConfigurationError, match=r"install\(app, providers\)"):
        tokenpool_celery.get_pool()
    tokenpool_celery.shutdown()  # nothing open: nothing to do
