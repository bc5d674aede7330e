"""The demo's verdict on constructed fleet results: each criterion passes and fails on its own.

Pure code: no emulator, no worker process.  The results are built the way the
workers build them (``GroupResult`` per provider group, one row per cell).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from _demo_results import CELLS, cell, fleet, group

from tokenpool.loadtest import TOKEN_WAIT_BOUND, FleetResult, GroupResult, Histogram, build_report


def _report(result: FleetResult) -> dict[str, Any]:
    return build_report(result, {}, dict.fromkeys(CELLS, 4))


def _failed(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in report["criteria"] if not c["passed"]}


def test_a_clean_run_passes_every_criterion() -> None:
    report = _report(fleet())
    assert report["passed"] is True
    assert [c["name"] for c in report["criteria"]] == [
        "401s",
        "lost calls",
        "every provider called",
        "every token renewed",
        "token wait",
        "workers",
    ]
    assert _failed(report) == {}
    assert report["token_wait_bound_ms"] == TOKEN_WAIT_BOUND * 1e3 == 250


def test_a_401_that_reached_a_caller_fails_only_the_401_criterion() -> None:
    result = fleet()
    g = result.workers[1].groups["ntxmx"]
    g.ok -= 1
    g.unauthorized += 1
    failed = _failed(_report(result))
    assert set(failed) == {"401s"}
    assert failed["401s"].startswith("1 call of 400 ended with 401")


def test_a_401_the_pool_replayed_is_not_a_failure() -> None:
    result = fleet()
    result.workers[0].groups["zertiban"].recovered_401 = 7
    assert _report(result)["passed"] is True


def test_a_lost_call_fails() -> None:
    result = fleet()
    g = result.workers[0].groups["zertiban"]
    g.ok -= 2
    g.failures = Counter({"http_503": 2})
    failed = _failed(_report(result))
    assert set(failed) == {"lost calls"}
    assert failed["lost calls"] == "2 calls failed (http_503: 2)"


def test_a_provider_that_made_no_calls_in_one_worker_fails() -> None:
    result = fleet(workers=3)
    del result.workers[2].groups["ntxmx"]
    failed = _failed(_report(result))
    assert "every provider called" in failed
    assert "ntxmx in worker 2" in failed["every provider called"]


def test_a_group_with_zero_calls_counts_as_not_called() -> None:
    result = fleet()
    result.workers[0].groups["zertiban"] = GroupResult(cells=group(0, "zertiban").cells)
    assert "zertiban in worker 0" in _failed(_report(result))["every provider called"]


def test_no_calls_at_all_fails() -> None:
    result = fleet()
    for worker in result.workers:
        for g in worker.groups.values():
            g.calls = g.ok = 0
    assert _failed(_report(result))["every provider called"] == "no calls were made"


def test_a_cell_that_never_renewed_fails() -> None:
    result = fleet()
    result.workers[1].groups["zertiban"].cells[1] = cell(1, "zertiban-2", tokens=1)
    failed = _failed(_report(result))
    assert set(failed) == {"every token renewed"}
    assert "zertiban-2 in worker 1 (1 token)" in failed["every token renewed"]


def test_a_replacement_after_a_401_is_not_a_renewal() -> None:
    # Two tokens, but the second replaced the first after a 401: no renewal ahead of expiry.
    result = fleet()
    result.workers[0].groups["ntxmx"].cells[0] = cell(0, "ntxmx", tokens=2, replaced=1)
    assert "ntxmx in worker 0" in _failed(_report(result))["every token renewed"]


def test_failed_token_requests_are_not_renewals() -> None:
    # Five token requests, one token: four failed attempts renew nothing.
    result = fleet()
    result.workers[0].groups["ntxmx"].cells[0] = cell(0, "ntxmx", tokens=1, requests=5)
    assert "ntxmx in worker 0" in _failed(_report(result))["every token renewed"]


def test_without_token_counts_two_token_requests_mean_a_renewal() -> None:
    # A strategy that reports no arrivals (a peer): token requests per cell >= 2.
    result = fleet()
    for worker in result.workers:
        for g in worker.groups.values():
            for row in g.cells:
                row.update(tokens=0, renewals=None, token_requests=2)
    assert _report(result)["passed"] is True
    result.workers[0].groups["ntxmx"].cells[0]["token_requests"] = 1
    assert "ntxmx in worker 0" in _failed(_report(result))["every token renewed"]


def test_a_worker_without_figures_for_a_cell_fails() -> None:
    result = fleet()
    result.workers[0].groups["zertiban"].cells.pop()
    assert "no figures for 1 cell" in _failed(_report(result))["every token renewed"]


@pytest.mark.parametrize(("wait", "passed"), [(0.249, True), (0.25, True), (0.251, False), (1.1, False)])
def test_token_wait_after_warm_up_is_judged_against_the_bound(wait: float, passed: bool) -> None:
    result = fleet()
    result.workers[1].groups["ntxmx"].token_wait.add(wait)
    result.workers[1].groups["ntxmx"].token_wait_after_warm_up.add(wait)
    failed = _failed(_report(result))
    assert ("token wait" not in failed) is passed
    if not passed:
        assert "> 250 ms after warm-up" in failed["token wait"]


def test_a_long_wait_during_warm_up_is_not_judged() -> None:
    result = fleet()
    result.workers[0].groups["ntxmx"].token_wait.add(2.0)  # before the worker held the cell's first token
    report = _report(result)
    assert report["passed"] is True
    detail = next(c["detail"] for c in report["criteria"] if c["name"] == "token wait")
    assert "1 during it" in detail


def test_the_bound_can_be_chosen() -> None:
    result = fleet()
    result.workers[0].groups["ntxmx"].token_wait_after_warm_up.add(0.05)
    report = build_report(result, {}, {}, bound=0.01)
    assert "token wait" in _failed(report)
    assert report["token_wait_bound_ms"] == 10


def test_worker_errors_and_missing_workers_fail() -> None:
    result = fleet(missing_workers=[2])
    result.workers[0].error = "RuntimeError: boom"
    failed = _failed(_report(result))
    assert set(failed) == {"workers"}
    assert "worker 0: RuntimeError: boom" in failed["workers"]
    assert "no result from 1 worker [2]" in failed["workers"]


def test_an_interrupted_run_does_not_pass() -> None:
    report = _report(fleet(interrupted=True))
    assert report["passed"] is False
    assert "run" in _failed(report)


def test_every_failed_criterion_is_listed_in_the_problems() -> None:
    result = fleet()
    g = result.workers[0].groups["ntxmx"]
    g.ok -= 1
    g.unauthorized += 1
    g.token_wait_after_warm_up.add(0.5)
    g.cells[0] = cell(0, "ntxmx", tokens=1)
    report = _report(result)
    names = [problem.split(":", 1)[0] for problem in report["problems"]]
    assert names == ["401s", "every token renewed", "token wait"]


def test_histograms_merge_the_after_warm_up_waits() -> None:
    a, b = GroupResult(), GroupResult()
    a.token_wait_after_warm_up.add(0.1)
    b.token_wait_after_warm_up.add(0.3)
    a.merge(b)
    assert a.token_wait_after_warm_up.count == 2
    assert a.token_wait_after_warm_up.max == 0.3
    assert isinstance(a.token_wait_after_warm_up, Histogram)
