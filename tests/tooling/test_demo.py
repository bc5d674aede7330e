"""``tokenpool demo`` end to end: real worker processes, the real emulator, its faults and its JSON.

The emulator rejects expired and revoked tokens by its own clock, so zero 401s
here means no worker ever sent a token past its lifetime, every revoked token
was replaced (its calls replayed once), and every renewal that met the outage
succeeded on a retry while the current token was still served.  The runs go to
a pipe with an 80-column ``COLUMNS`` and an ASCII or latin-1 encoding, as a CI
log or an old terminal would take them.  Nothing here asserts on wall-clock
figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FIVE = {"ntxmx", "ntxpix", "payme", "zertiban", "navro"}
TENANTS = 2
WORKERS = 2

Run = tuple[subprocess.CompletedProcess[str], dict[str, Any]]


def _demo(out: Path, *options: str, encoding: str, cpus: set[int] | None = None) -> Run:
    """``tokenpool demo OPTIONS --json OUT`` in a pipe; on *cpus* only (it and all it starts), if given."""
    argv = ["demo", *options, "--json", str(out)]
    code = "import os, sys; from tokenpool._cli import main; "
    if cpus is not None:
        code += f"os.sched_setaffinity(0, {sorted(cpus)!r}); "
    code += f"sys.exit(main({argv!r}))"
    env = {**os.environ, "PYTHONIOENCODING": encoding, "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        encoding=encoding,
        timeout=240,
        check=False,
    )
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    return proc, report


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The default demo, faults included, shortened: 20 s, so the outage fits (8 s lifetimes)."""
    out = tmp_path_factory.mktemp("demo") / "demo.json"
    options = ["--duration", "20", "--workers", str(WORKERS), "--tasks", "3", "--tenants", str(TENANTS)]
    return _demo(out, *options, encoding="ascii")


def test_demo_exits_zero_and_prints_a_summary(demo: Run) -> None:
    proc, report = demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["passed"] is True
    assert "PASS:" in proc.stdout
    assert all(c["passed"] for c in report["criteria"]), report["criteria"]
    for name in FIVE:
        assert name in proc.stdout


def test_demo_output_fits_80_columns_in_plain_ascii(demo: Run) -> None:
    proc, _ = demo
    lines = proc.stdout.splitlines()
    assert not [line for line in lines if len(line) > 80]
    assert "\r" not in proc.stdout
    assert "\x1b" not in proc.stdout
    assert proc.stdout.isascii()
    assert "UnicodeEncodeError" not in proc.stderr
    assert "ceil(T / (r*L))" in " ".join(" ".join(lines).split())


def test_the_last_progress_line_agrees_with_the_summary(demo: Run) -> None:
    proc, report = demo
    # In a pipe the progress is a plain line every 5 s; the last one carries the final totals.
    progress = [line for line in proc.stdout.splitlines() if "/20 s" in line and "calls " in line]
    assert len(progress) >= 3, proc.stdout
    last = progress[-1]
    total = report["total"]
    assert f"calls {total['calls']:,}" in last
    assert f"401s {total['unauthorized']}" in last
    assert f"failed {total['failed']}" in last
    assert f"replayed {total['recovered_401']}" in last


def test_demo_has_no_401_and_no_lost_call(demo: Run) -> None:
    _, report = demo
    assert set(report["providers"]) == FIVE
    assert report["total"]["unauthorized"] == 0
    assert report["lost_calls"] == 0
    for name, figures in report["providers"].items():
        assert figures["calls"] > 0, name
        assert all(row["calls"] > 0 for row in figures["token_requests_per_worker"]), name
        assert figures["unauthorized"] == 0, name
        assert figures["failed"] == 0, name
        # The server's own count agrees: every 401 it sent was to a revoked token, replayed once.
        assert figures["emulator"]["resource_401"] == figures["recovered_401"], name
        assert figures["emulator"]["resource_calls"] == figures["calls"] + figures["recovered_401"], name


def test_the_revocation_was_met_and_replayed(demo: Run) -> None:
    _, report = demo
    revocation = report["faults"]["revocation"]
    assert revocation["revoked"] > 0
    assert revocation["replayed"] > 0
    # One new token per cell: every (worker, cell) met the revocation and replaced its token once.
    assert revocation["replaced"] == revocation["cells"] == WORKERS * (len(FIVE) - 1 + TENANTS)


def test_the_outage_was_ridden_out(demo: Run) -> None:
    proc, report = demo
    outage = report["faults"]["outage"]
    assert outage["status"] == 503
    assert outage["failed_token_requests"] > 0
    # Client and server agree on what failed, and every failure was retried while a token was served.
    assert outage["emulator_refused"] == outage["failed_token_requests"]
    assert outage["retried_while_served"] == outage["failed_token_requests"]
    assert outage["failed_without_token"] == 0
    assert outage["cells_hit"] > 0
    assert outage["calls_failed"] == 0
    assert "every token endpoint answered 503" in " ".join(proc.stdout.split())


def test_every_cell_renewed_close_to_ideal(demo: Run) -> None:
    _, report = demo
    for name, figures in report["providers"].items():
        assert len(figures["token_requests_per_worker"]) == WORKERS, name
        assert figures["min_renewals_per_cell"] >= 1, name
        # Client and server agree on the number of token requests (failed ones included).
        assert figures["emulator"]["token_requests"] == figures["token_requests"], name
        # The revocation moves every cell's schedule (one token more, or the same count, than
        # the ideal); the ideal also counts the warm-up, before the load, when the pool was open.
        for tokens, ideal in zip(figures["tokens_per_cell"], figures["ideal_per_cell"], strict=True):
            assert ideal - 1 <= tokens <= ideal + 2, (name, tokens, ideal)


def test_a_calm_run_in_latin_1_on_one_cpu(tmp_path: Path) -> None:
    """No faults, an encoding without ``…``, and more workers than CPUs: a warning, same verdict."""
    has_affinity = hasattr(os, "sched_setaffinity")
    cpus = {min(os.sched_getaffinity(0))} if has_affinity else None
    options = ["--calm", "--duration", "4", "--workers", "2", "--tasks", "2", "--tenants", "1", "--quiet"]
    proc, report = _demo(tmp_path / "calm.json", *options, encoding="latin-1", cpus=cpus)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert report["passed"] is True
    text = " ".join(proc.stdout.split())
    assert "No faults were injected (--calm)." in text
    assert "..." in proc.stdout  # "starting the loopback emulator (...)…", in ASCII
    assert not [line for line in proc.stdout.splitlines() if len(line) > 80]
    if has_affinity:
        assert "warning: 2 worker processes on 1 CPU" in text
        assert report["oversubscribed"] == {"workers": 2, "cpus": 1}
