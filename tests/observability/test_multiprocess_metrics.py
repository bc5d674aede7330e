"""prometheus-client's multiprocess mode with real worker processes (Celery prefork's situation).

The user sets ``PROMETHEUS_MULTIPROC_DIR`` in the environment the workers start
from; each worker runs its own pool (with the default global registry) against
the emulator; one scrape through ``tokenpool.metrics`` adds them all up.
Workers are started with the "spawn" method: a fresh interpreter that imports
prometheus-client with the variable already set, as a worker launched by a
process manager would.  They set nothing themselves.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import urllib.request
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

import tokenpool.metrics
from tokenpool import TokenPool
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.integration]

#: (event loop, token() calls) of each worker.
WORKERS = [("asyncio", 150), ("trio", 40), ("asyncio", 310)]


def worker(
    token_url: str, client_id: str, client_secret: str, calls: int, backend: str, report: queue.Queue[object]
) -> None:
    """One worker process: a pool, some calls, a clean shutdown; reports what it counted itself."""

    async def main() -> tuple[int, int]:
        provider = ClientCredentials(token_url=token_url, client_id=client_id, client_secret=client_secret)
        async with TokenPool({"acme": provider}, metrics_label="name") as pool:
            for _ in range(calls):
                await pool.token("acme")
        stats = pool.statistics()
        return stats.hits, stats.misses

    hits, misses = anyio.run(main, backend=backend)
    report.put((os.getpid(), hits, misses))


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a loopback http URL
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counts_from_several_processes_add_up_in_one_scrape(
    emulator: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "prometheus-multiproc"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    client_id, client_secret = emulator.credentials("generic")
    token_url = emulator.token_url("generic", tls=False)

    context = multiprocessing.get_context("spawn")
    reports: multiprocessing.Queue[tuple[int, int, int]] = context.Queue()
    processes = [
        context.Process(target=worker, args=(token_url, client_id, client_secret, calls, backend, reports))
        for backend, calls in WORKERS
    ]
    for process in processes:
        process.start()
    try:
        counted = [reports.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    assert [p.exitcode for p in processes] == [0] * len(WORKERS)
    reports.close()
    reports.join_thread()

    pids = [p.pid for p in processes]
    assert sorted(pid for pid, _, _ in counted) == sorted(pid for pid in pids if pid is not None)
    # Every worker warmed up with one token request (a wait, so a miss) and served the rest at once.
    assert sorted(hits for _, hits, _ in counted) == sorted(calls for _, calls in WORKERS)
    assert [misses for _, _, misses in counted] == [1] * len(WORKERS)
    assert emulator.stats()["providers"]["generic"]["token_requests"] == len(WORKERS)
    # One file per process and kind of metric, written by prometheus-client, not by us.
    assert {f.name.rsplit("_", 1)[1] for f in directory.glob("counter_*.db")} == {
        f"{p.pid}.db" for p in processes
    }

    acme = (("provider", "acme"),)
    with tokenpool.metrics.start_http_server(0) as server:
        merged = scrape(server.url)
        assert merged[("tokenpool_cache_hits_total", acme)] == sum(hits for _, hits, _ in counted)
        assert merged[("tokenpool_cache_misses_total", acme)] == sum(misses for _, _, misses in counted)
        assert merged[("tokenpool_refresh_attempts_total", acme)] == len(WORKERS)
        success = (("outcome", "success"), ("provider", "acme"))
        assert merged[("tokenpool_refresh_duration_seconds_count", success)] == len(WORKERS)
        # Live gauges of exited workers stay until the parent says they are dead...
        assert ("tokenpool_token_expiry_timestamp_seconds", acme) in merged
        for process in processes:
            assert process.pid is not None
            tokenpool.metrics.mark_process_dead(process.pid)
        after = scrape(server.url)
    # ...then only the counters and histograms, which must keep counting, remain.
    assert ("tokenpool_token_expiry_timestamp_seconds", acme) not in after
    assert ("tokenpool_waiting_callers", acme) not in after
    assert after[("tokenpool_cache_hits_total", acme)] == merged[("tokenpool_cache_hits_total", acme)]
    # The library read the variable and never touched it.
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
