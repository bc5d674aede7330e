"""``tokenpool demo`` end to end: real worker processes, the real emulator, its JSON summary.

The emulator rejects expired tokens by its own clock, so zero 401s here means
no worker ever sent a token past its lifetime while every token was renewed
several times.  Nothing here asserts on wall-clock figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FIVE = {"ntxmx", "ntxpix", "payme", "zertiban", "navro"}
TENANTS = 2


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo") / "demo.json"
    command = [sys.executable, "-m", "tokenpool._cli", "demo", "--duration", "6", "--workers", "2"]
    command += ["--tasks", "3", "--tenants", str(TENANTS), "--json", str(out), "--quiet"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    return proc, report


def test_demo_exits_zero_and_prints_a_summary(
    demo: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    proc, report = demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["passed"] is True
    assert "PASS:" in proc.stdout
    for name in FIVE:
        assert name in proc.stdout


def test_demo_has_no_401_and_no_lost_call(
    demo: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, report = demo
    assert set(report["providers"]) == FIVE
    assert report["total"]["unauthorized"] == 0
    assert report["lost_calls"] == 0
    for name, figures in report["providers"].items():
        assert figures["calls"] > 0, name
        assert figures["unauthorized"] == 0, name
        assert figures["failed"] == 0, name
        # The server's own count agrees: it rejected nothing.
        assert figures["emulator"]["resource_401"] == 0, name
        assert figures["emulator"]["resource_ok"] == figures["emulator"]["resource_calls"], name


def test_demo_token_requests_close_to_ideal(
    demo: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, report = demo
    for name, figures in report["providers"].items():
        cells = TENANTS if name == "zertiban" else 1
        rows = figures["token_requests_per_worker"]
        assert len(rows) == 2, name
        for row in rows:
            # Each cell renewed at least twice (three tokens), and at most two more than ideal.
            assert row["token_requests"] >= 3 * cells, (name, row)
            assert row["token_requests"] <= row["ideal"] + 2 * cells, (name, row)
        # Client and server agree on the number of token requests.
        assert figures["emulator"]["token_requests"] == figures["token_requests"], name
