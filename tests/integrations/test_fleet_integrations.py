"""The fleet store through every integration: real worker processes, a real redis-server, the emulator.

For ``BlockingTokenPool`` (three separate scripts), Celery (a prefork worker
with two children), arq (two worker processes) and Locust (``--processes 2``)
the store is configured the way a user of that integration would: a
``store=RedisStore(...)`` keyword argument, or a TOML file with
``[pool.store]`` given as ``config=``.  The processes make real resource
calls, and the test counts, for the whole set of processes:

- at the emulator: exactly one token request, from the one client (tokens
  live an hour, so nothing is renewed during a run);
- every resource call answered 200 on its first try (no 401 at the emulator);
- per process, from its own prometheus-client counter file (multiprocess
  mode): one process won the lease and published, every other one adopted the
  shared token (``hit``), none fell back to a request of its own;
- in Redis: the shared token's key, which does not reveal the client id;
- in the workers' output: no client secret and no Redis password.

Two quick tests without workers check ``config=`` itself: the file is read
when the pool opens (keyword arguments override its ``[pool]``), and a
missing file or two sources of providers are refused at install time.

No test asserts how fast anything is; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import signal
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from _redis import AclUser, RedisServer, redis_server
from _workers import (
    APPS,
    Output,
    Worker,
    app_env,
    celery_worker_argv,
    closed_by_pid,
    in_ci,
    python_module,
    require_module,
    resource_401s,
    run_celery_tasks,
)

from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: ``expires_in`` of every token in these tests: far longer than a run, so no renewal happens.
LIFETIME = 3600
#: Store outcomes that mean a process did not use the shared path.
OFF_THE_SHARED_PATH = ("fallback", "error", "deferred", "fenced")
#: Longest wait for worker processes to start and fetch (or adopt) their first token.
START_TIMEOUT = 60.0


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    """An empty ``PROMETHEUS_MULTIPROC_DIR``: each process's counters land in their own file."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    return directory


# -- helpers --------------------------------------------------------------------------------------


def store_outcomes_by_pid(metrics_dir: Path) -> dict[int, Counter[str]]:
    """``tokenpool_store_operations_total`` by outcome, per process (from its ``counter_PID.db``)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    found: dict[int, Counter[str]] = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        outcomes: Counter[str] = Counter()
        for metric in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for sample in metric.samples:
                if sample.name == "tokenpool_store_operations_total":
                    outcomes[sample.labels["outcome"]] += int(sample.value)
        found[int(path.stem.rpartition("_")[2])] = outcomes
    return found


def assert_one_token_for_the_fleet(
    emulator: EmulatorProcess, metrics_dir: Path, pids: set[int], *, resource_calls: int | None = None
) -> None:
    """One token request at the emulator; one lease winner among *pids*, every other one adopted."""
    stats = emulator.stats(events=False)["providers"]["generic"]
    client_id, _ = emulator.credentials("generic")
    assert stats["token_requests"] == 1, stats
    assert stats["token_requests_by_client"] == {client_id: 1}
    assert stats["tokens_issued"] == 1
    assert resource_401s(emulator.stats(events=False)) == 0
    if resource_calls is not None:
        assert stats["resource_calls"] == stats["resource_ok"] == resource_calls
    else:
        assert stats["resource_calls"] == stats["resource_ok"] > 0

    by_pid = store_outcomes_by_pid(metrics_dir)
    print(f"\nstore outcomes by process: { {pid: dict(c) for pid, c in by_pid.items() if +c} }")
    assert pids <= set(by_pid), f"no counter file for {sorted(pids - set(by_pid))}"
    # No other process (a Celery or Locust parent) touched the store.
    assert all(not +outcomes for pid, outcomes in by_pid.items() if pid not in pids)
    winners = [pid for pid in pids if by_pid[pid]["lease_won"]]
    assert len(winners) == 1, {pid: dict(by_pid[pid]) for pid in pids}
    (winner,) = winners
    assert by_pid[winner]["lease_won"] == by_pid[winner]["published"] == 1
    assert by_pid[winner]["hit"] == 0
    for pid in pids - {winner}:
        assert by_pid[pid]["hit"] == 1, dict(by_pid[pid])
        assert by_pid[pid]["lease_won"] == by_pid[pid]["published"] == 0
    for pid in pids:
        assert all(by_pid[pid][outcome] == 0 for outcome in OFF_THE_SHARED_PATH), dict(by_pid[pid])


def assert_shared_key(server: RedisServer, client_id: str) -> None:
    """The store holds the shared token under a key that does not name the client."""
    with server.client() as admin:
        keys = [key.decode() for key in admin.scan_iter(match="tokenpool:*", count=100)]
    assert any(key.endswith(":token") for key in keys), keys
    assert not any(client_id in key for key in keys)


def assert_no_secrets(outputs: Iterable[Output], *secrets: str) -> None:
    text = "\n".join(line for output in outputs for line in output.lines)
    for secret in secrets:
        assert secret not in text


def wait_for_tokens(output: Output, *, processes: int) -> set[int]:
    """Wait until *processes* distinct processes logged that their pool got its token; their pids."""

    def pids() -> set[int]:
        return {int(event["pid"]) for event in output.events("token.refresh.success")}

    output.wait_for(
        lambda _lines: len(pids()) >= processes,
        timeout=START_TIMEOUT,
        what=f"a token in {processes} processes",
    )
    return pids()


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(
    path: Path, emulator: EmulatorProcess, store_url: str, *, username: str | None = None
) -> Path:
    """A deployment's ``tokenpool.toml``: provider, ``[pool]``, ``[pool.store]``; secrets by reference."""
    client_id, _ = emulator.credentials("generic")
    auth = ""
    if username is not None:
        auth = f'username = {toml_string(username)}\npassword = "${{TOKENPOOL_TEST_REDIS_PASSWORD}}"\n'
    path.write_text(
        f"""
[pool]
ca_file = {toml_string(emulator.ca_file)}

[pool.store]
url = {toml_string(store_url)}
{auth}operation_timeout = 2.0
lease_ttl = 20.0

[providers.generic]
type = "client_credentials"
token_url = {toml_string(emulator.token_url("generic"))}
client_id = {toml_string(client_id)}
client_secret = "${{TOKENPOOL_TEST_CLIENT_SECRET}}"
""",
        encoding="utf-8",
    )
    return path


# -- BlockingTokenPool ----------------------------------------------------------------------------


def test_blocking_pools_in_three_processes_share_one_token(
    emulator: EmulatorProcess, tmp_path: Path, metrics_dir: Path
) -> None:
    emulator.set_lifetime("generic", expires_in=LIFETIME)
    client_id, client_secret = emulator.credentials("generic")
    with redis_server(tmp_path / "redis") as server:
        env = app_env(
            emulator, TOKENPOOL_TEST_STORE_URL=server.url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
        )
        with contextlib.ExitStack() as stack:
            runs = [stack.enter_context(Worker(python_module("fleet_blocking"), env=env)) for _ in range(3)]
            codes = [run.wait(timeout=90) for run in runs]
        assert codes == [0, 0, 0], "\n".join(run.output.tail() for run in runs)
        assert_shared_key(server, client_id)

    summaries = {run.pid: run.output.events("summary") for run in runs}
    for run in runs:
        assert run.output.problems() == []
        (summary,) = summaries[run.pid]
        assert summary["statuses"] == [200] * 40
        assert summary["token_requests"] == 1  # one fetch from its source: the lease, or the shared token
    assert len({summary["token_sha256"] for (summary,) in summaries.values()}) == 1
    assert_one_token_for_the_fleet(emulator, metrics_dir, {run.pid for run in runs}, resource_calls=120)
    assert_no_secrets((run.output for run in runs), client_secret)


# -- Celery -----------------------------------------------------------------------------------------


def celery_worker(env: dict[str, str], *, queue: str, concurrency: int) -> Worker:
    return Worker(celery_worker_argv(queue=queue, pool="prefork", concurrency=concurrency), env=env)


@pytest.mark.parametrize("configured_by", ["toml", "keyword"])
def test_celery_prefork_children_share_one_token(
    emulator: EmulatorProcess, tmp_path: Path, metrics_dir: Path, configured_by: str
) -> None:
    require_module("celery", "pip install 'tokenpool[celery]'")
    emulator.set_lifetime("generic", expires_in=LIFETIME)
    client_id, client_secret = emulator.credentials("generic")
    # The store wants an ACL user and a password (from the environment, never the file).
    user = AclUser("fleet")
    with (
        redis_server(tmp_path / "broker") as broker,
        redis_server(tmp_path / "store", user=user if configured_by == "toml" else None) as store,
    ):
        broker_url = broker.url
        extra = {"TOKENPOOL_TEST_REDIS_URL": broker_url, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        if configured_by == "toml":
            config = write_config(tmp_path / "tokenpool.toml", emulator, store.url, username=user.name)
            extra |= {"TOKENPOOL_TEST_CONFIG": str(config), "TOKENPOOL_TEST_REDIS_PASSWORD": user.password}
        else:
            extra["TOKENPOOL_TEST_STORE_URL"] = store.url
        worker = celery_worker(app_env(emulator, **extra), queue=f"fleet-{configured_by}", concurrency=2)
        with worker:
            children = wait_for_tokens(worker.output, processes=2)
            results = run_celery_tasks(broker_url, f"fleet-{configured_by}", per_tick=40)
            assert worker.stop(signal.SIGTERM) == 0, worker.output.tail()
        assert_shared_key(store, client_id)

    opened = {int(event["pid"]) for event in worker.output.events("pool.opened")}
    closed = closed_by_pid(worker.output)
    assert opened == children == set(closed)
    assert len(children) == 2
    assert worker.pid not in children
    assert worker.output.problems() == []
    assert all(int(event["token_requests"]) == 1 for event in closed.values())
    assert len(results) == 40
    assert {result["status"] for result in results} == {200}
    assert {int(result["pid"]) for result in results} <= children
    assert len({result["token_sha256"] for result in results}) == 1
    assert_one_token_for_the_fleet(emulator, metrics_dir, children, resource_calls=40)
    assert_no_secrets([worker.output], client_secret, user.password)


# -- arq ----------------------------------------------------------------------------------------------


async def run_arq_jobs(redis_url: str, queue: str, count: int) -> list[dict[str, Any]]:
    arq_connections = require_module("arq.connections", "pip install 'tokenpool[arq]'")
    redis = await arq_connections.create_pool(
        arq_connections.RedisSettings.from_dsn(redis_url), default_queue_name=queue
    )
    try:
        jobs = [await redis.enqueue_job("call_resource") for _ in range(count)]
        return [dict(await job.result(timeout=60, poll_delay=0.05)) for job in jobs if job is not None]
    finally:
        await redis.aclose(close_connection_pool=True)


@pytest.mark.parametrize("configured_by", ["keyword", "toml"])
def test_two_arq_workers_share_one_token(
    emulator: EmulatorProcess, tmp_path: Path, metrics_dir: Path, configured_by: str
) -> None:
    require_module("arq.connections", "pip install 'tokenpool[arq]'")
    emulator.set_lifetime("generic", expires_in=LIFETIME)
    client_id, client_secret = emulator.credentials("generic")
    queue = f"tokenpool-test:fleet-arq-{configured_by}"
    with redis_server(tmp_path / "redis") as server:
        # The jobs queue on database 1; the store uses database 0.
        jobs_url = server.url.rsplit("/", 1)[0] + "/1"
        extra = {
            "TOKENPOOL_TEST_REDIS_URL": jobs_url,
            "TOKENPOOL_TEST_QUEUE": queue,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        if configured_by == "toml":
            extra["TOKENPOOL_TEST_CONFIG"] = str(
                write_config(tmp_path / "tokenpool.toml", emulator, server.url)
            )
        else:
            extra["TOKENPOOL_TEST_STORE_URL"] = server.url
        env = app_env(emulator, **extra)
        argv = python_module("arq", "arq_app.WorkerSettings")
        with Worker(argv, env=env) as first, Worker(argv, env=env) as second:
            workers = [first, second]
            for worker in workers:
                worker.output.wait_for_events("pool.opened", count=1, timeout=START_TIMEOUT)
            results = asyncio.run(run_arq_jobs(jobs_url, queue, 40))
            for worker in workers:
                assert worker.stop(signal.SIGTERM) == 0, worker.output.tail()
        assert_shared_key(server, client_id)

    pids = {worker.pid for worker in workers}
    for worker in workers:
        assert worker.output.problems() == []
        closed = closed_by_pid(worker.output)
        assert list(closed) == [worker.pid]
        assert int(closed[worker.pid]["token_requests"]) == 1
    assert len(results) == 40
    assert {result["status"] for result in results} == {200}
    assert {int(result["pid"]) for result in results} <= pids
    assert len({result["token_sha256"] for result in results}) == 1
    assert_one_token_for_the_fleet(emulator, metrics_dir, pids, resource_calls=40)
    assert_no_secrets((worker.output for worker in workers), client_secret)


# -- Locust -------------------------------------------------------------------------------------------


def test_locust_processes_share_one_token_from_a_toml_store(
    emulator: EmulatorProcess, tmp_path: Path, metrics_dir: Path
) -> None:
    # Not imported here: importing locust monkey-patches this process with gevent.
    if importlib.util.find_spec("locust") is None:
        if in_ci():
            pytest.fail("locust is not installed; CI must run the real-worker tests", pytrace=False)
        pytest.skip("locust is not installed (pip install 'tokenpool[locust]')")
    emulator.set_lifetime("generic", expires_in=LIFETIME)
    client_id, client_secret = emulator.credentials("generic")
    report = tmp_path / "locust-stats"
    with redis_server(tmp_path / "redis") as server:
        config = write_config(tmp_path / "tokenpool.toml", emulator, server.url)
        argv = python_module(
            "locust",
            "-f",
            str(APPS / "locust_app.py"),
            "--headless",
            "--users",
            "10",
            "--spawn-rate",
            "10",
            "--run-time",
            "3s",
            "--host",
            emulator.url("generic"),
            "--processes",
            "2",
            "--json-file",
            str(report),
            "--loglevel",
            "WARNING",
        )
        env = app_env(emulator, TOKENPOOL_TEST_CONFIG=str(config), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        with Worker(argv, env=env) as run:
            code = run.wait(timeout=90)
        assert code == 0, run.output.tail()
        assert_shared_key(server, client_id)

    (endpoint,) = json.loads(report.with_suffix(".json").read_text())
    opened = {int(event["pid"]) for event in run.output.events("pool.opened")}
    closed = closed_by_pid(run.output)
    # Two Locust worker processes, each with its own pool; the master (run.pid) has none.
    assert len(opened) == 2
    assert run.pid not in opened
    assert set(closed) == opened
    assert all(int(event["token_requests"]) == 1 for event in closed.values())
    assert run.output.problems() == []
    assert endpoint["num_requests"] > 0
    assert endpoint["num_failures"] == 0
    assert_one_token_for_the_fleet(emulator, metrics_dir, opened)
    assert_no_secrets([run.output], client_secret)


# -- config= without workers -------------------------------------------------------------------------


def test_config_is_read_when_the_pool_opens_and_keywords_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenpool.contrib._common import pool_recipe
    from tokenpool.fleet import RedisStore

    path = tmp_path / "tokenpool.toml"
    path.write_text(
        """
[pool]
warm_up = "wait"
max_concurrent_requests = 7

[pool.store]
url = "redis://127.0.0.1:6379/0"
username = "fleet"
password = "${TOKENPOOL_TEST_REDIS_PASSWORD}"

[providers.generic]
type = "client_credentials"
token_url = "https://auth.example.com/oauth/token"
client_id = "generic-id"
client_secret = "${TOKENPOOL_TEST_CLIENT_SECRET}"
""",
        encoding="utf-8",
    )
    # Only settings at install time: the file (and the secrets it refers to) is read when
    # the pool opens, in its process; here the secrets are not even in the environment yet.
    monkeypatch.delenv("TOKENPOOL_TEST_REDIS_PASSWORD", raising=False)
    monkeypatch.delenv("TOKENPOOL_TEST_CLIENT_SECRET", raising=False)
    recipe = pool_recipe(
        None, path, defaults={"warm_up": "background"}, options={"max_concurrent_requests": 3}, call="x"
    )
    monkeypatch.setenv("TOKENPOOL_TEST_REDIS_PASSWORD", "redis-pass-word")
    monkeypatch.setenv("TOKENPOOL_TEST_CLIENT_SECRET", "client-secret-" + "x" * 16)
    providers, options = recipe.build()
    assert list(providers) == ["generic"]
    assert options["warm_up"] == "wait"  # the file beats the integration's default…
    assert options["max_concurrent_requests"] == 3  # …and a keyword argument beats the file
    store = options["store"]
    assert isinstance(store, RedisStore)
    assert store.url == "redis://fleet:***@127.0.0.1:6379/0"
    assert "redis-pass-word" not in repr(options)
    assert "client-secret-" not in repr(providers)


def test_the_integrations_refuse_a_missing_config_or_two_sources_of_providers(tmp_path: Path) -> None:
    require_module("celery", "pip install 'tokenpool[celery]'")
    from celery import Celery

    from tokenpool import ConfigurationError
    from tokenpool.contrib import celery as tokenpool_celery
    from tokenpool.contrib.arq import PoolHooks

    def providers() -> dict[str, Any]:
        return {}

    app = Celery("refusals")
    present = tmp_path / "tokenpool.toml"
    present.write_text("", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not both"):
        tokenpool_celery.install(app, providers, config=present)
    with pytest.raises(ConfigurationError, match="no such file"):
        tokenpool_celery.install(app, config=tmp_path / "absent.toml")
    with pytest.raises(ConfigurationError, match="or pass config="):
        tokenpool_celery.install(app)
    with pytest.raises(ConfigurationError, match="not both"):
        PoolHooks(providers, config=present)
    with pytest.raises(ConfigurationError, match="no such file"):
        PoolHooks(config=tmp_path / "absent.toml")
    with pytest.raises(ConfigurationError, match="or pass config="):
        PoolHooks()
    # Nothing was installed by the refusals.
    with pytest.raises(ConfigurationError, match="not installed"):
        tokenpool_celery.get_pool()
