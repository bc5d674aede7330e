"""Every runnable file the documentation includes from examples/ runs here, for real, as a subprocess.

Each one must exit 0 within its time limit, and print what the docs say it
prints: a page's ``$ python examples/NAME.py`` transcript must match the real
output (exactly for the deterministic examples; digits aside for the others).
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _docs_pages import EXAMPLES, REPO, all_blocks, in_ci, transcripts

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Example:
    """How to run one example and what its output must contain."""

    needs: tuple[str, ...] = ("hypercorn",)  # modules of the extras it needs
    binaries: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()  # lines that must appear in its standard output
    exact: bool = True  # its docs transcript matches the output exactly (else digits aside)
    timeout: float = 60.0
    slow: bool = False
    argv: tuple[str, ...] = field(default=())  # default: python examples/NAME
    command: str = ""  # as the docs show it, when it is not the argv


#: Every Python file under examples/ that a page includes, and how to check it.
EXAMPLES_RUN: Mapping[str, Example] = {
    "first_pool.py": Example(
        expect=("GET /api/resource -> 200", "token requests: 1, served from the cell: 4"), exact=False
    ),
    "timing_model.py": Example(needs=(), expect=("callers that waited since warm-up: 0",), timeout=30),
    "blocking_pool.py": Example(expect=("40 payouts from 8 threads: 40 answered 200", "token requests: 1")),
    "emulator_in_process.py": Example(
        expect=("refresh failed: HTTP 503, Retry-After 7 s", "emulator: 2 token requests, 2 calls OK")
    ),
    "fleet_pool.py": Example(
        needs=("hypercorn", "redis"),
        binaries=("redis-server",),
        expect=("both pools hold the same token: True", "token requests at the provider: 1"),
    ),
    "celery_payouts.py": Example(needs=("hypercorn", "celery"), expect=("task results: [200, 200, 200]",)),
    "celery_logging.py": Example(
        needs=("hypercorn", "celery"),
        expect=(
            "INFO/MainProcess] pool.opened [tokenpool] integration=celery",
            "INFO/MainProcess] token.refresh.success [tokenpool] duration=",
            "task results: [200, 200, 200]",
        ),
    ),
    "arq_payouts.py": Example(needs=("hypercorn", "arq"), expect=("job results: [200, 200, 200]",)),
    "pytest_emulator.py": Example(
        argv=("-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/pytest_emulator.py"),
        command="python -m pytest -q examples/pytest_emulator.py",
        expect=("2 passed",),
        exact=False,
        timeout=120,
    ),
    # Run by their own tests below: a Locust load test and a worker stopped with SIGTERM.
    "locustfile.py": Example(needs=("hypercorn", "locust"), slow=True),
    "payout_worker.py": Example(needs=("hypercorn",), slow=True),
}
#: The examples run by the generic test (the others have tests of their own).
GENERIC = [name for name in EXAMPLES_RUN if name not in {"locustfile.py", "payout_worker.py"}]


def require(example: Example) -> None:
    """Skip when an extra or a binary is missing, except in CI, where everything must run."""
    missing = [m for m in example.needs if importlib.util.find_spec(m) is None]
    missing += [b for b in example.binaries if shutil.which(b) is None]
    if missing:
        if in_ci():
            pytest.fail(f"CI must run every documented example; missing: {missing}", pytrace=False)
        pytest.skip(f"missing {missing}")


def normalise(lines: list[str], *, exact: bool) -> list[str]:
    cleaned = [line.rstrip() for line in lines if line.strip()]
    return cleaned if exact else [re.sub(r"\d+(\.\d+)?", "N", line) for line in cleaned]


def test_every_included_python_file_has_a_run() -> None:
    included = {
        Path(path).name
        for block in all_blocks()
        for path in block.includes
        if path.startswith("examples/") and path.endswith(".py")
    }
    assert included, "the docs include no example at all"
    assert included == set(EXAMPLES_RUN), "add the example to EXAMPLES_RUN (or stop including it)"
    for name in EXAMPLES_RUN:
        assert (EXAMPLES / name).is_file(), name


@pytest.mark.parametrize("name", GENERIC)
def test_example_runs_and_prints_what_the_docs_say(name: str) -> None:
    example = EXAMPLES_RUN[name]
    require(example)
    argv = [sys.executable, *(example.argv or (f"examples/{name}",))]
    started = time.monotonic()
    # As a reader runs it: without the options CI gives its own pytest run (a coverage floor).
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    done = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=example.timeout, check=False
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.splitlines()
    for wanted in example.expect:
        assert any(wanted in line for line in lines), f"{name}: no line with {wanted!r} in:\n{done.stdout}"
    command = example.command or " ".join(["python", *(example.argv or (f"examples/{name}",))])
    shown = transcripts(command)
    for transcript in shown:
        assert normalise(transcript, exact=example.exact) == normalise(lines, exact=example.exact), (
            f"the docs' transcript of `{command}` no longer matches its output"
        )
    print(f"\n{name}: {elapsed:.1f} s, {len(shown)} transcript(s) checked")


def emulator_environment() -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``tokenpool emulator`` as a child and the ACME_* variables of examples/acme_pool.toml."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenpool.testing", "--json", "--watch-stdin"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    generic = info["credentials"]["generic"]
    env = dict(
        os.environ,
        ACME_TOKEN_URL=info["urls"]["generic"]["https"] + info["token_paths"]["generic"],
        ACME_CLIENT_ID=generic["client_id"],
        ACME_CLIENT_SECRET=generic["client_secret"],
        ACME_API_URL=info["urls"]["generic"]["https"],
        ACME_CA_FILE=info["ca_file"],
    )
    return proc, env


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


@pytest.mark.slow
def test_the_locustfile_runs_headless_without_a_failure() -> None:
    require(EXAMPLES_RUN["locustfile.py"])
    emulator, env = emulator_environment()
    try:
        argv = [sys.executable, "-m", "locust", "-f", "examples/locustfile.py", "--headless"]
        argv += ["-u", "5", "-r", "5", "-t", "3s", "--host", env["ACME_API_URL"], "--only-summary"]
        done = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=90, check=False
        )
    finally:
        stop(emulator)
    # Locust exits 1 when any request failed.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pool.closed integration=locust" in done.stderr
    assert "token_requests=1 " in done.stderr, done.stderr


class Lines:
    """A child's standard output, line by line, with a deadline on every wait."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self._queue.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(self.seen)}")
            try:
                self.seen.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                continue

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.seen.append(self._queue.get(timeout=0.1))
            except queue.Empty:
                if not self._queue.qsize():
                    return


@pytest.mark.slow
def test_the_payout_worker_pays_renews_and_stops_on_sigterm() -> None:
    require(EXAMPLES_RUN["payout_worker.py"])
    argv = [sys.executable, "examples/payout_worker.py", "--lifetime-scale", "0.005", "--log-json"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = Lines(proc)
        lines.wait_for('"worker.ready"', timeout=60)
        lines.wait_for('"token.refresh.success"', timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines.seen)
        lines.drain(5)
    finally:
        stop(proc)
    (summary,) = [json.loads(line) for line in lines.seen if '"worker.stopped"' in line]
    assert summary["payouts"] > 0
    assert summary["failed"] == 0
    assert summary["unauthorized"] == 0
