"""What a fleet run measured: per group, per worker, merged over the fleet, and its JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._histogram import Histogram

__all__ = ["FleetResult", "GroupResult", "WorkerResult"]


@dataclass
class GroupResult:
    """One provider group's figures (all its cells), from one worker or merged."""

    calls: int = 0
    ok: int = 0
    unauthorized: int = 0
    recovered_401: int = 0
    #: Calls sent again after the server's graceful HTTP/2 GOAWAY had refused their stream.
    goaway_resends: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    #: Time in the strategy's token step (``await pool.token(name)``) before each call.
    token_wait: Histogram = field(default_factory=Histogram)
    #: The same, for the calls that started once the worker held a token for their cell (the
    #: warm-up is everything before: with ``warm_up="wait"`` the pool fetched it before the load).
    token_wait_after_warm_up: Histogram = field(default_factory=Histogram)
    latency: Histogram = field(default_factory=Histogram)
    overhead: Histogram = field(default_factory=Histogram)
    refresh_latency: Histogram = field(default_factory=Histogram)
    #: Offsets (s from the start of the load) of responses that were 401, first attempts included.
    unauthorized_at: list[float] = field(default_factory=list)
    #: Offsets of failed calls (anything but a 2xx in the end).
    failed_at: list[float] = field(default_factory=list)
    #: Offsets of token requests.
    token_requests_at: list[float] = field(default_factory=list)
    #: Per (worker, cell): token requests, tokens fetched, renewals, ideal, hits, misses.
    cells: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def token_requests(self) -> int:
        return sum(int(c["token_requests"]) for c in self.cells)

    @property
    def ideal(self) -> int:
        return sum(int(c["ideal"]) for c in self.cells)

    @property
    def hits(self) -> int:
        return sum(int(c.get("hits") or 0) for c in self.cells)

    @property
    def misses(self) -> int:
        return sum(int(c.get("misses") or 0) for c in self.cells)

    @property
    def hit_ratio(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total and any("hits" in c for c in self.cells) else None

    def merge(self, other: GroupResult) -> None:
        self.calls += other.calls
        self.ok += other.ok
        self.unauthorized += other.unauthorized
        self.recovered_401 += other.recovered_401
        self.goaway_resends += other.goaway_resends
        self.failures.update(other.failures)
        self.token_wait.merge(other.token_wait)
        self.token_wait_after_warm_up.merge(other.token_wait_after_warm_up)
        self.latency.merge(other.latency)
        self.overhead.merge(other.overhead)
        self.refresh_latency.merge(other.refresh_latency)
        self.unauthorized_at.extend(other.unauthorized_at)
        self.failed_at.extend(other.failed_at)
        self.token_requests_at.extend(other.token_requests_at)
        self.cells.extend(other.cells)


@dataclass
class WorkerResult:
    """Everything one worker measured."""

    index: int
    pid: int
    strategy: str
    load_seconds: float = 0.0
    groups: dict[str, GroupResult] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    control: list[str] = field(default_factory=list)
    #: Fleet-store outcomes per provider (``{provider: {outcome: count}}``), from the pool's metrics.
    store: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class FleetResult:
    """The merged outcome of one fleet run."""

    strategy: str
    settings: dict[str, Any]
    workers: list[WorkerResult]
    duration: float
    interrupted: bool = False
    missing_workers: list[int] = field(default_factory=list)
    #: Workers a scenario killed on purpose (``{"worker", "pid", "at", "reason", "exitcode"}``):
    #: their results are missing by design; not errors, not missing workers.
    killed_workers: list[dict[str, Any]] = field(default_factory=list)
    #: Monotonic instant of the start of the load (offsets in the result count from here).
    started: float = 0.0
    notes: list[dict[str, Any]] = field(default_factory=list)
    replies: dict[str, list[str]] = field(default_factory=dict)

    @property
    def groups(self) -> dict[str, GroupResult]:
        merged: dict[str, GroupResult] = {}
        for worker in self.workers:
            for name, group in worker.groups.items():
                merged.setdefault(name, GroupResult()).merge(group)
        return merged

    @property
    def total(self) -> GroupResult:
        total = GroupResult()
        for group in self.groups.values():
            total.merge(group)
        return total

    @property
    def lost_calls(self) -> int:
        """Calls that did not end in a 2xx (401s included)."""
        total = self.total
        return total.calls - total.ok

    @property
    def errors(self) -> list[str]:
        return [f"worker {w.index}: {w.error}" for w in self.workers if w.error]

    def per_worker(self, group: str) -> list[tuple[int, int, int]]:
        """``(worker, token requests, ideal)`` for *group*, one row per worker."""
        rows = []
        for worker in self.workers:
            g = worker.groups.get(group)
            if g is not None:
                rows.append((worker.index, g.token_requests, g.ideal))
        return rows

    def calls_per_worker(self, group: str) -> dict[int, int]:
        """Calls of *group* made by each worker that sent a result (0: the group made none there)."""
        return {w.index: (w.groups[group].calls if group in w.groups else 0) for w in self.workers}

    def to_json(self) -> dict[str, Any]:
        groups = self.groups
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "settings": self.settings,
            "duration_s": round(self.duration, 3),
            "interrupted": self.interrupted,
            "missing_workers": self.missing_workers,
            "killed_workers": self.killed_workers,
            "errors": self.errors,
            "providers": {
                name: _group_json(g, self.duration, self.per_worker(name), self.calls_per_worker(name))
                for name, g in groups.items()
            },
            "total": _group_json(self.total, self.duration, [], {}),
            "lost_calls": self.lost_calls,
            "events": _sum_counters(w.events for w in self.workers),
            "control": [c for w in self.workers for c in w.control],
            "notes": self.notes,
            "store": self.store,
        }
        return out

    @property
    def store(self) -> dict[str, dict[str, int]]:
        """Fleet-store outcomes summed over the workers: ``{provider: {outcome: count}}``."""
        merged: dict[str, Counter[str]] = {}
        for worker in self.workers:
            for provider, counts in worker.store.items():
                merged.setdefault(provider, Counter()).update(counts)
        return {provider: dict(sorted(counts.items())) for provider, counts in sorted(merged.items())}

    def cells(self, group: str | None = None) -> list[dict[str, Any]]:
        """Every (worker, cell) row, optionally of one group."""
        return [cell for name, g in self.groups.items() if group is None or name == group for cell in g.cells]


def _sum_counters(items: Iterator[dict[str, int]] | Sequence[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for item in items:
        total.update(item)
    return dict(sorted(total.items()))


def _group_json(
    g: GroupResult, duration: float, per_worker: list[tuple[int, int, int]], calls: dict[int, int]
) -> dict[str, Any]:
    hit_ratio = g.hit_ratio
    return {
        "calls": g.calls,
        "ok": g.ok,
        "unauthorized": g.unauthorized,
        "recovered_401": g.recovered_401,
        "goaway_resends": g.goaway_resends,
        "failed": g.failed,
        "failures": dict(g.failures),
        "calls_per_s": round(g.calls / duration, 1) if duration > 0 else 0.0,
        "token_requests": g.token_requests,
        "ideal_token_requests": g.ideal,
        "token_requests_per_worker": [
            {"worker": w, "token_requests": n, "ideal": i, "calls": calls.get(w, 0)} for w, n, i in per_worker
        ],
        "tokens": sum(int(c.get("tokens") or 0) for c in g.cells),
        "cells": len(g.cells),
        "hit_ratio": None if hit_ratio is None else round(hit_ratio, 6),
        "token_wait": g.token_wait.summary(),
        "token_wait_after_warm_up": g.token_wait_after_warm_up.summary(),
        "latency": g.latency.summary(),
        "auth_overhead": g.overhead.summary(),
        "refresh_latency": g.refresh_latency.summary(),
    }
