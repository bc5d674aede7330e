"""Histograms: log-bucketed, mergeable, picklable (what workers ship instead of raw samples)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Histogram"]

_FLOOR = 1e-7  # 0.1 µs: anything below is bucket 0
_GROWTH = math.log(1.02)  # 2 % wide buckets, so percentiles are within 2 %


@dataclass
class Histogram:
    """Durations in seconds, in 2 %-wide logarithmic buckets; exact count, sum and max.

    Workers ship these to the parent instead of raw samples; they merge by adding.
    """

    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def add(self, value: float) -> None:
        index = 0 if value <= _FLOOR else 1 + int(math.log(value / _FLOOR) / _GROWTH)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float:
        """The *p*-th percentile (0–100); the geometric middle of its bucket, never above the max."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                if index == 0:
                    return 0.0
                middle = _FLOOR * math.exp((index - 0.5) * _GROWTH)
                return min(middle, self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary(self) -> dict[str, float]:
        """p50/p99/max/mean in milliseconds (for JSON)."""
        return {
            "count": self.count,
            "p50_ms": round(self.percentile(50) * 1e3, 4),
            "p99_ms": round(self.percentile(99) * 1e3, 4),
            "max_ms": round(self.max * 1e3, 4),
            "mean_ms": round(self.mean * 1e3, 4),
        }
