"""A few seconds of the benchmark harness: every provider, one fault scenario (mass revocation).

CI runs this: it fails on any 401 that reaches a caller, any lost call, or the
scenario's expectation not holding (one refresh per cell, every call succeeding
after at most one retry).  No wall-clock assertions.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ALL = {"ntxmx", "ntxpix", "payme", "zertiban", "navro", "generic"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("harness")
    command = [sys.executable, "-m", "benchmarks.harness", "--scenarios", "mass-revocation"]
    command += [
        "--duration",
        "6",
        "--workers",
        "2",
        "--tasks",
        "3",
        "--tenants",
        "2",
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    return proc, out


def test_smoke_run_passes(smoke: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = smoke
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document: dict[str, Any] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert document["passed"] is True
    [run] = document["runs"]
    assert run["scenario"] == "mass-revocation"
    failed = [check for check in run["checks"] if not check["passed"]]
    assert not failed, failed
    total = run["result"]["total"]
    assert total["unauthorized"] == 0
    assert run["result"]["lost_calls"] == 0
    # The revocation really bit: calls met a 401 and were retried once, successfully.
    assert total["recovered_401"] > 0
    assert set(run["result"]["providers"]) == ALL
    for name, figures in run["result"]["providers"].items():
        assert figures["unauthorized"] == 0, name
    assert "| mass-revocation | PASS |" in (out / "results.md").read_text(encoding="utf-8")


def test_smoke_run_plots(smoke: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (the bench extra)")
    _, out = smoke
    assert (out / "mass-revocation--tokenpool.png").stat().st_size > 0
