"""A task group entered and left by a task of its own.

Structured concurrency says a task group (and the cancel scope inside it) can
only be left by the task that entered it, in the reverse order of entering.
A pool is opened in one place and closed in another (``__aenter__`` and
``aclose`` from different tasks, inside ``fail_after``, after other pools
opened): so the pool does not enter its task group in the caller's task at
all.  A detached host task enters it, runs until asked to stop, and leaves
it; callers only set and wait for events, which any task may do in any
cancel scope.

Detached means outside every task group of the application: a plain task of
the running asyncio loop (uvloop included), or a trio *system* task.  anyio
has no public spawn for that, so this module is the one place that asks the
backend directly.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

__all__ = ["TaskHost"]

# asyncio keeps only weak references to tasks: hold them until they finish.
_running: set[asyncio.Task[None]] = set()


def _spawn_detached(run: Callable[[], Awaitable[None]], name: str) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        task = loop.create_task(_as_coroutine(run), name=name)
        _running.add(task)
        task.add_done_callback(_running.discard)
        return
    import trio  # not asyncio: anyio's only other backend

    trio.lowlevel.spawn_system_task(run, name=name)


async def _as_coroutine(run: Callable[[], Awaitable[None]]) -> None:
    await run()


class TaskHost:
    """Runs a task group in a detached task; :meth:`start` and :meth:`stop` work from any task.

    Args:
        name: Name of the host task (shown in task dumps).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._group: TaskGroup | None = None
        self._ready = anyio.Event()
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self._error: BaseException | None = None
        self._started = False

    async def start(self) -> TaskGroup:
        """Start the host task and return its task group once it is entered."""
        if self._started:
            raise RuntimeError("a task host starts once")
        self._started = True
        _spawn_detached(self._main, self._name)
        # Shielded: the host sets this at its first step; a caller cancelled
        # meanwhile must still learn that the host exists, so it can stop it.
        with anyio.CancelScope(shield=True):
            await self._ready.wait()
        if self._group is None:
            raise RuntimeError("the task host failed to start") from self._error
        return self._group

    async def stop(self, timeout: float = math.inf) -> None:
        """Cancel everything in the group and wait (shielded, at most *timeout*) until it is left."""
        if not self._started:
            return
        self._stop.set()
        with anyio.move_on_after(timeout, shield=True):
            await self._stopped.wait()

    async def _main(self) -> None:
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                self._ready.set()
                await self._stop.wait()
                group.cancel_scope.cancel()
        except Exception as exc:
            # A trio system task must never raise (the whole run would end in
            # TrioInternalError); the hosted tasks handle their own errors, so
            # this is a bug worth keeping for whoever stops the host.
            self._error = exc
        finally:
            self._group = None
            self._ready.set()
            self._stopped.set()
