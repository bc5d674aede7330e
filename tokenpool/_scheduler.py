"""One timer for all of a pool's cells: a heap of due instants.

A task per cell would cost a coroutine frame, a task object and an event per
idle cell (kilobytes each at 10,000 tenants).  Instead each cell tells the
scheduler when it is due (:meth:`Scheduler.push`), and a single task sleeps
until the earliest instant, then launches the due cells' attempts.  Entries
are never removed from the heap: one whose instant no longer matches its
cell's ``due`` is stale and skipped when it comes up.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._cell import Cell
    from ._clock import Clock

__all__ = ["Scheduler"]


class Scheduler:
    """Wakes cells when they are due and starts their attempts in the pool's task group."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Cell]] = []
        # Tie-breaker, so that cells themselves are never compared.
        self._order = itertools.count()
        self._next = math.inf
        self._wake: anyio.Event | None = None

    def push(self, cell: Cell) -> None:
        """Note that *cell* is due at ``cell.due``; wake the loop if that is earlier than its timer."""
        heapq.heappush(self._heap, (cell.due, next(self._order), cell))
        if cell.due < self._next and self._wake is not None:
            self._wake.set()

    async def run(self, group: TaskGroup) -> None:
        """Launch due cells into *group*, forever (until cancelled with the group)."""
        heap = self._heap
        while True:
            now = self._clock.now()
            while heap and heap[0][0] <= now:
                due, _, cell = heapq.heappop(heap)
                if cell.due == due and not cell.sending:
                    cell.launch(group)
            self._next = heap[0][0] if heap else math.inf
            self._wake = anyio.Event()
            await self._clock.wait(self._wake, self._next)
