"""Clocks: the real monotonic one, and a manual one that tests move by hand."""

from __future__ import annotations

import math
import time
from typing import Protocol

import anyio
import anyio.lowlevel

__all__ = ["Clock", "ManualClock", "MonotonicClock"]


class Clock(Protocol):
    """Where a pool reads the time and waits for it.

    ``wait(event, deadline)`` returns when *event* is set or the clock reaches
    *deadline*, whichever comes first (``math.inf`` means no deadline).
    """

    def now(self) -> float: ...

    async def wait(self, event: anyio.Event, deadline: float) -> None: ...


class MonotonicClock:
    """``time.monotonic()`` and the event loop's own timers."""

    __slots__ = ()

    now = staticmethod(time.monotonic)

    async def wait(self, event: anyio.Event, deadline: float) -> None:
        if math.isinf(deadline):
            await event.wait()
            return
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            await event.wait()


class ManualClock:
    """A clock that only moves when told to; for deterministic tests.

    ``advance()`` wakes every waiter whose deadline has passed.  Follow it
    with ``await anyio.wait_all_tasks_blocked()`` to let them run.

    Args:
        start: The initial reading.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, anyio.CancelScope]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by *seconds* and wake the waiters that are due."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.set(self._now + seconds)

    def set(self, when: float) -> None:
        """Move the clock to *when* (not backwards) and wake the waiters that are due."""
        if when < self._now:
            raise ValueError("time only moves forward")
        self._now = when
        due = [entry for entry in self._sleepers if entry[0] <= when]
        self._sleepers = [entry for entry in self._sleepers if entry[0] > when]
        for _, scope in due:
            scope.cancel()

    def next_deadline(self) -> float:
        """The earliest deadline anyone is waiting for (``inf`` if none)."""
        return min((deadline for deadline, _ in self._sleepers), default=math.inf)

    async def wait(self, event: anyio.Event, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        with anyio.CancelScope() as scope:
            entry = (deadline, scope)
            self._sleepers.append(entry)
            try:
                await event.wait()
            finally:
                if entry in self._sleepers:
                    self._sleepers.remove(entry)
