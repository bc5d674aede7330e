"""A few seconds of the harness's ``fleet`` scenario: runs A–D with 2 workers, end to end; and the
machinery of the ``fleet-faults`` scenario, piece by piece (no fault benchmark runs here).

This is a smoke test of the benchmark's machinery (worker processes, the
harness's own ``redis-server``, the store in every worker, the report), not
its verdict: whether a loaded machine keeps every Redis round trip within
the 50 ms default deadline is the benchmark's business, and its figures go
to ``benchmarks/RESULTS.md``.  What the store must do (one token request for
the fleet, fencing, no failed call against a provider that revokes on issue)
is asserted deterministically in ``tests/fleet/test_fleet_pool.py`` and
``tests/fleet/test_fleet_store.py``.  Without ``redis-server`` the tests skip,
except in CI (``CI=true``), where they fail.

The fleet-faults pieces: the loopback proxy's latency, stall and resume (on
a tiny echo server), the harness's redis-server killed and restarted on the
same port, the lease owner's pid, and a fleet that loses a worker killed on
purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.redis_proxy import RedisProxy, RedisProxyError
from benchmarks.scenarios import _lease_won, lease_owner_pid
from tokenpool.loadtest import FleetController, FleetSettings, emulator_specs, run_fleet
from tokenpool.testing import EmulatorProcess
from tokenpool.testing import RedisServerProcess as RedisServer

ROOT = Path(__file__).resolve().parents[2]
ALL = {"ntxmx", "ntxpix", "payme", "zertiban", "navro", "generic"}
RUNS = ("fleet-A-per-process", "fleet-B-store", "fleet-C-revoke-per-process", "fleet-D-revoke-store")
WORKERS = 2


def _require(what: str, found: bool, hint: str) -> None:
    if found:
        return
    reason = f"{what} is not installed ({hint})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the fleet scenario")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    import importlib.util

    _require("redis-server", shutil.which("redis-server") is not None, "Debian: apt-get install redis-server")
    _require("redis-py", importlib.util.find_spec("redis") is not None, "pip install -e '.[redis]'")
    out = tmp_path_factory.mktemp("fleet")
    command = [sys.executable, "-m", "benchmarks.harness", "--scenarios", "fleet"]
    command += ["--fleet-workers", str(WORKERS), "--tasks", "2", "--duration", "6"]
    command += ["--out", str(out), "--quiet", "--no-plot"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    return proc, out


def _runs(out: Path) -> dict[str, dict[str, Any]]:
    document: dict[str, Any] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {run["scenario"]: run for run in document["runs"]}


def _failed(run: dict[str, Any]) -> list[str]:
    return [f"{c['name']}: {c['detail']}" for c in run["checks"] if not c["passed"]]


@pytest.mark.integration
@pytest.mark.slow
def test_all_four_runs_ran(fleet_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = fleet_run
    assert (out / "results.json").exists(), proc.stdout + proc.stderr
    runs = _runs(out)
    assert tuple(runs) == RUNS
    for name, run in runs.items():
        assert not run["result"]["errors"], (name, run["result"]["errors"])
        assert run["workers"] == WORKERS, name
        assert set(run["fleet"]["providers"]) == ALL, name
        assert run["result"]["total"]["calls"] > 0, name
    assert [run["store"] for run in runs.values()] == [False, True, False, True]


@pytest.mark.integration
@pytest.mark.slow
def test_per_process_pools_need_w_times_ideal(
    fleet_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    run = _runs(fleet_run[1])["fleet-A-per-process"]
    assert not _failed(run), _failed(run)
    assert run["passed"] is True
    for name, figures in run["fleet"]["providers"].items():
        # Every worker fetched its own tokens: more than one worker's worth.
        assert figures["requests"] > figures["ideal"], (name, figures)
        assert figures["store"] == {}, name


@pytest.mark.integration
@pytest.mark.slow
def test_store_runs_share_tokens_across_the_workers(
    fleet_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    runs = _runs(fleet_run[1])
    for name in ("fleet-B-store", "fleet-D-revoke-store"):
        run = runs[name]
        assert run["fleet"]["redis_commands"] > 0, name
        for provider, figures in run["fleet"]["providers"].items():
            # Some worker fetched for the fleet, and another adopted its token.
            assert figures["store"].get("lease_won", 0) > 0, (name, provider, figures)
            assert figures["store"].get("hit", 0) > 0, (name, provider, figures)


@pytest.mark.integration
@pytest.mark.slow
def test_revoke_on_issue_per_process_is_measured(
    fleet_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    run = _runs(fleet_run[1])["fleet-C-revoke-per-process"]
    assert run["asserted"] is False
    # Measured, not judged, but the run must have happened with the mode on.
    assert not _failed(run), _failed(run)
    assert all(p["revoked_on_issue"] > 0 for p in run["fleet"]["providers"].values())


@pytest.mark.integration
@pytest.mark.slow
def test_harness_verdict_and_report(fleet_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = fleet_run
    runs = _runs(out)
    asserted_ok = all(run["passed"] for run in runs.values() if run["asserted"])
    assert (proc.returncode == 0) == asserted_ok, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = (out / "results.md").read_text(encoding="utf-8")
    assert "## Fleet tier (Redis)" in text
    for name in RUNS:
        assert f"| {name} |" in text
    assert "Hit path with a store" in text


# -- the fleet-faults machinery -------------------------------------------------------------------


def test_the_lease_owner_names_its_process() -> None:
    assert lease_owner_pid("4242-9f86d081884c7d659a2feaa0") == 4242
    for owner in (None, "", "9f86d081884c7d65", "-abc", "4242-", "42x-abc", "0-abc", "١٢-abc"):
        assert lease_owner_pid(owner) is None, owner


def test_lease_winners_are_read_from_the_workers_replies() -> None:
    replies = [
        'worker 0: {"generic": {"lease_won": 2, "hit": 5}}',
        'worker 3: {"generic": {"hit": 1}}',
        "worker 4: unsupported: peer cannot store_counts",
    ]
    assert _lease_won(replies, "generic") == {0: 2, 3: 0}


@contextlib.contextmanager
def _echo_server() -> Iterator[int]:
    """A loopback TCP server that sends back whatever it receives, one thread per connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5.0)
        listener.close()


def _round_trip(sock: socket.socket, data: bytes) -> float:
    started = time.perf_counter()
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        received += sock.recv(4096)
    assert received == data
    return time.perf_counter() - started


def test_the_proxy_adds_latency_stalls_and_resumes() -> None:
    with _echo_server() as port, RedisProxy(port) as proxy:
        assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5.0) as sock:
            assert _round_trip(sock, b"ping") < 0.5
            proxy.set_latency(0.1)
            # Once each way: a round trip is at least twice the latency.
            assert _round_trip(sock, b"slow") >= 0.2
            stalled = [proxy.stalled]
            proxy.stall()
            stalled.append(proxy.stalled)
            sock.sendall(b"held")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(4096)
            proxy.resume()
            stalled.append(proxy.stalled)
            assert stalled == [False, True, False]
            assert proxy.latency == 0.0
            # What the stall held goes on to the connection that is still open.
            sock.settimeout(5.0)
            assert sock.recv(4096) == b"held"
            assert _round_trip(sock, b"fast") < 0.5
        assert proxy.connections == 1
        assert proxy.delayed >= 2
        assert proxy.held >= 1
    with pytest.raises(RedisProxyError):
        RedisProxy(port, target_host="192.0.2.1")


def test_the_harness_redis_server_is_killed_and_restarted_on_the_same_port() -> None:
    _require("redis-server", shutil.which("redis-server") is not None, "Debian: apt-get install redis-server")
    with RedisServer() as server:
        port = server.port
        assert server.command("SET", "tokenpool:{abc}:lease", "4242-feed", "PX", "60000") == "OK"
        assert server.keys("tokenpool:*:lease") == ["tokenpool:{abc}:lease"]
        assert lease_owner_pid(server.get("tokenpool:{abc}:lease")) == 4242
        assert 0 < server.pttl("tokenpool:{abc}:lease") <= 60000
        running = [server.running]
        server.kill()
        running.append(server.running)
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=1.0),
        ):
            pass
        server.restart()
        running.append(server.running)
        assert running == [True, False, True]
        assert server.port == port
        assert server.command("PING") == "PONG"
        # No persistence: the restarted server is empty, as after a real crash.
        assert server.keys("*") == []
        assert (server.kills, server.restarts) == (1, 1)
    assert not server.running


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_killed_on_purpose_is_reported_as_killed_not_as_an_error(emulator: EmulatorProcess) -> None:
    specs = emulator_specs(emulator, providers=("generic",), tls=False)
    settings = FleetSettings(specs=tuple(specs), workers=2, tasks=2, duration=3.0, think_time=0.01)
    seen: list[str] = []

    def kill(controller: FleetController) -> None:
        pid = controller.pids[1]
        assert controller.worker_of(pid) == 1
        assert controller.kill_worker(1, "killed by the test")
        assert not controller.kill_worker(1, "twice")
        # Follow-ups scheduled by an action run later, in order.
        controller.after(0.2, lambda c: seen.append("second"))
        controller.after(0.1, lambda c: seen.append("first"))
        controller.broadcast("store_counts")  # the killed worker's pipe is skipped

    result = run_fleet(settings, actions=[(1.0, kill)])
    assert seen == ["first", "second"]
    assert [w.index for w in result.workers] == [0]
    assert result.errors == []
    assert result.missing_workers == []
    [killed] = result.killed_workers
    assert killed["worker"] == 1
    assert killed["reason"] == "killed by the test"
    assert killed["exitcode"] == -9
    assert 0.9 <= killed["at"] <= 2.0
    assert result.total.calls > 0
    assert result.lost_calls == 0
    assert result.to_json()["killed_workers"] == [killed]
    (reply,) = next(iter(result.replies.values()))
    assert reply.startswith("worker 0: {")


def test_the_report_has_a_fleet_faults_section(tmp_path: Path) -> None:
    empty = {"count": 0, "p50_ms": 0.0, "p99_ms": 1.5, "max_ms": 9.0, "mean_ms": 0.0}
    run = {
        "label": "fleet-faults-lease-holder-killed/tokenpool",
        "scenario": "fleet-faults-lease-holder-killed",
        "strategy": "tokenpool",
        "group": "fleet-faults",
        "workers": 8,
        "store": True,
        "fleet": {"workers": 8, "requests": 13, "store_outcomes": {"hit": 3, "lease_won": 2}},
        "title": "a lease holder killed",
        "expectation": "a takeover",
        "asserted": True,
        "passed": True,
        "checks": [{"name": "takeover", "passed": True, "detail": "1 request"}],
        "result": {
            "total": {"calls": 10, "unauthorized": 0, "recovered_401": 1, "token_wait": empty},
            "lost_calls": 0,
            "killed_workers": [{"worker": 3, "pid": 4242, "at": 10.5}],
            "notes": [{"kind": "lease-kill", "label": "lease holder SIGKILLed", "start": 10.5}],
        },
    }
    document = {
        "machine": report.machine(),
        "options": {"workers": 3, "tasks": 2, "http2": True, "tls": True, "max_in_flight": 8},
        "runs": [run],
        "passed": True,
        "summary": "1/1 asserted runs passed",
    }
    text = report.write_markdown(tmp_path / "results.md", document)
    assert "## Fleet tier under faults (Redis)" in text
    row = (
        "| fleet-faults-lease-holder-killed | PASS | 8 | lease holder SIGKILLed at 10.5 s "
        "| 10 | 0 | 1 | 0 | 13 |"
    )
    assert row in text
    assert "worker 3 (pid 4242) |" in text
    assert "- PASS takeover: 1 request" in text
