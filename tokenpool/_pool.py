"""The pool: cells, the token source, the scheduler, the task host, metrics and logs.

Layers, top to bottom (see the README's architecture section)::

    TokenPool.token(name)   hit path: one dict lookup, one clock read, one compare
        │ miss / due
    Cell                    state and single flight  ── _schedule: what to do at instant t
        │ fetch
    TokenSource             where tokens come from   ── _http.HttpTokenSource (default)
        │
    Provider adapter        sans-IO: build the request, parse the answer

The pool's own tasks (the scheduler, refresh attempts, the metrics fold) run in
a task group hosted by a detached task (``_host.TaskHost``), so a pool can be
entered and closed from any task and inside any cancel scope.
"""

from __future__ import annotations

import math
import os
import random
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import anyio.to_thread
import httpx
from prometheus_client import CollectorRegistry

from ._cell import Cell
from ._clock import Clock, MonotonicClock
from ._exceptions import (
    ConfigurationError,
    ForkedPoolError,
    PoolStateError,
    TokenEndpointUnreachable,
    TokenRequestError,
    UnknownProviderError,
)
from ._host import TaskHost
from ._http import HttpTokenSource
from ._metrics import LABEL_MODES, PoolMetrics
from ._observe import Observer
from ._scheduler import Scheduler
from ._source import TokenSource, TokenStore
from ._token import Token
from .providers import Provider

__all__ = ["CellStatistics", "PoolStatistics", "TokenPool"]

WarmUp = Literal["wait", "background", "lazy"]
MetricsLabel = Literal["kind", "name"] | Callable[[str, Provider], str]

#: Longest wait for the pool's tasks to end when it closes (they are cancelled first).
CLOSE_TIMEOUT = 10.0

# -- fork detection ---------------------------------------------------------------------------
# A pool's sockets, timers and loop belong to the process that opened it.  In a
# forked child every live pool is marked, and its next use raises.  Checking a
# flag set by an at-fork hook costs nothing on the hit path (os.getpid() is a
# system call on current glibc).
_live_pools: weakref.WeakSet[TokenPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        pool._forked_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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


class TokenPool:
    """Keeps a valid token ready for every provider, for one worker process.

    Create it inside the event loop (and the process) that uses it, and enter
    it with ``async with``::

        async with TokenPool({"acme": providers.ClientCredentials(...)}) as pool:
            token = await pool.token("acme")
            async with httpx.AsyncClient(auth=pool.auth("acme")) as client:
                ...

    Args:
        providers: Name → provider adapter.  Names label logs and metrics.
        warm_up: ``"wait"`` (default) fetches every provider's first token
            concurrently while entering and waits for them (failures are
            logged, not raised: one provider's outage must not stop a worker
            serving the others); ``"background"`` starts those requests but
            does not wait (Celery kills a child whose init blocks); ``"lazy"``
            fetches on first use.
        warm_up_timeout: Longest wait for ``"wait"``.
        client: An ``httpx.AsyncClient`` to use for token requests of
            providers without a client certificate.  Not closed by the pool.
            By default the pool makes its own (HTTP/2, verification on).
        ca_file: CA bundle that the pool's own clients trust (default:
            certifi's).  Needed for private CAs such as the emulator's.
        max_concurrent_requests: Token requests in flight at once, across all
            providers; the rest queue in FIFO order (httpcore's pool degrades
            badly with thousands of queued requests).
        max_requests_per_host: Token requests in flight at once per token
            endpoint host and port, so that one hung provider holds at most
            this many of the global slots and never delays another's token.
        source: Where tokens come from (a :class:`~tokenpool.TokenSource`);
            by default HTTP to each provider's token endpoint, configured by
            *client*, *ca_file* and the two limits above.  Tests pass a
            scripted one.
        store: A fleet store (``tokenpool.fleet.RedisStore``): the whole
            fleet of processes shares one token per client; any store fault
            falls back to this process's own requests.
        metrics: ``True`` (default) registers Prometheus series in the global
            registry; a ``CollectorRegistry`` registers them there; ``False``
            records nothing.
        metrics_label: The value of the ``provider`` label: ``"kind"``
            (default: the adapter's kind, one series per provider type however
            many tenants), ``"name"`` (the pool's names, per-name detail) or a
            callable ``(name, provider) -> str`` (your own groups).
        metrics_interval: How often hit/miss counts are folded into counters.
        logger: A structlog-style logger (default
            ``structlog.get_logger("tokenpool")``).  tokenpool never configures
            structlog.
        clock: Time source; tests pass a ``ManualClock``.
        rng: Random source for jitter; tests pass a seeded ``random.Random``.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        warm_up: WarmUp = "wait",
        warm_up_timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        max_concurrent_requests: int = 20,
        max_requests_per_host: int = 4,
        source: TokenSource | None = None,
        store: TokenStore | None = None,
        metrics: bool | CollectorRegistry = True,
        metrics_label: MetricsLabel = "kind",
        metrics_interval: float = 1.0,
        logger: Any = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(providers, Mapping):
            raise ConfigurationError(
                f"providers must be a mapping of name to Provider, got {type(providers).__name__}"
            )
        if warm_up not in ("wait", "background", "lazy"):
            raise ConfigurationError(f"warm_up must be 'wait', 'background' or 'lazy', got {warm_up!r}")
        if not _positive(warm_up_timeout):
            raise ConfigurationError(
                f"warm_up_timeout must be a positive number of seconds, got {warm_up_timeout!r}"
            )
        if not _positive(metrics_interval) or math.isinf(metrics_interval):
            raise ConfigurationError(
                f"metrics_interval must be a positive number of seconds, got {metrics_interval!r}"
            )
        if not (metrics_label in LABEL_MODES or callable(metrics_label)):
            raise ConfigurationError(
                "metrics_label must be 'kind', 'name' or a callable (name, provider) -> str, "
                f"got {metrics_label!r}"
            )
        if not isinstance(metrics, bool | CollectorRegistry):
            raise ConfigurationError(
                f"metrics must be True, False or a CollectorRegistry, got {type(metrics).__name__}"
            )
        if source is None:
            source = HttpTokenSource(
                client=client,
                ca_file=ca_file,
                max_concurrent_requests=max_concurrent_requests,
                max_requests_per_host=max_requests_per_host,
            )
        elif client is not None or ca_file is not None:
            raise ConfigurationError(
                "pass either source= or client=/ca_file= (they configure the HTTP source)"
            )
        elif not isinstance(source, TokenSource):
            raise ConfigurationError(f"source must be a TokenSource, got {type(source).__name__}")
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._now = self._clock.now
        # Not for cryptography: jitter only needs to differ between workers.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311
        self._metrics = None if metrics is False else PoolMetrics(None if metrics is True else metrics)
        self._metrics_label = metrics_label
        self._metrics_interval = metrics_interval
        self._observer = Observer(logger, self._metrics)
        if store is not None:
            if not isinstance(store, TokenStore):
                raise ConfigurationError(f"store must be a TokenStore, got {type(store).__name__}")
            source = store.source(
                source, clock=self._clock, log=self._observer.log, on_event=self._store_event
            )
            if self._metrics is not None:
                self._metrics.with_store = True
        self._source: TokenSource = source
        self._warm_up: WarmUp = warm_up
        self._warm_up_timeout = warm_up_timeout
        self._scheduler = Scheduler(self._clock)
        self._all_cells: dict[str, Cell] = {}
        for name, provider in providers.items():
            self._all_cells[name] = self._make_cell(name, provider)
        # The hit path looks names up here; it is empty unless the pool is open,
        # so "not open" costs nothing to check.  Filled and emptied in place:
        # the hit path holds this very dict.
        self._cells: dict[str, Cell] = {}
        self._state: Literal["new", "opening", "open", "closed", "forked"] = "new"
        self._host: TaskHost | None = None
        self._pid = os.getpid()
        # The hit path as a closure over the cells dict and the clock: the same
        # code as the method below, without two attribute loads on self per
        # call (~30 ns of a ~250 ns call; see benchmarks/micro_bench.py).
        self.token = self._hit_path()  # type: ignore[method-assign,assignment]  # shadows the method

    def _hit_path(self) -> Callable[..., Awaitable[Token]]:
        cells, now, lookup_error = self._cells, self._now, self._lookup_error

        # timeout is not keyword-only here: CPython fills a keyword-only default
        # ~20 ns slower.  The documented (and type-checked) signature is the method's.
        async def token(name: str, timeout: float | None = None) -> Token:
            try:
                cell = cells[name]
            except KeyError:
                raise lookup_error(name) from None
            if now() < cell.usable_until:
                cell.hits += 1
                return cell.token  # type: ignore[return-value]  # usable_until is finite only with a token
            return await cell.wait_for_token(timeout)

        token.__doc__ = TokenPool.token.__doc__
        return token

    def _make_cell(self, name: str, provider: Provider) -> Cell:
        if not isinstance(name, str) or not name:
            raise ConfigurationError("provider names must be non-empty strings")
        if not isinstance(provider, Provider):
            raise ConfigurationError(
                f"provider {name!r}: expected a tokenpool.providers.Provider, got {type(provider).__name__}"
            )
        label = self._metrics_label
        if label == "kind":
            group = provider.kind
        elif label == "name":
            group = name
        else:
            assert callable(label)
            group = label(name, provider)
            if not isinstance(group, str) or not group:
                raise ConfigurationError(f"metrics_label({name!r}, ...) must return a non-empty str")
        return Cell(
            name,
            provider,
            source=self._source,
            clock=self._clock,
            rng=self._rng,
            observer=self._observer,
            wake=self._scheduler.push,
            group=group,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise PoolStateError(f"a TokenPool can be entered once (this one is {self._state})")
        self._state = "opening"
        try:
            await self._source.open()
            for cell in list(self._all_cells.values()):
                await self._source.prepare(cell.provider)
            self._host = TaskHost(f"tokenpool-{id(self):x}")
            group = await self._host.start()
            if self._state != "opening":
                raise PoolStateError("the TokenPool was closed while it was opening")  # noqa: TRY301
            self._state = "open"
            _live_pools.add(self)
            self._cells.update(self._all_cells)
            group.start_soon(self._scheduler.run, group, name="tokenpool-scheduler")
            if self._metrics is not None:
                # Creating a group's labelled series takes ~1 ms (histograms with
                # their buckets): in a worker thread, not on the event loop.
                groups = {cell.group for cell in self._cells.values()}
                await anyio.to_thread.run_sync(self._metrics.touch_all, groups)
                group.start_soon(self._publish_metrics, name="tokenpool-metrics")
            if self._warm_up == "wait":
                await self.warm_up(timeout=self._warm_up_timeout)
            elif self._warm_up == "background":
                for cell in self._cells.values():
                    cell.request_token()
            if self._state != "open":
                raise PoolStateError("the TokenPool was closed while it was warming up")  # noqa: TRY301
        except BaseException:
            # Cancelled (a deadline, SIGTERM) or failed while opening: close what
            # was opened, then let the cancellation or error go on.
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every refresh, close the source's HTTP clients, publish final counts.

        Safe from any task, inside any cancel scope (closing is shielded and
        bounded by ``CLOSE_TIMEOUT``), and idempotent.  Callers still waiting
        for a token get a ``PoolStateError``.
        """
        await self._close()

    async def _close(self) -> None:
        state = self._state
        if state == "closed":
            return
        self._state = "closed"
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

    def _store_event(self, outcome: str, name: str) -> None:
        """Count a fleet-store event (the store calls this; names it does not know are ignored)."""
        cell = self._all_cells.get(name)
        if cell is not None and self._metrics is not None:
            self._metrics.store_event(cell.group, outcome)

    def _forked_child(self) -> None:
        self._state = "forked"
        self._cells.clear()

    async def _publish_metrics(self) -> None:
        assert self._metrics is not None
        while True:
            await anyio.sleep(self._metrics_interval)
            self._metrics.fold(self._all_cells.values(), self._now())

    async def warm_up(self, *, timeout: float | None = None) -> dict[str, TokenRequestError | None]:
        """Fetch a token for every provider concurrently; return each one's error (or ``None``)."""
        results: dict[str, TokenRequestError | None] = {}
        async with anyio.create_task_group() as tg:
            for cell in list(self._require_open().values()):
                tg.start_soon(self._warm_one, cell, timeout, results)
        return results

    async def _warm_one(
        self, cell: Cell, timeout: float | None, results: dict[str, TokenRequestError | None] | None = None
    ) -> None:
        error: TokenRequestError | None = None
        try:
            await cell.wait_for_token(timeout)
        except TokenRequestError as exc:
            error = exc  # already logged by the observer
        except (TimeoutError, PoolStateError):
            error = TokenEndpointUnreachable("no token within the warm-up timeout", provider=cell.name)
        if results is not None:
            results[cell.name] = error

    # -- the API ------------------------------------------------------------------------------

    async def token(self, name: str, *, timeout: float | None = None) -> Token:
        """A usable token for provider *name*.

        Once the pool is warm this returns at once, every time: the cell
        renews tokens in the background at ~80 % of their lifetime and keeps
        serving the current one meanwhile.  Only when there is no usable token
        (cold start, expiry during an outage, a 401) does the caller wait for
        the single in-flight request, at most *timeout* seconds.

        Raises:
            TokenRequestError: the token request failed (a subclass says how).
            TokenWaitTimeout: *timeout* ran out; the refresh goes on for others.
            UnknownProviderError, PoolStateError, ForkedPoolError.
        """
        try:
            cell = self._cells[name]
        except KeyError:
            raise self._lookup_error(name) from None
        if self._now() < cell.usable_until:
            cell.hits += 1
            return cell.token  # type: ignore[return-value]  # usable_until is finite only with a token
        return await cell.wait_for_token(timeout)

    def usable_token(self, name: str) -> Token | None:
        """The current token if it is usable now, else ``None``; never waits, never sends a request.

        For facades that serve callers outside the pool's event loop
        (``BlockingTokenPool``, the gevent pool): a returned token counts as a
        hit.  Calls from threads other than the pool's must be serialised by
        the caller (the facades hold a lock), because hit counting is a plain
        integer increment.

        Raises:
            UnknownProviderError, PoolStateError, ForkedPoolError.
        """
        cell = self._cells.get(name)
        if cell is None:
            raise self._lookup_error(name)
        token = cell.token
        if token is not None and self._now() < token.usable_until:
            cell.foreign_hits += 1
            return token
        return None

    def auth(self, name: str) -> httpx.Auth:
        """An ``httpx.Auth`` that adds provider *name*'s token and headers, and recovers from a 401."""
        from ._auth import TokenAuth

        if name not in self._all_cells:
            raise self._lookup_error(name)
        return TokenAuth(self, name)

    async def invalidate(self, name: str, token: Token) -> bool:
        """Report that *token* was refused; drops it only if it is still the current one."""
        cell = self._require_open().get(name)
        if cell is None:
            raise self._lookup_error(name)
        return cell.invalidate(token)

    async def refresh(self, name: str, *, timeout: float | None = None) -> Token:
        """Fetch a new token for *name* now (outside the schedule) and return it."""
        cell = self._require_open().get(name)
        if cell is None:
            raise self._lookup_error(name)
        return await cell.refresh(timeout)

    async def replace_provider(self, name: str, provider: Provider, *, refresh: bool = True) -> Token | None:
        """Swap *name*'s settings (rotated credentials, say) without a restart.

        The current token keeps being served.  With *refresh* (default) a
        token is fetched with the new settings at once and returned, so a
        mistake in them surfaces here rather than at the next renewal.
        """
        cells = self._require_open()
        cell = cells.get(name)
        if cell is None:
            raise self._lookup_error(name)
        if not isinstance(provider, Provider):
            raise ConfigurationError(f"provider {name!r}: expected a Provider, got {type(provider).__name__}")
        await self._source.prepare(provider)
        cell.replace_provider(provider)
        if refresh:
            return await cell.refresh()
        return None

    async def add_provider(self, name: str, provider: Provider, *, warm_up: bool = True) -> None:
        """Register another provider (a new tenant, say) in a running pool."""
        cells = self._require_open()
        if name in self._all_cells:
            raise ConfigurationError(f"a provider named {name!r} already exists in this pool")
        cell = self._make_cell(name, provider)
        await self._source.prepare(provider)
        self._all_cells[name] = cell
        cells[name] = cell
        if self._metrics is not None:
            await anyio.to_thread.run_sync(self._metrics.touch_all, {cell.group})
        if warm_up:
            await self._warm_one(cell, self._warm_up_timeout)

    def report_unauthorized(self, name: str, *, retried: bool) -> None:
        """Count an API response with status 401 for *name* (for auth flows other than ours)."""
        cell = self._all_cells.get(name)
        if cell is None:
            raise self._lookup_error(name)
        self._observer.downstream_unauthorized(cell, retried=retried)

    def api_headers(self, name: str) -> Mapping[str, str]:
        """Extra headers provider *name* wants on every API call."""
        cell = self._all_cells.get(name)
        if cell is None:
            raise self._lookup_error(name)
        return cell.api_headers

    @property
    def clock(self) -> Clock:
        """The pool's time source (``time.monotonic()`` unless a test passed a clock)."""
        return self._clock

    @property
    def names(self) -> list[str]:
        return list(self._all_cells)

    def __contains__(self, name: object) -> bool:
        return name in self._all_cells

    def statistics(self) -> PoolStatistics:
        """A snapshot of every cell: counters, schedule, last error (never a token)."""
        now = self._now()
        cells = {}
        for name, cell in self._all_cells.items():
            token = cell.token
            cells[name] = CellStatistics(
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
        return PoolStatistics(cells=cells)

    def __repr__(self) -> str:
        return f"<TokenPool {self._state} providers={list(self._all_cells)}>"

    # -- internals ----------------------------------------------------------------------------

    def _require_open(self) -> dict[str, Cell]:
        if self._state == "open":
            return self._cells
        raise self._state_error()

    def _state_error(self) -> PoolStateError:
        if self._state == "forked" or (self._state == "open" and os.getpid() != self._pid):
            return ForkedPoolError(
                "this TokenPool was opened in another process and used after fork(); "
                "create a new pool in the child (tokenpool.contrib.celery does this for Celery)"
            )
        if self._state == "new":
            return PoolStateError("the TokenPool is not open: use 'async with TokenPool(...) as pool'")
        return PoolStateError("the TokenPool is closed")

    def _lookup_error(self, name: str) -> Exception:
        if self._state != "open":
            return self._state_error()
        return UnknownProviderError(name, list(self._all_cells))


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
