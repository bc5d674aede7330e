"""Fleet results built by hand, the way the workers build them, for the demo's pure tests."""

from __future__ import annotations

from typing import Any

from tokenpool.loadtest import FleetResult, GroupResult, WorkerResult

__all__ = ["CELLS", "cell", "fleet", "group"]

#: Provider group → cells per worker (Zertiban has one per tenant).
CELLS = {"ntxmx": 1, "zertiban": 2}


def cell(
    worker: int, name: str, *, tokens: int = 3, replaced: int = 0, requests: int | None = None
) -> dict[str, Any]:
    """One (worker, cell) row: *tokens* arrived, *replaced* of them after a 401, *requests* sent."""
    return {
        "worker": worker,
        "cell": name,
        "token_requests": tokens if requests is None else requests,
        "tokens": tokens,
        "replaced": replaced,
        "renewals": max(0, tokens - 1 - replaced) if tokens else None,
        "ideal": 3,
        "hits": 100,
        "misses": 0,
        "requests_at": [],
        "refreshed_at": [],
        "lifetimes_at": [],
    }


def group(worker: int, name: str, *, calls: int = 100, wait: float = 1e-5) -> GroupResult:
    """One provider group's figures in one worker: *calls* calls, each waiting *wait* s for its token."""
    g = GroupResult(calls=calls, ok=calls)
    for _ in range(calls):
        g.token_wait.add(wait)
        g.token_wait_after_warm_up.add(wait)
        g.latency.add(0.02)
    names = [name] if CELLS[name] == 1 else [f"{name}-{i}" for i in range(1, CELLS[name] + 1)]
    g.cells = [cell(worker, n) for n in names]
    return g


def fleet(workers: int = 2, **overrides: Any) -> FleetResult:
    """A clean run of *workers* workers over :data:`CELLS` (``FleetResult`` fields in *overrides*)."""
    results = [
        WorkerResult(index=i, pid=1000 + i, strategy="tokenpool", load_seconds=10.0, groups={})
        for i in range(workers)
    ]
    for worker in results:
        worker.groups = {name: group(worker.index, name) for name in CELLS}
    settings = {
        "workers": workers,
        "tasks_per_provider": 3,
        "duration_s": 10.0,
        "max_in_flight_per_worker": 8,
        "http2": True,
        "tls": True,
        "providers": {name: {"cells": n, "lifetime_s": 4.0} for name, n in CELLS.items()},
        "refresh_ratio": 0.8,
    }
    fields: dict[str, Any] = {
        "strategy": "tokenpool",
        "settings": settings,
        "workers": results,
        "duration": 10.0,
    }
    fields.update(overrides)
    return FleetResult(**fields)
