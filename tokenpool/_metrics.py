"""Prometheus series, registered once per registry and shared by every pool using it.

Naming follows Prometheus conventions: ``tokenpool_`` prefix, base units,
``_total`` counters, and one ``provider`` label (plus a small fixed
``outcome``/``reason`` vocabulary).

**The label value is a group, not necessarily a name.**  A pool with thousands
of tenants (one cell each) would multiply every series by thousands if each
name were a label value, which Prometheus users avoid.  So the ``provider``
label carries the cell's *group*: by default the adapter's kind
(``zertiban``, ``ntxpay_mx``, ``client_credentials``…), or the pool's name for
the provider with ``TokenPool(metrics_label="name")``, or whatever a callable
``metrics_label(name, provider)`` returns.  Series exist per group, not per
cell, so an idle cell costs nothing here.

Hits and misses are *not* incremented per call: a labelled ``inc()`` costs more
than the whole hit path.  Cells count in plain integers; :meth:`PoolMetrics.fold`
adds what changed to real counters every ``metrics_interval`` seconds and once
more at shutdown, and recomputes the gauges of groups that had an event
(refresh, failure) since the last fold.  Real counters (rather than a
scrape-time collector) keep prometheus-client's multiprocess mode working for
Celery prefork workers: the library never sets ``PROMETHEUS_MULTIPROC_DIR`` but
behaves when the user does; gauges carry a ``multiprocess_mode`` chosen per
series.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from ._cell_state import CellState

__all__ = ["FAILURE_REASONS", "LABEL_MODES", "OUTCOMES", "REFRESH_BUCKETS", "STORE_OUTCOMES", "PoolMetrics"]

#: 5 ms (a loopback token endpoint) to 30 s (a struggling one, two request timeouts).
REFRESH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)

#: Every ``reason`` label value of ``tokenpool_refresh_failures_total`` (see ``_observe.failure_reason``).
FAILURE_REASONS = (
    "credentials_rejected",
    "invalid_response",
    "rate_limited",
    "endpoint_error",
    "timeout",
    "tls",
    "unreachable",
    "adapter_error",
    "other",
)
#: Every ``outcome`` label value of ``tokenpool_refresh_duration_seconds`` (see ``_observe.outcome_of``).
OUTCOMES = ("success", "retryable_failure", "credentials_rejected", "invalid_response")
#: Every ``outcome`` label value of ``tokenpool_store_operations_total`` (the fleet store).
STORE_OUTCOMES = (
    "read",
    "hit",
    "lease_won",
    "lease_wait",
    "published",
    "fenced",
    "fallback",
    "deferred",
    "error",
    "recovered",
)
#: Every value of ``TokenPool(metrics_label=...)`` besides a callable.
LABEL_MODES = ("kind", "name")


class _Series:
    """The metric objects themselves; one instance per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hits = Counter(
            "tokenpool_cache_hits",
            "Token requests served from the cell without waiting.",
            ["provider"],
            registry=registry,
        )
        self.misses = Counter(
            "tokenpool_cache_misses",
            "Token requests that had to wait for a token request to complete.",
            ["provider"],
            registry=registry,
        )
        self.refresh_duration = Histogram(
            "tokenpool_refresh_duration_seconds",
            "Duration of token requests by outcome.",
            ["provider", "outcome"],
            buckets=REFRESH_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "tokenpool_refresh_attempts",
            "Token requests sent to the token endpoint.",
            ["provider"],
            registry=registry,
        )
        self.failures = Counter(
            "tokenpool_refresh_failures",
            "Failed token requests by reason.",
            ["provider", "reason"],
            registry=registry,
        )
        self.consecutive_failures = Gauge(
            "tokenpool_refresh_consecutive_failures",
            "Most failed token requests since the last success, over the group's cells.",
            ["provider"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.backoff = Gauge(
            "tokenpool_refresh_backoff_seconds",
            "Longest current backoff before a next token request in the group (0 when healthy).",
            ["provider"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.expiry = Gauge(
            "tokenpool_token_expiry_timestamp_seconds",
            "Unix time at which the group's soonest-expiring token expires.",
            ["provider"],
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.waiting = Gauge(
            "tokenpool_waiting_callers",
            "Callers currently waiting for a token.",
            ["provider"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.unauthorized = Counter(
            "tokenpool_downstream_unauthorized",
            "API responses with status 401 seen by tokenpool's httpx auth.",
            ["provider"],
            registry=registry,
        )
        self.retries = Counter(
            "tokenpool_downstream_retries",
            "API requests replayed with a fresh token after a 401.",
            ["provider"],
            registry=registry,
        )
        self.store = Counter(
            "tokenpool_store_operations",
            "Fleet store events by outcome (reads, shared-token hits, leases, fallbacks, errors).",
            ["provider", "outcome"],
            registry=registry,
        )


_series_lock = threading.Lock()
_series_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Series] = weakref.WeakKeyDictionary()


def _series_for(registry: CollectorRegistry) -> _Series:
    with _series_lock:
        series = _series_by_registry.get(registry)
        if series is None:
            series = _series_by_registry[registry] = _Series(registry)
        return series


class PoolMetrics:
    """One pool's view of the shared series.

    Args:
        registry: Where to register (default: prometheus-client's global
            ``REGISTRY``).  Several pools may share a registry; series are
            registered once.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.series = _series_for(self.registry)
        self._touched: set[str] = set()
        #: Groups whose gauges must be recomputed at the next fold.
        self._dirty: set[str] = set()
        #: Per group, the cells failing right now (name → consecutive failures).
        self._failing: dict[str, dict[str, int]] = {}
        #: Per group, the gauges' values set since the last fold (failures, backoff).
        self._peaks: dict[str, tuple[int, float]] = {}
        #: The pool has a fleet store: its series are created (as 0) too.
        self.with_store = False

    def fold(self, cells: Iterable[CellState], now: float = math.nan) -> None:
        """Add hits and misses counted since the last fold; recompute the gauges of changed groups.

        One pass over the cells, comparing two integers each: an idle cell
        costs a few tens of nanoseconds per fold and no Prometheus call.
        *now* is the pool's clock (for backoff and expiry); without it the
        gauges are left alone.
        """
        hits: dict[str, int] = {}
        misses: dict[str, int] = {}
        dirty, self._dirty = self._dirty, set()
        if math.isnan(now):
            dirty = set()
        failures: dict[str, int] = dict.fromkeys(dirty, 0)
        backoff: dict[str, float] = dict.fromkeys(dirty, 0.0)
        expiry: dict[str, float] = {}
        for cell in cells:
            h = cell.hits + cell.foreign_hits
            m = cell.misses
            if h != cell.folded_hits or m != cell.folded_misses:
                group = cell.group
                hits[group] = hits.get(group, 0) + h - cell.folded_hits
                misses[group] = misses.get(group, 0) + m - cell.folded_misses
                cell.folded_hits, cell.folded_misses = h, m
            if dirty and cell.group in dirty:
                group = cell.group
                failures[group] = max(failures[group], cell.failures)
                backoff[group] = max(backoff[group], cell.retry_at - now)
                token = cell.token
                if token is not None:
                    expiry[group] = min(expiry.get(group, math.inf), token.expires_at)
        s = self.series
        for group, delta in hits.items():
            if delta > 0:
                s.hits.labels(group).inc(delta)
        for group, delta in misses.items():
            if delta > 0:
                s.misses.labels(group).inc(delta)
        if dirty:
            wall = time.time() - now
            for group in dirty:
                s.consecutive_failures.labels(group).set(failures[group])
                s.backoff.labels(group).set(max(0.0, backoff[group]))
                self._peaks.pop(group, None)
                if group in expiry:
                    s.expiry.labels(group).set(wall + expiry[group])

    def attempt(self, group: str) -> None:
        self.series.attempts.labels(group).inc()

    def refreshed(self, group: str, name: str, duration: float) -> None:
        self.series.refresh_duration.labels(group, "success").observe(duration)
        self._dirty.add(group)  # the expiry gauge: recomputed at the next fold
        failing = self._failing.get(group)
        if failing is not None and failing.pop(name, None) is not None and not failing:
            # The group's last failing cell recovered: healthy at once, not at the next fold.
            del self._failing[group]
            self._peaks.pop(group, None)
            self.series.consecutive_failures.labels(group).set(0)
            self.series.backoff.labels(group).set(0)

    def failed(
        self, group: str, name: str, duration: float, reason: str, outcome: str, failures: int, delay: float
    ) -> None:
        s = self.series
        s.refresh_duration.labels(group, outcome).observe(duration)
        s.failures.labels(group, reason).inc()
        self._dirty.add(group)
        self._failing.setdefault(group, {})[name] = failures
        # Gauges rise at once (an alert must not wait for the fold); they fall
        # to the exact maximum over the group's cells at the next fold.
        peak_failures, peak_delay = self._peaks.get(group, (0, 0.0))
        peak = (max(peak_failures, failures), max(peak_delay, delay))
        self._peaks[group] = peak
        s.consecutive_failures.labels(group).set(peak[0])
        s.backoff.labels(group).set(peak[1])

    def store_event(self, group: str, outcome: str) -> None:
        self.series.store.labels(group, outcome).inc()

    def waiting(self, group: str, delta: int) -> None:
        self.series.waiting.labels(group).inc(delta)

    def downstream_unauthorized(self, group: str, *, retried: bool) -> None:
        self.series.unauthorized.labels(group).inc()
        if retried:
            self.series.retries.labels(group).inc()

    def touch_all(self, groups: Iterable[str]) -> None:
        """:meth:`touch` each of *groups* (thread-safe: the pool calls it from a worker thread)."""
        for group in groups:
            self.touch(group)

    def touch(self, group: str) -> None:
        """Create every labelled child for *group* so series exist (as 0) from the start.

        Including one per failure reason and per refresh outcome: a counter
        series born at 1 is no increase to ``rate()``/``increase()``, so the
        first failure of a kind would never show on a dashboard or in an alert.
        Once per group, not per cell.
        """
        with _series_lock:
            if group in self._touched:
                return
            self._touched.add(group)
        s = self.series
        for metric in (s.hits, s.misses, s.attempts, s.unauthorized, s.retries, s.waiting, s.backoff):
            metric.labels(group)
        s.consecutive_failures.labels(group)
        for reason in FAILURE_REASONS:
            s.failures.labels(group, reason)
        for outcome in OUTCOMES:
            s.refresh_duration.labels(group, outcome)
        if self.with_store:
            for outcome in STORE_OUTCOMES:
                s.store.labels(group, outcome)
