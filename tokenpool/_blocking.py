"""A thread-safe, synchronous facade: the pool runs on its own event-loop thread."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._auth import SyncTokenAuth
from ._exceptions import ForkedPoolError, PoolStateError
from ._pool import TokenPool
from ._statistics import PoolStatistics
from ._token import Token
from .providers import Provider

__all__ = ["BlockingTokenPool"]

_orphaned_after_fork: list[contextlib.ExitStack] = []

# Every BlockingTokenPool, so that a forked child can replace their hit locks:
# one held by another thread at fork() time would stay locked in the child for
# good, and the child's first token() would hang instead of raising ForkedPoolError.
_instances: weakref.WeakSet[BlockingTokenPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_instances):
        pool._hits_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class BlockingTokenPool:
    """A :class:`TokenPool` for threads and synchronous code (Celery tasks, scripts).

    The pool lives on a private event-loop thread started by :meth:`start` (or
    ``with``); every method is safe to call from any thread.  Create it in the
    process that uses it: after ``fork()`` the loop thread does not exist in
    the child, and using the pool there raises ``ForkedPoolError``.

    Args:
        providers: Name → provider adapter.
        backend: ``"asyncio"`` (default) or ``"trio"`` for the loop thread.
        backend_options: Passed to anyio (e.g. ``{"use_uvloop": True}``).
        **pool_options: Any :class:`TokenPool` keyword argument.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        backend: str = "asyncio",
        backend_options: dict[str, Any] | None = None,
        **pool_options: Any,
    ) -> None:
        self._pool = TokenPool(providers, **pool_options)
        self._backend = backend
        self._backend_options = backend_options
        self._stack: contextlib.ExitStack | None = None
        self._portal: BlockingPortal | None = None
        #: The process that started the loop thread; in any other one (a forked
        #: child) that thread does not exist, and waiting for it would hang.
        self._pid: int | None = None
        # TokenPool.usable_token counts a hit in a plain integer: calls from
        # the callers' threads are serialised here.
        self._hits_lock = threading.Lock()
        _instances.add(self)

    def start(self) -> Self:
        """Start the loop thread and open the pool (warming it up as configured)."""
        if self._stack is not None:
            raise PoolStateError("this BlockingTokenPool is already started")
        stack = contextlib.ExitStack()
        try:
            portal = stack.enter_context(start_blocking_portal(self._backend, self._backend_options))
            stack.enter_context(portal.wrap_async_context_manager(self._pool))
        except BaseException:
            stack.close()
            raise
        self._stack, self._portal, self._pid = stack, portal, os.getpid()
        _close_at_exit(self)
        return self

    def close(self) -> None:
        """Close the pool and stop the loop thread.  Idempotent."""
        stack, self._stack, self._portal = self._stack, None, None
        if stack is None:
            return
        if self._pid != os.getpid():
            # In a forked child the loop thread does not exist.  Keep the exit
            # stack alive for good: were it collected, the portal's generator
            # would be finalised and wait forever for that thread.
            _orphaned_after_fork.append(stack)
            return
        stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pool(self) -> TokenPool:
        """The underlying async pool (for code running on the pool's own loop)."""
        return self._pool

    def _require(self) -> BlockingPortal:
        portal = self._portal
        if portal is None:
            raise PoolStateError("the BlockingTokenPool is not started (use 'with' or call start())")
        if self._pid != os.getpid():
            # The loop thread does not exist in a forked child: fail, don't hang.
            raise ForkedPoolError(
                "this BlockingTokenPool was started in another process and used after fork(); "
                "create a new pool in the child (tokenpool.contrib.celery does this for Celery)"
            )
        return portal

    def token(self, name: str, *, timeout: float | None = None) -> Token:
        """A usable token for provider *name* (blocks only when the pool itself would).

        A usable token is returned on the caller's thread
        (``TokenPool.usable_token``: a read, no I/O); only when there is none
        does the call cross to the loop thread, where the single-flight logic
        lives.

        Raises:
            TokenRequestError: the token request failed (a subclass says how).
            TokenWaitTimeout: *timeout* ran out; the refresh goes on for others.
            UnknownProviderError: no provider of that name.
            PoolStateError: the pool is not open.
            ForkedPoolError: used in a child process after ``fork()``.
        """
        if self._portal is None:
            raise PoolStateError("the BlockingTokenPool is not started (use 'with' or call start())")
        # In a forked child this raises ForkedPoolError (the pool is marked at fork).
        with self._hits_lock:
            token = self._pool.usable_token(name)
        if token is not None:
            return token
        return self._require().call(lambda: self._pool.token(name, timeout=timeout))

    def invalidate(self, name: str, token: Token) -> bool:
        """Report that *token* was refused (see ``TokenPool.invalidate``); returns whether it was dropped."""
        return self._require().call(self._pool.invalidate, name, token)

    def refresh(self, name: str, *, timeout: float | None = None) -> Token:
        return self._require().call(lambda: self._pool.refresh(name, timeout=timeout))

    def replace_provider(self, name: str, provider: Provider, *, refresh: bool = True) -> Token | None:
        return self._require().call(lambda: self._pool.replace_provider(name, provider, refresh=refresh))

    def statistics(self) -> PoolStatistics:
        return self._pool.statistics()

    def api_headers(self, name: str) -> Mapping[str, str]:
        return self._pool.api_headers(name)

    def auth(self, name: str) -> httpx.Auth:
        """An ``httpx.Auth`` for ``httpx.Client``: bearer header, provider headers, one retry on 401."""
        self._pool.api_headers(name)  # raises UnknownProviderError early
        return SyncTokenAuth(self, name)

    def report_unauthorized(self, name: str, *, retried: bool) -> None:
        """Count and log an API 401 answered to *name*'s token (what :meth:`auth` does for you)."""
        self._pool.report_unauthorized(name, retried=retried)

    def __repr__(self) -> str:
        return f"<BlockingTokenPool {'started' if self._portal else 'stopped'} {self._pool!r}>"


def _close_at_exit(pool: BlockingTokenPool) -> None:
    """Close *pool* when the interpreter exits, before non-daemon threads are joined.

    Otherwise a pool that was never closed would keep its loop thread, and so
    the process, alive forever.  Only a weak reference is kept.
    """
    ref = weakref.ref(pool)

    def close() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    register = getattr(threading, "_register_atexit", None)  # what concurrent.futures uses
    if register is None:  # pragma: no cover - every CPython since 3.9 has it
        import atexit

        atexit.register(close)
        return
    # RuntimeError: the interpreter is already shutting down.
    with contextlib.suppress(RuntimeError):
        register(close)
