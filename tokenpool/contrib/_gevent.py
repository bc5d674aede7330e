"""A token pool for gevent programs: the pool's event loop on a real OS thread, greenlets as callers.

Why not :class:`~tokenpool.BlockingTokenPool`?  Under ``gevent.monkey.patch_all()``
(Locust does it on import) its "thread" is a greenlet: the asyncio loop then
runs inside the gevent hub's own OS thread, ``asyncio.get_running_loop()``
succeeds in every other greenlet (asyncio keeps the running loop per OS thread),
and a greenlet that computes without yielding stalls the refresh timers; its
cross-thread waits go through monkey-patched locks, which can end in gevent's
``LoopExit``.  Measured with 50 greenlets: tokens were handed over up to 3 s
late, long enough for a 3 s token to expire on the way.

So this pool:

- starts its thread with gevent's *original* ``start_new_thread``, so the
  asyncio loop (with anyio and httpx on top) has an OS thread to itself;
- hands results back to the waiting greenlet through a gevent ``async``
  watcher (the thread-safe wake-up gevent provides for exactly this) and never
  blocks a greenlet on a lock that another OS thread releases;
- serves a usable token in the calling greenlet, without crossing threads:
  ``TokenPool.usable_token`` is a plain read of the pool's current token (the
  loop thread replaces it atomically), and it counts the hit.  Only when there
  is no usable token (cold start, after a 401, during an outage past expiry)
  does a call go to the loop thread and wait there for the single refresh.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio
import httpx

from .._auth import SyncTokenAuth
from .._exceptions import ForkedPoolError, PoolStateError
from .._extras import require_extra
from .._pool import TokenPool
from .._statistics import PoolStatistics
from .._token import Token
from ..providers import Provider

with require_extra("locust", feature="tokenpool.contrib.locust (gevent)"):
    import gevent
    import gevent.event
    from gevent.monkey import get_original

__all__ = ["GeventTokenPool"]

T = TypeVar("T")

# The real thing even when the threading module is monkey-patched.
_start_os_thread: Callable[..., int] = get_original("_thread", "start_new_thread")


class _Handoff(Generic[T]):
    """A result produced on another OS thread and awaited by a greenlet of this one."""

    def __init__(self) -> None:
        self._result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        # An async watcher is gevent's thread-safe wake-up: send() from any thread
        # runs the callback in this thread's hub.  While started it also keeps
        # the hub from concluding that nothing can ever wake the waiter.
        self._watcher: Any = gevent.get_hub().loop.async_()
        self._outcome: tuple[bool, Any] | None = None
        self.task: asyncio.Task[T] | None = None
        self._watcher.start(self._deliver)

    def set(self, ok: bool, value: Any) -> None:
        """Called from any thread; only the first call counts."""
        if self._outcome is not None:
            return
        self._outcome = (ok, value)
        self._watcher.send()

    def from_task(self, task: asyncio.Future[T]) -> None:
        if task.cancelled():
            self.set(False, PoolStateError("the call was cancelled because the pool closed"))
        elif (error := task.exception()) is not None:
            self.set(False, error)
        else:
            self.set(True, task.result())

    def _deliver(self) -> None:
        outcome = self._outcome
        if outcome is None:  # a stray wake-up
            return
        # Closed here, in the hub's thread and after the only send(), never by a
        # waiter that gave up: the other thread may still be about to send().
        self._watcher.close()
        ok, value = outcome
        if ok:
            self._result.set(value)
        else:
            self._result.set_exception(value)

    def get(self, timeout: float | None = None) -> T:
        return self._result.get(timeout=timeout)  # type: ignore[no-any-return]


class GeventTokenPool:
    """A :class:`~tokenpool.TokenPool` for gevent greenlets, its loop on a real OS thread.

    Methods are meant to be called from greenlets of the thread that called
    :meth:`start` (Locust users, gevent servers).  Create it in the process
    that uses it, after any ``fork()``.

    Args:
        providers: Name → provider adapter.
        **pool_options: Any :class:`~tokenpool.TokenPool` keyword argument.
    """

    def __init__(self, providers: Mapping[str, Provider], **pool_options: Any) -> None:
        self._pool = TokenPool(providers, **pool_options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._finished: _Handoff[None] | None = None
        self._pid = os.getpid()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, timeout: float | None = 60.0) -> Self:
        """Start the loop thread and open the pool (warming it up as configured)."""
        if self._finished is not None:
            raise PoolStateError("this GeventTokenPool is already started")
        # Import in this thread what the loop thread would otherwise import lazily:
        # httpcore imports trio when it is installed, and trio's import spawns a
        # subprocess, which monkey-patched subprocess can only do on the main hub.
        import httpcore  # noqa: F401

        ready: _Handoff[None] = _Handoff()
        self._finished = _Handoff()
        _start_os_thread(self._thread_main, (ready, self._finished))
        ready.get(timeout=timeout)
        return self

    def close(self, *, timeout: float | None = 30.0) -> None:
        """Close the pool and let its thread end.  Idempotent."""
        finished, self._finished = self._finished, None
        loop, stop = self._loop, self._stop
        if finished is None or loop is None or stop is None or os.getpid() != self._pid:
            return
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:
            return  # the loop already ended
        finished.get(timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _thread_main(self, ready: _Handoff[None], finished: _Handoff[None]) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with self._pool:
                ready.set(True, None)
                await self._stop.wait()

        try:
            anyio.run(serve, backend="asyncio")
        except BaseException as exc:
            ready.set(False, exc)  # ignored if the pool had opened
            finished.set(False, exc)
        else:
            finished.set(True, None)

    # -- the API ------------------------------------------------------------------------------

    @property
    def pool(self) -> TokenPool:
        """The underlying async pool (runs on the loop thread)."""
        return self._pool

    def token(self, name: str, *, timeout: float | None = None) -> Token:
        """A usable token for provider *name*; no thread hop while the pool has one.

        Raises:
            TokenRequestError: the token request failed (a subclass says how).
            TokenWaitTimeout: *timeout* ran out; the refresh goes on for others.
            UnknownProviderError, PoolStateError, ForkedPoolError.
        """
        if self._finished is None:
            raise PoolStateError("the GeventTokenPool is not started (use 'with' or call start())")
        # Every caller runs on this (the hub's) thread and usable_token never
        # yields to another greenlet, so its hit counting is serialised.
        token = self._pool.usable_token(name)
        if token is not None:
            return token
        return self._call(functools.partial(self._pool.token, name, timeout=timeout))

    def invalidate(self, name: str, token: Token) -> bool:
        """Report that *token* was refused (see ``TokenPool.invalidate``); returns whether it was dropped."""
        return self._call(functools.partial(self._pool.invalidate, name, token))

    def headers(self, name: str) -> dict[str, str]:
        """``Authorization`` plus the provider's extra headers, for clients without an auth hook."""
        headers = {"Authorization": self.token(name).authorization}
        headers.update(self._pool.api_headers(name))
        return headers

    def auth(self, name: str) -> httpx.Auth:
        """An ``httpx.Auth`` for ``httpx.Client``: bearer header, provider headers, one retry on 401."""
        self._pool.api_headers(name)  # raises UnknownProviderError early
        return SyncTokenAuth(self, name)

    def report_unauthorized(self, name: str, *, retried: bool) -> None:
        """Count and log an API 401 (on the loop thread, where the pool's metrics live)."""
        loop = self._require_loop()
        loop.call_soon_threadsafe(functools.partial(self._pool.report_unauthorized, name, retried=retried))

    def api_headers(self, name: str) -> Mapping[str, str]:
        """The provider's headers for every API call besides ``Authorization``."""
        return self._pool.api_headers(name)

    def statistics(self) -> PoolStatistics:
        return self._pool.statistics()

    @property
    def names(self) -> list[str]:
        return self._pool.names

    def __repr__(self) -> str:
        return f"<GeventTokenPool {'started' if self._finished else 'stopped'} {self._pool!r}>"

    # -- internals ----------------------------------------------------------------------------

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if os.getpid() != self._pid:
            raise ForkedPoolError(
                "this GeventTokenPool was started in another process; start one in the child"
            )
        loop = self._loop
        if loop is None or self._finished is None:
            raise PoolStateError("the GeventTokenPool is not started (use 'with' or call start())")
        return loop

    def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the loop thread; the calling greenlet waits, the others run."""
        loop = self._require_loop()
        handoff: _Handoff[T] = _Handoff()

        def spawn() -> None:  # on the loop thread
            task: asyncio.Task[T] = loop.create_task(_await(make()))
            handoff.task = task
            task.add_done_callback(handoff.from_task)

        loop.call_soon_threadsafe(spawn)
        try:
            return handoff.get()
        except BaseException:
            # The greenlet was killed (Locust stopping a user) or timed out: stop
            # waiting on the loop too.  A pool waiter that gives up never cancels
            # the shared refresh.
            task = handoff.task
            if task is not None and not task.done():
                loop.call_soon_threadsafe(task.cancel)
            raise


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
