"""Prometheus series, registered once per registry and shared by every pool using it.

Naming follows Prometheus conventions: ``tokenpool_`` prefix, base units,
``_total`` counters, and one ``provider`` label (plus a small fixed
``outcome``/``reason`` vocabulary).  Provider names come from the pool's own
configuration, so the label set is bounded by what the operator configured.

Hits and misses are *not* incremented per call: a labelled ``inc()`` costs more
than the whole hit path.  Cells count in plain integers; :meth:`PoolMetrics.fold`
adds the deltas to real counters every ``metrics_interval`` seconds and once
more at shutdown.  Real counters (rather than a scrape-time collector) keep
prometheus-client's multiprocess mode working for Celery prefork workers:
the library never sets ``PROMETHEUS_MULTIPROC_DIR`` but behaves when the user
does; gauges carry a ``multiprocess_mode`` chosen per series.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from ._cell import Cell

__all__ = ["FAILURE_REASONS", "OUTCOMES", "REFRESH_BUCKETS", "PoolMetrics"]

#: 5 ms (a loopback token endpoint) to 30 s (a struggling one, two request timeouts).
REFRESH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)

#: Every ``reason`` label value of ``tokenpool_refresh_failures_total`` (see ``_observe.failure_reason``).
FAILURE_REASONS = (
    "credentials_rejected",
    "invalid_response",
    "rate_limited",
    "endpoint_error",
    "timeout",
    "unreachable",
    "other",
)
#: Every ``outcome`` label value of ``tokenpool_refresh_duration_seconds`` (see ``_observe.outcome_of``).
OUTCOMES = ("success", "retryable_failure", "credentials_rejected", "invalid_response")


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
            "Failed token requests since the last success.",
            ["provider"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.backoff = Gauge(
            "tokenpool_refresh_backoff_seconds",
            "Current backoff before the next token request (0 when healthy).",
            ["provider"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.expiry = Gauge(
            "tokenpool_token_expiry_timestamp_seconds",
            "Unix time at which the current token expires.",
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
        self._folded: dict[str, tuple[int, int]] = {}

    def fold(self, cells: Iterable[Cell]) -> None:
        """Add hits and misses counted since the last fold to the counters."""
        for cell in cells:
            hits, misses = cell.hits + cell.foreign_hits, cell.misses
            last_hits, last_misses = self._folded.get(cell.name, (0, 0))
            if hits > last_hits:
                self.series.hits.labels(cell.name).inc(hits - last_hits)
            if misses > last_misses:
                self.series.misses.labels(cell.name).inc(misses - last_misses)
            self._folded[cell.name] = (hits, misses)

    def attempt(self, provider: str) -> None:
        self.series.attempts.labels(provider).inc()

    def refreshed(self, provider: str, duration: float, *, expiry: float) -> None:
        self.series.refresh_duration.labels(provider, "success").observe(duration)
        self.series.expiry.labels(provider).set(expiry)
        self.series.consecutive_failures.labels(provider).set(0)
        self.series.backoff.labels(provider).set(0)

    def failed(
        self, provider: str, duration: float, reason: str, outcome: str, failures: int, delay: float
    ) -> None:
        self.series.refresh_duration.labels(provider, outcome).observe(duration)
        self.series.failures.labels(provider, reason).inc()
        self.series.consecutive_failures.labels(provider).set(failures)
        self.series.backoff.labels(provider).set(delay)

    def waiting(self, provider: str, delta: int) -> None:
        self.series.waiting.labels(provider).inc(delta)

    def downstream_unauthorized(self, provider: str, *, retried: bool) -> None:
        self.series.unauthorized.labels(provider).inc()
        if retried:
            self.series.retries.labels(provider).inc()

    def touch(self, provider: str) -> None:
        """Create every labelled child for *provider* so series exist (as 0) from the start.

        Including one per failure reason and per refresh outcome: a counter
        series born at 1 is no increase to ``rate()``/``increase()``, so the
        first failure of a kind would never show on a dashboard or in an alert.
        """
        s = self.series
        for metric in (s.hits, s.misses, s.attempts, s.unauthorized, s.retries, s.waiting, s.backoff):
            metric.labels(provider)
        s.consecutive_failures.labels(provider)
        for reason in FAILURE_REASONS:
            s.failures.labels(provider, reason)
        for outcome in OUTCOMES:
            s.refresh_duration.labels(provider, outcome)
