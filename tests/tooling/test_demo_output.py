"""What the demo prints, on constructed results: it fits the width, degrades to ASCII, explains its terms.

Pure code: the summary and the progress line are rendered into strings, no
emulator and no worker process.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from _demo_results import CELLS, cell, fleet

from tokenpool.loadtest import FleetResult, ProgressPrinter, Text, build_report, render_summary

WIDTHS = [200, 140, 120, 100, 80, 72, 60, 40, 30]


def _faulted() -> FleetResult:
    """A run that met a revocation at 4 s and an outage from 7 s to 7.9 s, and passed."""
    result = fleet(
        notes=[
            {"kind": "revocation", "at": 4.0, "revoked": 6},
            {"kind": "outage", "at": 7.0, "start": 7.0, "end": 7.9, "status": 503},
        ]
    )
    for worker in result.workers:
        for g in worker.groups.values():
            g.recovered_401 = 2
            g.unauthorized_at = [4.01, 4.02]
            for row in g.cells:
                # First token, a renewal at 3 s, the revocation's replacement, the outage's renewal.
                row.update(tokens=4, replaced=1, renewals=2, token_requests=6)
                row["requests_at"] = [-0.1, 3.0, 4.02, 7.2, 7.5, 8.0]
                row["refreshed_at"] = [-0.05, 3.05, 4.05, 8.05]
                row["lifetimes_at"] = [[-0.05, 4.0], [3.05, 4.0], [4.05, 4.0], [8.05, 4.0]]
    return result


def _report(result: FleetResult, **extra: Any) -> dict[str, Any]:
    report = build_report(result, {}, dict.fromkeys(CELLS, 4))
    report.update({"calm": False, "no_outage": None, "backoff": "0.05–0.5 s", "oversubscribed": None})
    report.update(extra)
    return report


def _lines(report: dict[str, Any], width: int, *, ascii_only: bool = False) -> list[str]:
    return render_summary(report, Text(io.StringIO(), width=width, ascii_only=ascii_only))


def _prose(report: dict[str, Any], width: int = 100) -> str:
    """The summary as one string, wrapped lines joined again."""
    return " ".join(" ".join(_lines(report, width)).split())


@pytest.mark.parametrize("width", WIDTHS)
def test_every_summary_line_fits_the_width(width: int) -> None:
    for report in (_report(_faulted()), _report(fleet(), calm=True)):
        lines = _lines(report, width)
        too_long = [line for line in lines if len(line) > width]
        assert not too_long, too_long


def _columns(header: str) -> list[str]:
    return [name.strip() for name in header.split("  ") if name.strip()]


def test_the_table_narrows_with_the_width() -> None:
    report = _report(_faulted())
    header = {
        width: next(line for line in _lines(report, width) if line.startswith("provider"))
        for width in (200, 120, 80)
    }
    assert {"retried", "hit ratio", "latency"} <= set(_columns(header[200]))
    assert {"latency", "calls/s"} <= set(_columns(header[120]))
    assert "retried" not in header[120]
    assert {"wait max", "replayed", "401s", "failed"} <= set(_columns(header[80]))
    assert "calls/s" not in header[80]
    # Too narrow for any table: one block per provider, no rules.
    blocks = _lines(report, 40)
    assert not any(line.startswith("---") for line in blocks)
    assert any(line.startswith("ntxmx: ") for line in blocks)
    assert any(line.startswith("total: ") for line in blocks)


def test_the_legend_explains_every_term_the_table_uses() -> None:
    text = "\n".join(_lines(_report(_faulted()), 200))
    for term in (
        "401s:",
        "replayed:",
        "failed:",
        "tokens:",
        "ideal:",
        "retried:",
        "hit ratio:",
        "token wait",
    ):
        assert term in text, term
    assert "⌈T / (r·L)⌉" in text
    assert "recovered" not in text  # the old word, never explained
    narrow = "\n".join(_lines(_report(_faulted()), 80))
    assert "retried:" not in narrow  # not in the narrow table, so not explained


def test_the_faults_are_told_in_plain_words() -> None:
    text = _prose(_report(_faulted()))
    assert "At 4.0 s the emulator revoked every token (6 live). 8 calls met a revoked token (401)" in text
    assert "were replayed once with a new one" in text
    assert "At 7.0 s every token endpoint answered 503 for 0.9 s: 12 token requests failed" in text
    assert "Not one of them reached a caller" in text


def test_a_calm_run_says_it_had_no_faults() -> None:
    text = _prose(_report(fleet(), calm=True))
    assert "No faults were injected (--calm)." in text
    assert "emulator revoked" not in text
    assert "answered 503" not in text


def test_plurals() -> None:
    result = _faulted()
    for worker in result.workers:
        for g in worker.groups.values():
            g.recovered_401 = 0
            for row in g.cells:
                row.update(tokens=3, renewals=1)
    result.workers[0].groups["ntxmx"].recovered_401 = 1
    text = _prose(_report(result), 200)
    assert "1 call met a revoked token (401) and was replayed once" in text
    assert "each cell at least 1 time)" in text
    assert not re.search(r"\b1 (calls|times|tokens|cells)\b", text)


def test_the_verdict_line_states_the_bound() -> None:
    text = _prose(_report(fleet()))
    assert "PASS: 400 calls, 0 ended with 401, 0 failed" in text
    assert "no call waited more than 250 ms for its token after warm-up" in text


def test_the_fail_line_names_each_failed_criterion() -> None:
    result = fleet()
    g = result.workers[1].groups["zertiban"]
    g.ok -= 1
    g.unauthorized += 1
    g.token_wait_after_warm_up.add(1.1)
    g.cells[0] = cell(1, "zertiban-1", tokens=1)
    text = _prose(_report(result))
    verdict = text[text.index("FAIL: ") :]
    for name in ("401s:", "every token renewed:", "token wait: max 1,100 ms > 250 ms"):
        assert name in verdict, name
    assert "PASS" not in text


def test_oversubscription_is_noted_without_changing_the_verdict() -> None:
    text = _prose(_report(fleet(), oversubscribed={"workers": 2, "cpus": 1}))
    assert "Note: 2 worker processes on 1 CPU" in text
    assert "PASS:" in text


@pytest.mark.parametrize("width", [120, 80, 40])
def test_an_ascii_stream_gets_ascii(width: int) -> None:
    lines = _lines(_report(_faulted()), width, ascii_only=True)
    assert all(line.isascii() for line in lines)
    text = " ".join(" ".join(lines).split())
    assert "tokenpool demo - 2 workers x 3 tasks" in text
    assert "<= 8 requests" in text
    if width >= 80:
        assert "ceil(T / (r*L))" in text


def test_text_knows_what_an_encoding_can_show() -> None:
    for encoding, ascii_only in (("utf-8", False), ("latin-1", True), ("ascii", True), ("cp1252", True)):
        stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
        assert Text(stream).ascii_only is ascii_only, encoding
    latin = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    Text(latin).write("waiting… ≤ 3 × ⌈x⌉ — a · b", "ünïcode that latin-1 has, ☃ that it has not")
    latin.flush()
    assert latin.buffer.getvalue().decode("latin-1").splitlines() == [
        "waiting... <= 3 x ceil(x) - a * b",
        "ünïcode that latin-1 has, ? that it has not",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _snapshot(worker: int, calls: int, wait: float = 0.0123) -> tuple[Any, ...]:
    return (worker, calls, calls, 0, 5, 0, 12, wait)


@pytest.mark.parametrize("width", [160, 80, 40, 24])
def test_the_progress_line_fits_a_terminal(width: int) -> None:
    out = _Terminal()
    progress = ProgressPrinter("demo", 30.0, out, width=width)
    for second in range(1, 6):
        progress.update(_snapshot(0, 1000 * second))
        progress.update(_snapshot(1, 990 * second))
        progress.render(float(second), force=True)
    progress.note(" 12.0 s  revoked every token at the emulator (21 live): each cell's next call meets a 401")
    progress.render(12.0, force=True)
    progress.finish()
    screens = [part for chunk in out.getvalue().split("\n") for part in chunk.split("\r")]
    assert max(len(part) for part in screens) <= width
    assert "\x1b" not in out.getvalue()
    assert "\r" in out.getvalue()
    last = [part for part in out.getvalue().split("\r") if part.strip()][-1]
    kept = {"12.0/30 s", "calls 9,950"}
    if width >= 160:
        kept |= {"demo:", "token wait max 12.3 ms", "/s)", "token requests 24"}
    if width == 80:
        kept |= {"replayed 10", "401s 0", "failed 0"}
    for field in kept:
        assert field in last, (field, last)


def test_the_progress_in_a_pipe_is_plain_lines() -> None:
    out = io.StringIO()
    progress = ProgressPrinter("demo", 30.0, out, width=80, every=5.0)
    progress.update(_snapshot(0, 10))
    progress.render(0.0)
    progress.render(0.1)  # within `every`: nothing
    progress.note("  4.0 s  revoked every token")
    progress.finish()
    text = out.getvalue()
    assert "\r" not in text
    assert "\x1b" not in text
    assert text.splitlines() == [text.splitlines()[0], "  4.0 s  revoked every token"]
    assert all(len(line) <= 80 for line in text.splitlines())


def test_the_last_progress_line_shows_the_summary_totals() -> None:
    result = _faulted()
    out = io.StringIO()
    progress = ProgressPrinter("demo", 10.0, out, width=200)
    progress.update(_snapshot(0, 17))  # a stale snapshot: the result, not this, is the last word
    progress.finish(result)
    last = out.getvalue().splitlines()[-1]
    total = result.total
    assert f"calls {total.calls:,}" in last
    assert f"401s {total.unauthorized}" in last
    assert f"replayed {total.recovered_401}" in last
    assert f"token requests {total.token_requests}" in last
    summary = _prose(_report(result), 200)
    assert f"Token requests: {total.token_requests} in all" in summary
    total_row = next(line for line in _lines(_report(result), 200) if line.startswith("total"))
    assert f"{total.calls:,}" in total_row
