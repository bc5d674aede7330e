"""examples/payout_worker.py for real: it starts the emulator, pays out, renews tokens, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from _workers import REPO, Worker, ideal_token_requests

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLE = REPO / "examples" / "payout_worker.py"


def test_help() -> None:
    with Worker([sys.executable, str(EXAMPLE), "--help"], env=os.environ, cwd=REPO) as run:
        assert run.wait(timeout=60) == 0
    assert "--token-url" in run.output.tail()


def test_payout_worker_renews_tokens_and_stops_cleanly_on_sigterm() -> None:
    # 0.005 × the generic provider's documented 600 s: 3 s tokens.
    argv = [sys.executable, str(EXAMPLE), "--lifetime-scale", "0.005", "--concurrency", "8", "--log-json"]
    with Worker(argv, env=os.environ, cwd=REPO) as worker:
        (ready,) = worker.output.wait_for_events("worker.ready", count=1, timeout=60)
        # Run through two renewals (the first success is the warm-up), then stop it.
        worker.output.wait_for_events("token.refresh.success", count=3, timeout=60)
        assert worker.stop(signal.SIGTERM) == 0, worker.output.tail()

    (summary,) = worker.output.events("worker.stopped")
    ideal = ideal_token_requests(worker.lifetime)
    print(
        f"\nexample: payouts={summary['payouts']} 401s={summary['unauthorized']} "
        f"(server: {summary['server_401s']}) token requests={summary['token_requests']} "
        f"(ideal ≤ {ideal} over {worker.lifetime:.1f} s)"
    )
    assert ready["pid"] == worker.pid
    assert worker.output.problems() == []
    assert worker.output.events("worker.stopping")[0]["signal"] == "SIGTERM"
    assert summary["payouts"] > 0
    assert summary["statuses"] == {"200": summary["payouts"]}
    assert summary["failed"] == 0
    assert summary["unauthorized"] == 0
    assert summary["server_401s"] == 0
    assert summary["token_requests"] == len(worker.output.events("token.refresh.start"))
    assert 3 <= summary["token_requests"] <= ideal + 2


def test_console_logs_redirected_to_a_pipe_carry_no_colour_codes() -> None:
    argv = [sys.executable, str(EXAMPLE), "--lifetime-scale", "0.005", "--concurrency", "2"]
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # the worker logs steadily, so this loop is bounded by the deadline
            lines.append(line)
            if "worker.ready" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert "worker.ready" in output
    assert "worker.stopped" in output
    assert "\x1b[" not in output
