"""The parent side of a running fleet: what scenario actions can do, and when they run."""

from __future__ import annotations

import bisect
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["Action", "FleetController"]


class FleetController:
    """What scenario actions can do while a fleet runs (in the parent process).

    Actions run on the parent's loop, between reads of the workers' pipes, so
    they should be quick; one that needs to wait for something (a key in
    Redis, a worker's reply) schedules a follow-up with :meth:`at` instead of
    sleeping.
    """

    def __init__(self, conns: dict[int, Connection], procs: Mapping[int, BaseProcess] | None = None) -> None:
        self._conns = conns
        self._procs: Mapping[int, BaseProcess] = procs if procs is not None else {}
        self._next = 0
        self.replies: dict[int, list[str]] = {}
        self.started = 0.0
        #: Next renewal of each (worker, cell), as offsets from the start of the load (when known).
        self.refresh_at: dict[tuple[int, str], float] = {}
        self._schedules: dict[int, dict[str, float]] = {}
        #: Notes the actions leave for the report (fault windows…).
        self.notes: list[dict[str, Any]] = []
        #: Workers killed on purpose by an action, by index: ``{"worker", "pid", "at", "reason"}``.
        self.killed: dict[int, dict[str, Any]] = {}
        self._pending: list[tuple[float, int, Callable[[FleetController], None]]] = []
        self._order = itertools.count()

    def next_refresh(self, cells: Callable[[str], bool] | None = None) -> list[float]:
        """Sorted offsets of the cells' first renewals after the start (``cells`` filters by name)."""
        return sorted(t for (_, name), t in self.refresh_at.items() if cells is None or cells(name))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def pids(self) -> dict[int, int]:
        """Process id of every worker that was started, by index."""
        return {index: proc.pid for index, proc in self._procs.items() if proc.pid is not None}

    def worker_of(self, pid: int) -> int | None:
        """The index of the worker with process id *pid* (``None``: not one of this fleet's workers)."""
        return next((index for index, p in self.pids.items() if p == pid), None)

    def at(self, offset: float, action: Callable[[FleetController], None]) -> None:
        """Run *action* once the load is *offset* seconds old (at once if that is past)."""
        # The counter breaks ties, so actions themselves are never compared.
        bisect.insort(self._pending, (offset, next(self._order), action))

    def after(self, delay: float, action: Callable[[FleetController], None]) -> None:
        """Run *action* *delay* seconds from now."""
        self.at(self.elapsed + max(0.0, delay), action)

    def _due(self) -> list[Callable[[FleetController], None]]:
        now = self.elapsed
        due = []
        while self._pending and self._pending[0][0] <= now:
            due.append(self._pending.pop(0)[2])
        return due

    def kill_worker(self, index: int, reason: str) -> bool:
        """SIGKILL worker *index* by its process handle, on purpose: its results will be missing.

        The run goes on with the others; the result lists the worker under
        ``killed_workers`` instead of reporting an error.  Returns whether the
        worker was alive (and is now killed).
        """
        proc = self._procs.get(index)
        if proc is None or index in self.killed or not proc.is_alive():
            return False
        self.killed[index] = {
            "worker": index,
            "pid": proc.pid,
            "at": round(self.elapsed, 3),
            "reason": reason,
        }
        proc.kill()
        return True

    def broadcast(self, command: str, **payload: Any) -> int:
        """Send a control command to every live worker; returns its id (replies land in ``replies[id]``)."""
        self._next += 1
        ident = self._next
        self.replies[ident] = []
        for index, conn in self._conns.items():
            if index in self.killed:
                continue
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(("control", ident, command, payload))
        return ident


#: A scenario action: runs in the parent at ``at`` seconds into the load (``at`` may be computed
#: from the controller once every worker is ready, e.g. from the cells' renewal times).
Action = tuple[float | Callable[[FleetController], float], Callable[[FleetController], None]]
