"""The demo's verdict: what PASS requires, checked on the fleet's own figures, and its JSON report.

PASS requires every one of these (each failed one is named in the FAIL line):

- **401s**: no call ended with 401 (a 401 the pool replayed successfully is
  not one: the caller got the 2xx);
- **lost calls**: no call failed for any other reason;
- **every provider called**: every provider group made calls in every worker;
- **every token renewed**: every (worker, cell) renewed its token ahead of
  expiry at least once, i.e. fetched at least two tokens besides those that
  replaced a token the API refused with 401;
- **token wait**: no call after warm-up waited longer than the bound
  (:data:`TOKEN_WAIT_BOUND`, 250 ms) in ``await pool.token(name)``.  A call is
  after warm-up when its worker already held a token for its cell when it
  started; the demo's pools fetch every first token before the load starts
  (``warm_up="wait"``), so every call of the load counts;
- **workers**: every worker sent its result, without an error;
- and the run was not interrupted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._faults import fault_effects
from ._results import FleetResult
from ._text import plural

__all__ = ["TOKEN_WAIT_BOUND", "build_report", "judge"]

#: The longest any call after warm-up may wait for its token, in seconds.
TOKEN_WAIT_BOUND = 0.25
_SHOWN = 4  # offenders named per criterion; the rest are counted


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _ms(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms" if value >= 1 else f"{value:.3f} ms"


def judge(result: FleetResult, *, bound: float = TOKEN_WAIT_BOUND) -> list[dict[str, Any]]:
    """Every criterion of the verdict: ``{"name", "passed", "detail"}``, in a fixed order."""
    criteria: list[dict[str, Any]] = []

    def add(name: str, passed: bool, detail: str) -> None:
        criteria.append({"name": name, "passed": bool(passed), "detail": detail})

    total = result.total
    settings = result.settings
    expected_groups: dict[str, Any] = dict(settings.get("providers") or {})
    if not expected_groups:
        expected_groups = {group: {} for group in result.groups}

    add(
        "401s",
        total.unauthorized == 0,
        f"{plural(total.unauthorized, 'call')} of {total.calls:,} ended with 401",
    )
    lost = total.calls - total.ok - total.unauthorized
    kinds = ", ".join(f"{kind}: {n:,}" for kind, n in total.failures.most_common(3))
    add("lost calls", lost == 0, f"{plural(lost, 'call')} failed" + (f" ({kinds})" if kinds else ""))

    silent = [
        f"{group} in worker {worker.index}"
        for worker in result.workers
        for group in expected_groups
        if group not in worker.groups or worker.groups[group].calls == 0
    ]
    if not result.workers or total.calls == 0:
        add("every provider called", False, "no calls were made")
    else:
        add(
            "every provider called",
            not silent,
            f"no calls from {_listed(silent)}"
            if silent
            else f"all {len(expected_groups)} in each of {plural(len(result.workers), 'worker')}",
        )

    unrenewed: list[str] = []
    fewest: int | None = None
    for worker in result.workers:
        for group, info in expected_groups.items():
            rows = list(worker.groups[group].cells) if group in worker.groups else []
            wanted = int((info or {}).get("cells") or len(rows) or 1)
            if len(rows) < wanted:
                missing = plural(wanted - len(rows), "cell")
                unrenewed.append(f"{group} in worker {worker.index} (no figures for {missing})")
            for cell in rows:
                renewals = cell.get("renewals")
                count = int(renewals) if renewals is not None else int(cell["token_requests"]) - 1
                fewest = count if fewest is None else min(fewest, count)
                if count < 1:
                    tokens = int(cell.get("tokens") or cell["token_requests"])
                    unrenewed.append(f"{cell['cell']} in worker {worker.index} ({plural(tokens, 'token')})")
    if not result.workers:
        add("every token renewed", False, "no worker sent figures")
    else:
        add(
            "every token renewed",
            not unrenewed,
            f"no renewal ahead of expiry for {_listed(unrenewed)}"
            if unrenewed
            else f"every cell in every worker at least {plural(fewest or 0, 'time')}",
        )

    wait = total.token_wait_after_warm_up
    warm_up = total.token_wait.count - wait.count
    add(
        "token wait",
        wait.max <= bound,
        f"max {_ms(wait.max)} {'>' if wait.max > bound else '≤'} {_ms(bound)} after warm-up "
        f"(p99 {_ms(wait.percentile(99))}; {plural(wait.count, 'call')} after warm-up, "
        f"{warm_up:,} during it)",
    )

    trouble = list(result.errors)
    if result.missing_workers:
        missing_workers = plural(len(result.missing_workers), "worker")
        trouble.append(f"no result from {missing_workers} {result.missing_workers}")
    add(
        "workers",
        not trouble,
        "; ".join(trouble) if trouble else f"all {len(result.workers)} sent their figures",
    )
    if result.interrupted:
        add("run", False, "interrupted before the end")
    return criteria


def build_report(
    result: FleetResult,
    server: Mapping[str, Any],
    lifetimes: Mapping[str, float],
    *,
    bound: float = TOKEN_WAIT_BOUND,
) -> dict[str, Any]:
    """The demo's JSON: the fleet's own figures, the emulator's counters, the faults and the verdict.

    Args:
        result: What the fleet measured.
        server: The emulator's ``stats()`` after the run (``{}``: it was gone).
        lifetimes: The lifetime (s) the emulator granted each provider group.
        bound: The longest token wait allowed after warm-up, in seconds.
    """
    data = result.to_json()
    server_providers = server.get("providers", {})
    for name, figures in data["providers"].items():
        figures["lifetime_s"] = lifetimes.get(name)
        seen = server_providers.get(name, {})
        figures["emulator"] = {
            "token_requests": seen.get("token_requests"),
            "resource_calls": seen.get("resource_calls"),
            "resource_ok": seen.get("resource_ok"),
            "resource_401": sum((seen.get("resource_401") or {}).values()),
            "token_failures": seen.get("token_failures"),
        }
        rows = result.cells(name)
        figures["min_token_requests_per_worker"] = min(
            (w["token_requests"] for w in figures["token_requests_per_worker"]), default=0
        )
        figures["tokens_per_cell"] = [int(c.get("tokens") or 0) for c in rows]
        figures["ideal_per_cell"] = [int(c["ideal"]) for c in rows]
        renewals = [int(c["renewals"]) for c in rows if c.get("renewals") is not None]
        figures["min_renewals_per_cell"] = min(renewals, default=None)
        figures["retried_token_requests"] = sum(
            max(0, int(c["token_requests"]) - int(c.get("tokens") or c["token_requests"])) for c in rows
        )
    criteria = judge(result, bound=bound)
    data["token_wait_bound_ms"] = round(bound * 1e3, 3)
    data["criteria"] = criteria
    data["problems"] = [f"{c['name']}: {c['detail']}" for c in criteria if not c["passed"]]
    data["passed"] = all(c["passed"] for c in criteria)
    data["faults"] = fault_effects(result, server)
    return data
