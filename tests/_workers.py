"""Support for the real-worker integration tests: Redis, worker subprocesses, their output.

Everything here starts real programs on loopback and stops them cleanly; every
wait is bounded.  Server binaries missing from the machine make the tests skip
with a reason, except in CI (``CI=true``), where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tokenpool.testing import EmulatorProcess

REPO = Path(__file__).resolve().parents[1]
APPS = Path(__file__).resolve().parent / "apps"
#: The documented examples; on a worker's ``PYTHONPATH`` when a test app imports one.
EXAMPLES = REPO / "examples"

#: ``expires_in`` the emulator gives ``generic`` tokens in these tests (seconds).
LIFETIME = 3
#: The pool renews at 0.8·L (minus up to 5 % jitter).
REFRESH_RATIO = 0.8


def run_check(path: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``tokenpool check PATH`` in a child process with *env*; its output captured, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "tokenpool", "check", str(path), "--timeout", "20"],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_binary(name: str, install_hint: str) -> str:
    """Path of *name*; skip (outside CI) or fail (in CI) when it is not installed."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed ({install_hint})"
    if in_ci():
        pytest.fail(f"{reason}; CI must run the real-worker tests")
    pytest.skip(reason)


def require_module(name: str, install_hint: str) -> Any:
    """Import *name*; skip (outside CI) or fail (in CI) when it is not installed."""
    if in_ci():
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed ({install_hint})")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ideal_token_requests(seconds: float, lifetime: float = LIFETIME) -> int:
    """Token requests one process needs over *seconds*: one per refresh window (0.8·L)."""
    return math.ceil(seconds / (REFRESH_RATIO * lifetime))


# -- processes --------------------------------------------------------------------------------


class Output:
    """Lines a subprocess writes (stdout and stderr merged), read on a thread."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool], *, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{self.tail()}")
                self._changed.wait(min(remaining, 0.5))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines (structlog's JSONRenderer in the test apps), optionally one event's."""
        decoder = json.JSONDecoder()
        found = []
        for line in list(self.lines):
            # Processes share the pipe: tolerate a prefix and several objects on a line.
            start = line.find("{")
            while start >= 0:
                try:
                    event, end = decoder.raw_decode(line, start)
                except ValueError:
                    start = line.find("{", start + 1)
                    continue
                if isinstance(event, dict) and (name is None or event.get("event") == name):
                    found.append(event)
                start = line.find("{", end)
        return found

    def wait_for_events(self, name: str, *, count: int, timeout: float) -> list[dict[str, Any]]:
        self.wait_for(
            lambda _lines: len(self.events(name)) >= count, timeout=timeout, what=f"{count} × {name!r}"
        )
        return self.events(name)

    def problems(self) -> list[str]:
        """Tracebacks and error-level log events: a clean run has none."""
        bad = [line for line in self.lines if line.startswith("Traceback")]
        bad += [json.dumps(event) for event in self.events() if event.get("level") in ("error", "critical")]
        return bad

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.lines[-lines:])


class Worker:
    """A real worker program in a subprocess, in its own process group, stopped by a signal."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path = APPS) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.output = Output(self.proc.stdout)
        self.started = time.monotonic()
        self.stopped: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 30.0) -> int:
        """Send *sig* and wait for a clean exit; kill the whole group if it does not come."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.argv[:4]} did not exit within {timeout:g} s of {signal.Signals(sig).name}\n"
                f"{self.output.tail()}"
            ) from None
        finally:
            self.stopped = time.monotonic()
            self.output.join(5.0)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10.0)

    def wait(self, *, timeout: float) -> int:
        """Wait for the program to exit on its own; kill it if it does not."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.argv[:4]} did not exit within {timeout:g} s\n{self.output.tail()}"
            ) from None
        finally:
            self.stopped = time.monotonic()
            self.output.join(5.0)
        return code

    @property
    def lifetime(self) -> float:
        """Seconds from start to exit (an upper bound on any pool's life inside it)."""
        end = self.stopped if self.stopped is not None else time.monotonic()
        return end - self.started

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc.poll() is None:
            self.kill()


def app_env(emulator: EmulatorProcess, **extra: str) -> dict[str, str]:
    """Environment for the test apps in ``tests/apps``: where the emulator is and the credentials.

    The secret travels in the environment, as it would in production, and the
    apps read it in the worker process through their providers factory.
    """
    client_id, client_secret = emulator.credentials("generic")
    env = os.environ.copy()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(APPS), str(REPO), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        TOKENPOOL_TEST_TOKEN_URL=emulator.token_url("generic"),
        TOKENPOOL_TEST_API_URL=emulator.url("generic"),
        TOKENPOOL_TEST_CLIENT_ID=client_id,
        TOKENPOOL_TEST_CLIENT_SECRET=client_secret,
        TOKENPOOL_TEST_CA_FILE=emulator.ca_file,
    )
    env.update(extra)
    return env


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def resource_401s(stats: Mapping[str, Any], provider: str = "generic") -> int:
    """How many resource calls the emulator refused with 401, for any reason."""
    return sum(int(n) for n in stats["providers"][provider]["resource_401"].values())


def closed_by_pid(output: Output) -> dict[int, dict[str, Any]]:
    """The ``pool.closed`` event of every process that logged one, by pid."""
    return {int(event["pid"]): event for event in output.events("pool.closed")}


# -- Redis ------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A throw-away ``redis-server`` on a free loopback port in *directory*; yields its URL."""
    require_binary("redis-server", "Debian: apt-get install redis-server")
    from tokenpool.testing import RedisServerProcess

    with RedisServerProcess(directory=directory) as server:
        yield server.url


def celery_worker_argv(*, queue: str, pool: str, concurrency: int) -> list[str]:
    """A real Celery worker of ``tests/apps/celery_app.py`` consuming *queue* (quiet, no gossip)."""
    return python_module(
        "celery",
        "-A",
        "celery_app",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--queues",
        queue,
        "--hostname",
        f"{queue}@%h",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    )


def celery_app_worker_argv(
    app: str, *, loglevel: str, queue: str, pool: str = "prefork", concurrency: int = 2
) -> list[str]:
    """:func:`celery_worker_argv` for the app of module *app* (in ``tests/apps``), at *loglevel*."""
    argv = celery_worker_argv(queue=queue, pool=pool, concurrency=concurrency)
    argv[argv.index("-A") + 1] = app
    argv[argv.index("--loglevel") + 1] = loglevel
    return argv


def run_celery_tasks(
    broker_url: str, queue: str, *, per_tick: int, ticks: int = 1, interval: float = 0.0
) -> list[dict[str, Any]]:
    """Send *per_tick* ``call_resource`` tasks every *interval* seconds, *ticks* times; every result."""
    celery = require_module("celery", "pip install 'tokenpool[celery]'")
    celery_result = require_module("celery.result", "pip install 'tokenpool[celery]'")
    producer = celery.Celery("producer", broker=broker_url, backend=broker_url)
    producer.conf.broker_connection_retry_on_startup = True
    try:
        pending: list[Any] = []
        start = time.monotonic()
        for tick in range(1, ticks + 1):
            pending.extend(producer.send_task("call_resource", queue=queue) for _ in range(per_tick))
            # Paced on a schedule, so the time spent sending does not stretch the run.
            time.sleep(max(0.0, start + tick * interval - time.monotonic()))
        collected = celery_result.ResultSet(pending)
        results: list[dict[str, Any]] = [dict(value) for value in collected.join_native(timeout=60)]
        # AsyncResult.__del__ talks to Redis: let it happen now, while Redis is up.
        del collected
        pending.clear()
        gc.collect()
        return results
    finally:
        producer.close()
