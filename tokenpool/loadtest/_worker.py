"""The worker process: one strategy, C load tasks per provider group, progress and a result over its pipe."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import anyio
import httpx

from .._exceptions import TokenPoolError
from .._timing import RefreshPolicy
from ._client import _CALL_PROBE, _Probe
from ._histogram import Histogram
from ._ideal import ideal_requests
from ._results import GroupResult, WorkerResult
from ._settings import FleetSettings, ProviderSpec
from ._strategy import AuthStrategy, load_strategy

#: Nothing public: ``_worker_main`` is the process entry point ``_run`` starts.
__all__: list[str] = []


@dataclass
class _Live:
    """A worker's running totals, for the progress line."""

    calls: int = 0
    ok: int = 0
    unauthorized: int = 0
    recovered: int = 0
    failed: int = 0
    #: The longest token wait of a call after warm-up (see ``GroupResult.token_wait_after_warm_up``).
    wait_max: float = 0.0


def _worker_main(index: int, conn: Connection) -> None:
    """Entry point of a worker process (spawned)."""
    # The parent coordinates shutdown (Ctrl-C reaches the whole process group);
    # a worker stops when told to over its pipe, and sends what it measured.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        message = conn.recv()
    except (EOFError, OSError):
        return
    settings: FleetSettings = message[1]
    result = WorkerResult(index=index, pid=os.getpid(), strategy=settings.strategy.label)
    try:
        anyio.run(_Worker(index, settings, conn, result).run, backend="asyncio")
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {_short_error(exc)}"
        if os.environ.get("TOKENPOOL_FLEET_DEBUG"):
            traceback.print_exc()
    with contextlib.suppress(OSError, BrokenPipeError):
        conn.send(("result", result))
    conn.close()


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_short_error(e) for e in exc.exceptions[:3])
    return str(exc)[:300]


class _Worker:
    def __init__(self, index: int, settings: FleetSettings, conn: Connection, result: WorkerResult) -> None:
        self.index = index
        self.settings = settings
        self.conn = conn
        self.result = result
        self.live = _Live()
        self.stopping = False
        self.groups = {name: GroupResult() for name in settings.groups}
        self.start = 0.0
        self.deadline = 0.0
        self.baseline: dict[str, dict[str, Any]] = {}
        #: Cells this worker already holds (or held) a token for: their calls are past the warm-up.
        self.warm: set[str] = set()

    async def run(self) -> None:
        settings = self.settings
        strategy = load_strategy(settings.strategy)(settings, settings.strategy)
        opened = time.monotonic()
        try:
            await strategy.open()
            self.conn.send(("ready", self.index, strategy.schedule()))
            while True:
                message = await self._recv()
                if message is None:
                    return
                if message[0] == "go":
                    break
                if message[0] == "stop":
                    return
            # One time origin for the whole fleet: the parent's instant of "go"
            # (CLOCK_MONOTONIC is system-wide), unless it looks implausible.
            now = time.monotonic()
            origin = float(message[1]) if len(message) > 1 else now
            self.start = origin if abs(now - origin) < 5.0 else now
            self.deadline = self.start + settings.duration
            # Hits and misses of the warm-up are not the load's.
            self.baseline = strategy.cell_info()
            self.warm = {spec.name for spec in settings.specs if strategy.has_token(spec.name)}
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._control_loop, strategy)
                outer.start_soon(self._progress_loop, strategy)
                async with anyio.create_task_group() as load:
                    slots = anyio.Semaphore(settings.max_in_flight)
                    for group, specs in settings.groups.items():
                        for task in range(settings.tasks):
                            load.start_soon(self._task, strategy, slots, group, specs, task)
                outer.cancel_scope.cancel()
            ended = time.monotonic()
            self.result.load_seconds = ended - self.start
            self._collect(strategy, opened, ended)
        finally:
            await strategy.close()

    async def _recv(self) -> tuple[Any, ...] | None:
        # A multiprocessing pipe has no awaitable readiness; a short poll is cheap
        # next to the load and keeps the loop cancellable.
        while not self.conn.poll():  # noqa: ASYNC110
            await anyio.sleep(0.02)
        try:
            message: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            return None
        return message

    async def _control_loop(self, strategy: AuthStrategy) -> None:
        while True:
            message = await self._recv()
            if message is None or message[0] == "stop":
                self.stopping = True
                return
            if message[0] == "control":
                _, ident, command, payload = message
                try:
                    status = await strategy.control(command, payload)
                except Exception as exc:
                    status = f"error: {type(exc).__name__}"
                self.result.control.append(f"worker {self.index}: {command}: {status}")
                self.conn.send(("reply", ident, self.index, status))

    async def _progress_loop(self, strategy: AuthStrategy) -> None:
        while True:
            await anyio.sleep(self.settings.progress_interval)
            self._send_progress(strategy)

    def _send_progress(self, strategy: AuthStrategy) -> None:
        live = self.live
        snapshot = (
            self.index,
            live.calls,
            live.ok,
            live.unauthorized,
            live.recovered,
            live.failed,
            sum(strategy.token_requests().values()),
            live.wait_max,
        )
        # Over the worker's own pipe: a shared queue's lock could be held by a worker
        # that a scenario kills, and would then block every other worker's progress.
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(("progress", snapshot))

    async def _task(
        self, strategy: AuthStrategy, slots: anyio.Semaphore, group: str, specs: list[ProviderSpec], task: int
    ) -> None:
        stats = self.groups[group]
        live = self.live
        think = self.settings.think_time
        cells = [(spec.name, spec.resource_url) for spec in specs]
        perf = time.perf_counter
        monotonic = time.monotonic
        n = 0
        while n < self.settings.max_calls_per_task and not self.stopping:
            if monotonic() >= self.deadline:
                break
            name, url = cells[(task + n) % len(cells)]
            n += 1
            async with slots:
                if monotonic() >= self.deadline:
                    break  # waited for a slot past the deadline: the run is over for this task
                started = perf()
                _CALL_PROBE.set(_Probe(started, stats.overhead))
                failure: str | None = None
                response: httpx.Response | None = None
                try:
                    warm = name in self.warm
                    await strategy.token_wait(name)
                    waited = perf() - started
                    stats.token_wait.add(waited)
                    if warm:
                        stats.token_wait_after_warm_up.add(waited)
                        if waited > live.wait_max:
                            live.wait_max = waited
                    else:
                        self.warm.add(name)
                    sent = perf()
                    try:
                        response = await strategy.call(name, url)
                    except httpx.RemoteProtocolError as exc:
                        # A graceful HTTP/2 GOAWAY (hypercorn sends one after 1,000 requests
                        # on a connection): streams above its last_stream_id were never
                        # processed (RFC 9113 §6.8) and are safe to send again, which
                        # httpcore does not do.  Re-sent once, and counted.
                        if "ConnectionTerminated" not in str(exc) or "error_code:0" not in str(exc):
                            raise
                        stats.goaway_resends += 1
                        response = await strategy.call(name, url)
                    stats.latency.add(perf() - sent)
                except TokenPoolError as exc:
                    failure = f"token:{type(exc).__name__}"
                except httpx.HTTPError as exc:
                    failure = f"http:{type(exc).__name__}"
                except Exception as exc:
                    # A peer library's own errors (authlib's OAuthError…) count as failed calls.
                    failure = f"error:{type(exc).__name__}"
                finally:
                    _CALL_PROBE.set(None)
            stats.calls += 1
            live.calls += 1
            offset = monotonic() - self.start
            if response is not None:
                status = response.status_code
                retried_401 = any(r.status_code == 401 for r in response.history)
                if retried_401 or status == 401:
                    stats.unauthorized_at.append(offset)
                if 200 <= status < 300:
                    stats.ok += 1
                    live.ok += 1
                    if retried_401:
                        stats.recovered_401 += 1
                        live.recovered += 1
                    if think:
                        await anyio.sleep(think)
                    continue
                if status == 401:
                    stats.unauthorized += 1
                    live.unauthorized += 1
                    failure = "http_401"
                else:
                    failure = f"http_{status}"
            assert failure is not None
            if failure != "http_401":
                stats.failures[failure] += 1
                live.failed += 1
            stats.failed_at.append(offset)
            # A failing call must not become a busy loop.
            await anyio.sleep(max(think, 0.01))

    def _collect(self, strategy: AuthStrategy, opened: float, ended: float) -> None:
        requests = strategy.token_requests()
        info = strategy.cell_info()
        ratio_default = (self.settings.policy or RefreshPolicy()).ratio
        for group, specs in self.settings.groups.items():
            stats = self.groups[group]
            stats.refresh_latency.merge(strategy.refresh_latency.get(group, Histogram()))
            for spec in specs:
                cell = info.get(spec.name, {})
                lifetimes: list[tuple[float, float]] = list(cell.get("lifetimes") or [])
                if not lifetimes and spec.lifetime:
                    lifetimes = [(opened, spec.lifetime)]
                first = min((sent for sent, _ in lifetimes), default=opened)
                ratio = float(cell.get("ratio", ratio_default))
                tokens = len(strategy.token_success_times.get(spec.name, []))
                replaced = int(strategy.token_invalidations.get(spec.name, 0))
                stats.cells.append(
                    {
                        "worker": self.index,
                        "cell": spec.name,
                        "token_requests": int(requests.get(spec.name, 0)),
                        # Tokens that arrived: the first, the renewals ahead of expiry, and the
                        # replacements of tokens the API refused with 401 (``replaced``).
                        "tokens": tokens,
                        "replaced": replaced,
                        "renewals": max(0, tokens - 1 - replaced) if tokens else None,
                        "ideal": ideal_requests(lifetimes, min(first, opened), ended, ratio),
                        # What the ideal was computed from, as offsets from the start of the
                        # load, so that a fleet-wide ideal can be computed over every worker.
                        "span": [round(min(first, opened) - self.start, 4), round(ended - self.start, 4)],
                        "lifetimes_at": [[round(sent - self.start, 4), life] for sent, life in lifetimes],
                        "ratio": ratio,
                        "lifetime": lifetimes[-1][1] if lifetimes else None,
                        "lifetimes_seen": sorted({round(life, 3) for _, life in lifetimes}),
                        "hits": _delta(cell, self.baseline.get(spec.name, {}), "hits"),
                        "misses": _delta(cell, self.baseline.get(spec.name, {}), "misses"),
                        "requests_at": [
                            round(t - self.start, 4) for t in strategy.token_request_times.get(spec.name, [])
                        ],
                        "refreshed_at": [
                            round(t - self.start, 4) for t in strategy.token_success_times.get(spec.name, [])
                        ],
                    }
                )
                stats.token_requests_at.extend(
                    t - self.start for t in strategy.token_request_times.get(spec.name, [])
                )
        self.result.groups = self.groups
        self.result.events = strategy.log_events()
        self.result.store = strategy.store_events()


def _delta(now: Mapping[str, Any], before: Mapping[str, Any], key: str) -> int | None:
    value = now.get(key)
    if value is None:
        return None
    return int(value) - int(before.get(key) or 0)
