"""docs/scripts/outage_timeline.py draws its picture from a real (short) run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _docs_pages import DOCS, REPO, in_ci

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_quick_run_draws_the_timeline(tmp_path: Path) -> None:
    missing = [name for name in ("matplotlib", "hypercorn") if importlib.util.find_spec(name) is None]
    if missing:
        if in_ci():
            pytest.fail(f"CI must draw the docs' plot; missing {missing}", pytrace=False)
        pytest.skip(f"missing {missing}")
    script = DOCS / "scripts" / "outage_timeline.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "outage-timeline.png").read_bytes().startswith(b"\x89PNG")
    recorded = json.loads((tmp_path / "outage-timeline.json").read_text(encoding="utf-8"))
    figures = recorded["figures"]
    assert figures["calls"] > 100
    assert figures["calls_not_200"] == 0
    assert figures["token_requests_failed_during_outage"] >= 1
    assert recorded["settings"]["emulator"]["resource_401"] == {}
    assert recorded["produced"]["command"].endswith("--quick")
