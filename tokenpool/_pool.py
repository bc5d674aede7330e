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
entered and closed from any task and inside any cancel scope;
:mod:`tokenpool._lifecycle` starts and stops them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

import anyio.to_thread
import httpx
from prometheus_client import CollectorRegistry

from ._auth import TokenAuth
from ._cell import Cell
from ._clock import Clock, MonotonicClock
from ._exceptions import ConfigurationError, TokenRequestError, UnknownProviderError
from ._lifecycle import Lifecycle, WarmUp, warm_one
from ._metrics import PoolMetrics
from ._observe import Observer
from ._pool_settings import MetricsLabel, check_provider, check_settings, metrics_group, token_source
from ._scheduler import Scheduler
from ._source import TokenSource, TokenStore
from ._statistics import PoolStatistics, statistics_of
from ._token import Token
from .providers import Provider

__all__ = ["TokenPool"]


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
            :func:`tokenpool.logging.library_logger`: structlog once your
            application configured it, else the standard library's
            ``logging.getLogger("tokenpool")``).  tokenpool never configures
            logging.
        clock: Time source; tests pass a :class:`tokenpool.testing.ManualClock`.
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
        check_settings(
            providers,
            warm_up=warm_up,
            warm_up_timeout=warm_up_timeout,
            metrics_interval=metrics_interval,
            metrics_label=metrics_label,
            metrics=metrics,
        )
        source = token_source(
            source,
            client=client,
            ca_file=ca_file,
            max_concurrent_requests=max_concurrent_requests,
            max_requests_per_host=max_requests_per_host,
        )
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._now = self._clock.now
        # Not for cryptography: jitter only needs to differ between workers.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311
        self._metrics = None if metrics is False else PoolMetrics(None if metrics is True else metrics)
        self._metrics_label = metrics_label
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
        # so "not open" costs nothing to check.  Filled and emptied in place
        # (by the lifecycle): the hit path holds this very dict.
        self._cells: dict[str, Cell] = {}
        self._life = Lifecycle(
            f"tokenpool-{id(self):x}",
            all_cells=self._all_cells,
            cells=self._cells,
            source=self._source,
            scheduler=self._scheduler,
            metrics=self._metrics,
            metrics_interval=metrics_interval,
            now=self._now,
        )
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
        check_provider(name, provider)
        group = metrics_group(self._metrics_label, name, provider)
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
        await self._life.open(self._warm_up, self._warm_up_timeout)
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
        await self._life.close()

    def _store_event(self, outcome: str, name: str) -> None:
        """Count a fleet-store event (the store calls this; names it does not know are ignored)."""
        cell = self._all_cells.get(name)
        if cell is not None and self._metrics is not None:
            self._metrics.store_event(cell.group, outcome)

    async def warm_up(self, *, timeout: float | None = None) -> dict[str, TokenRequestError | None]:
        """Fetch a token for every provider concurrently; return each one's error (or ``None``)."""
        return await self._life.warm_up(timeout)

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
            UnknownProviderError: no provider of that name.
            PoolStateError: the pool is not open.
            ForkedPoolError: used in a child process after ``fork()``.
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
            UnknownProviderError: no provider of that name.
            PoolStateError: the pool is not open.
            ForkedPoolError: used in a child process after ``fork()``.
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
            await warm_one(cell, self._warm_up_timeout)

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
        return statistics_of(self._all_cells, self._now())

    def __repr__(self) -> str:
        return f"<TokenPool {self._life.state} providers={list(self._all_cells)}>"

    # -- internals ----------------------------------------------------------------------------

    def _require_open(self) -> dict[str, Cell]:
        return self._life.require_open()

    def _lookup_error(self, name: str) -> Exception:
        if self._life.state != "open":
            return self._life.state_error()
        return UnknownProviderError(name, list(self._all_cells))
