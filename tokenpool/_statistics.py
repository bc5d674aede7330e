"""Snapshots of a pool's cells: counters, schedule and last error, never a token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._cell_state import CellState

__all__ = ["CellStatistics", "PoolStatistics", "statistics_of"]


@dataclass(frozen=True, slots=True)
class CellStatistics:
    """A snapshot of one provider's cell (see :meth:`TokenPool.statistics`)."""

    name: str
    kind: str
    hits: int
    misses: int
    token_requests: int
    waiting: int
    refreshing: bool
    consecutive_failures: int
    has_token: bool
    seconds_until_refresh: float | None
    seconds_until_expiry: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a whole pool."""

    cells: Mapping[str, CellStatistics]

    @property
    def hits(self) -> int:
        return sum(c.hits for c in self.cells.values())

    @property
    def misses(self) -> int:
        return sum(c.misses for c in self.cells.values())

    @property
    def token_requests(self) -> int:
        return sum(c.token_requests for c in self.cells.values())


def statistics_of(cells: Mapping[str, CellState], now: float) -> PoolStatistics:
    """The snapshot of *cells* (the pool's, by name) at instant *now* of the pool's clock."""
    snapshots = {}
    for name, cell in cells.items():
        token = cell.token
        snapshots[name] = CellStatistics(
            name=name,
            kind=cell.provider.kind,
            hits=cell.hits + cell.foreign_hits,
            misses=cell.misses,
            token_requests=cell.requests,
            waiting=cell.waiting,
            refreshing=cell.refreshing,
            consecutive_failures=cell.failures,
            has_token=token is not None and now < token.usable_until,
            seconds_until_refresh=None if token is None else token.refresh_at - now,
            seconds_until_expiry=None if token is None else token.expires_at - now,
            last_error=None if cell.last_error is None else str(cell.last_error),
        )
    return PoolStatistics(cells=snapshots)
