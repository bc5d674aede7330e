"""A pool's lifecycle: new → opening → open → closed (or forked), and what opening and closing run.

Opening opens the source, prepares every provider, starts the task host (a
task group hosted by a detached task, ``_host.TaskHost``, so a pool can be
entered and closed from any task and inside any cancel scope), starts the
scheduler and the metrics fold in it, fills the dict the hit path reads, and
warms up.  Closing, from any state and any number of times, undoes that,
shielded and bounded.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.to_thread

from ._exceptions import ForkedPoolError, PoolStateError, TokenEndpointUnreachable, TokenRequestError
from ._host import TaskHost

if TYPE_CHECKING:
    from ._cell import Cell
    from ._metrics import PoolMetrics
    from ._scheduler import Scheduler
    from ._source import TokenSource

__all__ = ["CLOSE_TIMEOUT", "Lifecycle", "WarmUp", "warm_one"]

WarmUp = Literal["wait", "background", "lazy"]
State = Literal["new", "opening", "open", "closed", "forked"]

#: Longest wait for the pool's tasks to end when it closes (they are cancelled first).
CLOSE_TIMEOUT = 10.0

# -- fork detection ---------------------------------------------------------------------------
# A pool's sockets, timers and loop belong to the process that opened it.  In a
# forked child every live pool is marked, and its next use raises.  Checking a
# flag set by an at-fork hook costs nothing on the hit path (os.getpid() is a
# system call on current glibc).
_live_pools: weakref.WeakSet[Lifecycle] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lifecycle in list(_live_pools):
        lifecycle.forked_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Lifecycle:
    """One pool's state, and the opening and closing of everything it runs.

    Args:
        name: The task host's name.
        all_cells: Every cell of the pool, by name (the pool adds to it in place).
        cells: The dict the hit path reads: filled in place when the pool
            opens, emptied when it closes or is found in a forked child.
        source: The pool's token source (opened and closed here).
        scheduler: Wakes the cells; runs in the task host while the pool is open.
        metrics: Folded every *metrics_interval* seconds and once more at close.
        now: The pool's clock (its ``now``).
    """

    def __init__(
        self,
        name: str,
        *,
        all_cells: Mapping[str, Cell],
        cells: dict[str, Cell],
        source: TokenSource,
        scheduler: Scheduler,
        metrics: PoolMetrics | None,
        metrics_interval: float,
        now: Callable[[], float],
    ) -> None:
        self._name = name
        self._all_cells = all_cells
        self._cells = cells
        self._source = source
        self._scheduler = scheduler
        self._metrics = metrics
        self._metrics_interval = metrics_interval
        self._now = now
        self.state: State = "new"
        self._host: TaskHost | None = None
        self._pid = os.getpid()

    async def open(self, warm_up: WarmUp, warm_up_timeout: float) -> None:
        """Open everything, then warm up as *warm_up* says; on any failure or cancellation, close."""
        if self.state != "new":
            raise PoolStateError(f"a TokenPool can be entered once (this one is {self.state})")
        self.state = "opening"
        try:
            await self._source.open()
            for cell in list(self._all_cells.values()):
                await self._source.prepare(cell.provider)
            self._host = TaskHost(self._name)
            group = await self._host.start()
            if self.state != "opening":
                raise PoolStateError("the TokenPool was closed while it was opening")  # noqa: TRY301
            self.state = "open"
            _live_pools.add(self)
            self._cells.update(self._all_cells)
            group.start_soon(self._scheduler.run, group, name="tokenpool-scheduler")
            if self._metrics is not None:
                # Creating a group's labelled series takes ~1 ms (histograms with
                # their buckets): in a worker thread, not on the event loop.
                groups = {cell.group for cell in self._cells.values()}
                await anyio.to_thread.run_sync(self._metrics.touch_all, groups)
                group.start_soon(self._publish_metrics, name="tokenpool-metrics")
            if warm_up == "wait":
                await self.warm_up(warm_up_timeout)
            elif warm_up == "background":
                for cell in self._cells.values():
                    cell.request_token()
            if self.state != "open":
                raise PoolStateError("the TokenPool was closed while it was warming up")  # noqa: TRY301
        except BaseException:
            # Cancelled (a deadline, SIGTERM) or failed while opening: close what
            # was opened, then let the cancellation or error go on.
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the tasks, release the waiters, close the source, fold the metrics; idempotent."""
        state = self.state
        if state == "closed":
            return
        self.state = "closed"
        self._cells.clear()
        _live_pools.discard(self)
        if state in ("new", "forked"):
            # Nothing was opened, or nothing here belongs to this process: do
            # not touch sockets or the loop.
            return
        with anyio.CancelScope(shield=True):
            if self._host is not None:
                await self._host.stop(CLOSE_TIMEOUT)
            for cell in self._all_cells.values():
                cell.close()
            with anyio.move_on_after(CLOSE_TIMEOUT):
                await self._source.aclose()
            if self._metrics is not None:
                self._metrics.fold(self._all_cells.values(), self._now())

    def forked_child(self) -> None:
        """In a forked child: the pool is the parent's, and its next use raises (the at-fork hook)."""
        self.state = "forked"
        self._cells.clear()

    async def _publish_metrics(self) -> None:
        assert self._metrics is not None
        while True:
            await anyio.sleep(self._metrics_interval)
            self._metrics.fold(self._all_cells.values(), self._now())

    async def warm_up(self, timeout: float | None) -> dict[str, TokenRequestError | None]:
        """Fetch a token for every cell concurrently; return each one's error (or ``None``)."""
        results: dict[str, TokenRequestError | None] = {}
        async with anyio.create_task_group() as tg:
            for cell in list(self.require_open().values()):
                tg.start_soon(warm_one, cell, timeout, results)
        return results

    def require_open(self) -> dict[str, Cell]:
        """The open cells (the hit path's dict), or the error that says why there are none."""
        if self.state == "open":
            return self._cells
        raise self.state_error()

    def state_error(self) -> PoolStateError:
        if self.state == "forked" or (self.state == "open" and os.getpid() != self._pid):
            return ForkedPoolError(
                "this TokenPool was opened in another process and used after fork(); "
                "create a new pool in the child (tokenpool.contrib.celery does this for Celery)"
            )
        if self.state == "new":
            return PoolStateError("the TokenPool is not open: use 'async with TokenPool(...) as pool'")
        return PoolStateError("the TokenPool is closed")


async def warm_one(
    cell: Cell, timeout: float | None, results: dict[str, TokenRequestError | None] | None = None
) -> None:
    """Wait for *cell*'s token; note its error (or ``None``) in *results*, never raise it."""
    error: TokenRequestError | None = None
    try:
        await cell.wait_for_token(timeout)
    except TokenRequestError as exc:
        error = exc  # already logged by the observer
    except (TimeoutError, PoolStateError):
        error = TokenEndpointUnreachable("no token within the warm-up timeout", provider=cell.name)
    if results is not None:
        results[cell.name] = error
