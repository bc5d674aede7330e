"""Micro-benchmarks, each measured side by side with its baseline in the same process and run.

- **hit**: ``await pool.token(name)`` on a fresh token (metrics on, the default
  global registry) against a bare awaited dict lookup plus a
  ``time.monotonic()`` check, interleaved rounds; the ratio of the minima and
  of the medians.  Goal: ≤ 1.2×.
- **auth**: loopback GETs through ``pool.auth()`` against the same GETs with a
  static ``Authorization`` header, over one keep-alive connection to the
  emulator.  Goal: ≤ 1.03×.
- **stall**: the longest gap between consecutive wake-ups of a lag-monitor
  task (``await anyio.sleep(0)`` in a loop, same event loop) while the pool
  does its work: cold start (``TokenPool(...)`` to warm, the 5+1 emulator
  providers over HTTPS with ``ca_file=`` and over plain HTTP) and renewals
  (2 s tokens), beside the same monitor with no pool at all.  Each gap is
  measured in wall time (what callers feel, OS noise included) and in CPU
  time of the loop's thread (work done on the loop, noise excluded).  The
  emulator runs in its own process, so its work is not counted.  A self-test
  first checks that the monitor catches a synchronous 15 ms block (a
  ``time.sleep`` and a CPU burn).  Goal: < 1 ms.
- **memory**: N lazy cells (one ``ClientCredentials`` each, no token
  fetched), bytes per cell by tracemalloc, metrics on (a fresh
  ``CollectorRegistry``) and off, "pool only" (providers built before the
  measured interval) and "providers + pool".  Goal: ≤ 2 KiB per idle cell
  with the defaults.
- **idle**: the same N-cell lazy pool open and idle for a window, process CPU
  time over wall time (% of one core), metrics on and off; goal ≤ 1 % with
  metrics on.  **idle-warm**: the same with every cell holding a token
  (``warm_up="wait"`` against the emulator, 600 s tokens, so nothing renews in
  the window), by default with fewer cells (``--warm-cells``) because warming
  10,000 cells against the emulator takes ~30 s per pool on a 2-core machine.

Run::

    python -m benchmarks.micro_bench                 # everything (~3 min), benchmarks/out/micro.json
    python -m benchmarks.micro_bench --only hit --rounds 31
    python -m benchmarks.micro_bench --only memory --only idle --cells 2000 --idle-seconds 5
    python -m benchmarks.micro_bench --self-test     # the stall monitor must catch a 15 ms block
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import math
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import certifi
import httpx
import structlog
from prometheus_client import CollectorRegistry

from tokenpool import Token, TokenPool, providers
from tokenpool.testing import PROVIDERS, EmulatorProcess

OUT = Path(__file__).parent / "out"

SECTIONS = ("hit", "hit-store", "auth", "stall", "steps", "memory", "idle", "idle-warm")
#: ``--only scale`` (the old name) means the three scale measurements.
ALIASES = {"scale": ("memory", "idle", "idle-warm")}

#: Goals stated by the project.
GOAL_HIT_RATIO = 1.2
GOAL_AUTH_RATIO = 1.03
GOAL_STALL_MS = 1.0
GOAL_BYTES_PER_CELL = 2048
GOAL_IDLE_CPU_PERCENT = 1.0

#: Seconds a freshly opened pool is left alone before it is measured: every
#: cell's task has started and one metrics fold (``metrics_interval`` = 1 s,
#: the default) has happened, so the figures are of the steady idle state.
SETTLE_SECONDS = 1.5

_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the results)."""
    print(f"[micro_bench {time.perf_counter() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def registry_or_off(metrics_on: bool) -> bool | CollectorRegistry:
    """``metrics=`` for a measurement: a fresh registry (so runs share no series) or ``False``."""
    return CollectorRegistry() if metrics_on else False


def metrics_label(metrics_on: bool) -> str:
    return "metrics on" if metrics_on else "metrics off"


# =============================================================================================
# Providers, built with the public API only
# =============================================================================================


def generic(emulator: EmulatorProcess, *, tls: bool = False) -> providers.ClientCredentials:
    client_id, secret = emulator.credentials("generic")
    return providers.ClientCredentials(
        token_url=emulator.token_url("generic", tls=tls), client_id=client_id, client_secret=secret
    )


def emulator_providers(emulator: EmulatorProcess, *, tls: bool) -> dict[str, providers.Provider]:
    """The emulator's 5+1 providers (NTX Pay MX with its client certificate), over HTTPS or plain HTTP."""
    built: dict[str, providers.Provider] = {}
    for name in PROVIDERS:
        info = emulator.client_info(name)
        client_id, secret = str(info["client_id"]), str(info["client_secret"])
        base = emulator.url(name, tls=tls)
        if name == "ntxmx":
            built[name] = providers.NtxPayMX(
                client_id=client_id,
                client_secret=secret,
                client_certificate=emulator.client_cert,
                base_url=base,
            )
        elif name == "ntxpix":
            built[name] = providers.NtxPayPix(client_id=client_id, client_secret=secret, base_url=base)
        elif name == "payme":
            payme = providers.PayMe(
                client_id=client_id, client_secret=secret, audience=str(info["audience"]), base_url=base
            )
            if info.get("scope"):
                payme = providers.PayMe(
                    client_id=client_id,
                    client_secret=secret,
                    audience=str(info["audience"]),
                    base_url=base,
                    scope=str(info["scope"]),
                )
            built[name] = payme
        elif name == "zertiban":
            built[name] = providers.Zertiban(
                client_id=client_id,
                client_secret=secret,
                business_uuid=str(info["business_uuids"][0]),
                base_url=base,
            )
        elif name == "navro":
            built[name] = providers.Navro(
                client_id=client_id, client_secret=secret, company=str(info["company"]), base_url=base
            )
        elif name == "generic":
            built[name] = providers.ClientCredentials(
                token_url=emulator.token_url(name, tls=tls), client_id=client_id, client_secret=secret
            )
        else:
            raise RuntimeError(f"the emulator has a provider this benchmark does not know: {name!r}")
    return built


def tenant_names(cells: int) -> list[str]:
    return [f"tenant-{i:05d}" for i in range(cells)]


def tenant_providers(
    emulator: EmulatorProcess, names: Sequence[str], *, distinct_credentials: bool
) -> dict[str, providers.Provider]:
    """One ``ClientCredentials`` per cell against the emulator's generic endpoint (plain HTTP).

    With *distinct_credentials* every tenant gets its own client id and secret
    strings, as real tenants have (the emulator would refuse them: only for
    pools that fetch nothing); otherwise all share the emulator's default client.
    """
    client_id, secret = emulator.credentials("generic")
    token_url = emulator.token_url("generic", tls=False)
    built: dict[str, providers.Provider] = {}
    for i, name in enumerate(names):
        cid, sec = (
            (f"{client_id}-{i:05d}", f"{secret}{i:05d}") if distinct_credentials else (client_id, secret)
        )
        built[name] = providers.ClientCredentials(token_url=token_url, client_id=cid, client_secret=sec)
    return built


# =============================================================================================
# hit path and auth overhead
# =============================================================================================


async def _timed_loop(call: Callable[[str], Awaitable[object]], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await call("acme")
    return (time.perf_counter() - started) / n


def bare_lookup(token: Token) -> Callable[[str], Awaitable[Token]]:
    """The baseline of the hit path: an awaited dict lookup and a ``monotonic()`` check."""
    table: dict[str, Token] = {"acme": token}
    monotonic = time.monotonic

    async def bare(name: str) -> Token:
        entry = table[name]
        if monotonic() < entry.usable_until:
            return entry
        raise RuntimeError("expired")

    return bare


async def bench_hit(emulator: EmulatorProcess, rounds: int, per_round: int) -> dict[str, Any]:
    async with TokenPool({"acme": generic(emulator)}) as pool:  # metrics on, the global registry
        bare = bare_lookup(await pool.token("acme"))
        ours: list[float] = []
        base: list[float] = []
        for i in range(rounds):
            gc.collect()
            if i % 2:
                ours.append(await _timed_loop(pool.token, per_round))
                base.append(await _timed_loop(bare, per_round))
            else:
                base.append(await _timed_loop(bare, per_round))
                ours.append(await _timed_loop(pool.token, per_round))
        hits = pool.statistics().cells["acme"].hits
    return {
        "config": "metrics on (default, global registry), 1 cell, token fresh (no network)",
        "tokenpool_min_ns": min(ours) * 1e9,
        "baseline_min_ns": min(base) * 1e9,
        "ratio_min": min(ours) / min(base),
        "tokenpool_median_ns": statistics.median(ours) * 1e9,
        "baseline_median_ns": statistics.median(base) * 1e9,
        "ratio_median": statistics.median(ours) / statistics.median(base),
        "rounds": rounds,
        "calls_per_round": per_round,
        "hits_counted": hits,
        "goal": f"ratio_min <= {GOAL_HIT_RATIO}",
    }


async def bench_hit_store(emulator: EmulatorProcess, rounds: int, per_round: int) -> dict[str, Any]:
    """The hit path of a pool with a fleet store beside one without, and the bare lookup, interleaved.

    Both pools have metrics on (private registries); the store pool's token went
    through a real local redis-server (started here).  The hit path never
    touches the source, so the two should be equal within noise.
    """
    from tokenpool.fleet import RedisStore
    from tokenpool.testing import RedisServerProcess

    with RedisServerProcess() as server:
        async with (
            TokenPool({"acme": generic(emulator)}, metrics=CollectorRegistry()) as plain,
            TokenPool(
                {"acme": generic(emulator)}, metrics=CollectorRegistry(), store=RedisStore(server.url)
            ) as shared,
        ):
            bare = bare_lookup(await plain.token("acme"))
            await shared.token("acme")
            runs: dict[str, list[float]] = {"bare": [], "plain": [], "store": []}
            calls = {"bare": bare, "plain": plain.token, "store": shared.token}
            order = list(runs)
            for i in range(rounds):
                gc.collect()
                for key in order[i % 3 :] + order[: i % 3]:  # rotate who goes first
                    runs[key].append(await _timed_loop(calls[key], per_round))
            redis_commands = server.commands_processed()
    mins = {k: min(v) * 1e9 for k, v in runs.items()}
    medians = {k: statistics.median(v) * 1e9 for k, v in runs.items()}
    return {
        "config": "metrics on (private registries), 1 cell each, token fresh (no network); "
        "'store': TokenPool(store=RedisStore(local redis-server))",
        "min_ns": mins,
        "median_ns": medians,
        "store_vs_plain_min": mins["store"] / mins["plain"],
        "store_vs_bare_min": mins["store"] / mins["bare"],
        "plain_vs_bare_min": mins["plain"] / mins["bare"],
        "rounds": rounds,
        "calls_per_round": per_round,
        "redis_commands_during_run": redis_commands,
    }


async def bench_auth(emulator: EmulatorProcess, rounds: int, per_round: int) -> dict[str, Any]:
    url = f"{emulator.url('generic', tls=False)}/api/resource"
    async with TokenPool({"acme": generic(emulator)}) as pool:
        token = await pool.token("acme")
        limits = httpx.Limits(max_connections=1)
        async with (
            httpx.AsyncClient(auth=pool.auth("acme"), limits=limits) as with_auth,
            httpx.AsyncClient(headers={"Authorization": token.authorization}, limits=limits) as static,
        ):
            for client in (with_auth, static):  # open the connections before measuring
                assert (await client.get(url)).status_code == 200

            async def run(client: httpx.AsyncClient) -> float:
                started = time.perf_counter()
                for _ in range(per_round):
                    response = await client.get(url)
                    if response.status_code != 200:
                        raise RuntimeError(f"unexpected {response.status_code}")
                return (time.perf_counter() - started) / per_round

            ours: list[float] = []
            base: list[float] = []
            for i in range(rounds):
                if i % 2:
                    ours.append(await run(with_auth))
                    base.append(await run(static))
                else:
                    base.append(await run(static))
                    ours.append(await run(with_auth))
    return {
        "config": "metrics on (default), plain HTTP/1.1 loopback, one keep-alive connection",
        "auth_us": statistics.median(ours) * 1e6,
        "static_us": statistics.median(base) * 1e6,
        "ratio": statistics.median(ours) / statistics.median(base),
        "requests": 2 * rounds * per_round,
        "goal": f"<= {GOAL_AUTH_RATIO}",
    }


# =============================================================================================
# Event-loop stalls
# =============================================================================================


class GapHistogram:
    """Durations in 1 µs buckets up to 100 ms, longer ones kept exactly (little memory for many samples)."""

    LIMIT_US = 100_000

    def __init__(self) -> None:
        self.counts = [0] * self.LIMIT_US
        self.long: list[float] = []
        self.max = 0.0

    def add(self, gap: float) -> None:
        micros = int(gap * 1e6)
        if micros < self.LIMIT_US:
            self.counts[micros] += 1
        else:
            self.long.append(gap)
        if gap > self.max:
            self.max = gap

    @property
    def total(self) -> int:
        return sum(self.counts) + len(self.long)

    def quantile(self, q: float) -> float:
        """The *q* quantile in seconds (upper edge of its 1 µs bucket)."""
        total = self.total
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(q * total))
        seen = 0
        for micros, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return (micros + 1) / 1e6
        return sorted(self.long)[rank - seen - 1]


class LagMonitor:
    """Records the gaps between consecutive wake-ups of a task that only yields to the event loop.

    The task awaits a bare checkpoint (``anyio.sleep(0)``) in a loop, so each
    gap is one turn of the loop: everything else that ran in between, including
    code that blocked it.  Each gap is measured twice:

    - **wall** (``perf_counter``): what a caller waiting on the loop feels.  It
      catches every kind of block (CPU work, ``time.sleep``, a slow disk) but
      also the OS giving the CPU to another process, so on a busy machine it
      includes noise; the no-pool baseline shows how much.
    - **cpu** (``thread_time`` of the loop's thread): the CPU this thread burnt
      in that turn.  Other processes cannot inflate it, so it attributes CPU
      stalls to this process; it does not see blocking that sleeps, nor another
      thread of this process holding the GIL (both show in the wall gap only).
    """

    #: Gaps at least this long (wall or CPU) are kept with their time, for the report.
    NOTABLE = 0.0005

    def __init__(self) -> None:
        self.wall = GapHistogram()
        self.cpu = GapHistogram()
        self.notable: list[tuple[float, float, float]] = []
        self.started = anyio.Event()
        self.window_start = 0.0
        self.window_end = 0.0
        self._last = 0.0
        self._last_cpu = 0.0
        self._stopped = False

    async def run(self) -> None:
        perf, thread_time = time.perf_counter, time.thread_time
        self._last, self._last_cpu = perf(), thread_time()
        self.window_start = self._last
        self.started.set()
        while True:
            await anyio.lowlevel.checkpoint()
            if self._stopped:
                return
            self._record(perf(), thread_time())

    def _record(self, now: float, cpu: float) -> None:
        gap, cpu_gap = now - self._last, cpu - self._last_cpu
        self._last, self._last_cpu = now, cpu
        self.wall.add(gap)
        self.cpu.add(cpu_gap)
        if gap >= self.NOTABLE or cpu_gap >= self.NOTABLE:
            self.notable.append((gap, cpu_gap, now - self.window_start))

    def stop(self) -> None:
        """End the window now; the gap in progress (the monitor has not woken yet) is recorded too.

        Must be called from a task in the monitored loop.
        """
        if self._stopped:
            return
        self._record(time.perf_counter(), time.thread_time())
        self.window_end = self._last
        self._stopped = True

    def summary(self) -> dict[str, Any]:
        worst = sorted(self.notable, reverse=True)[:5]
        return {
            "window_s": self.window_end - self.window_start,
            "wakeups": self.wall.total,
            "max_ms": self.wall.max * 1e3,
            "p99_ms": self.wall.quantile(0.99) * 1e3,
            "p999_ms": self.wall.quantile(0.999) * 1e3,
            "gaps_over_1ms": sum(1 for gap, _, _ in self.notable if gap >= 0.001),
            "cpu_max_ms": self.cpu.max * 1e3,
            "cpu_p99_ms": self.cpu.quantile(0.99) * 1e3,
            "cpu_gaps_over_1ms": sum(1 for _, cpu, _ in self.notable if cpu >= 0.001),
            "worst": [{"wall_ms": gap * 1e3, "cpu_ms": cpu * 1e3, "at_s": at} for gap, cpu, at in worst],
        }


@contextlib.asynccontextmanager
async def lag_monitor() -> AsyncIterator[LagMonitor]:
    """Run a :class:`LagMonitor` beside the body; the window ends when the body calls ``stop()`` or ends."""
    monitor = LagMonitor()
    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.run)
        await monitor.started.wait()
        try:
            yield monitor
        finally:
            monitor.stop()


def merge(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Worst case over several windows (max of each figure), with each window's max kept."""
    return {
        "windows": len(summaries),
        "max_ms": max(s["max_ms"] for s in summaries),
        "p99_ms": max(s["p99_ms"] for s in summaries),
        "p999_ms": max(s["p999_ms"] for s in summaries),
        "per_window_max_ms": [round(s["max_ms"], 2) for s in summaries],
        "cpu_max_ms": max(s["cpu_max_ms"] for s in summaries),
        "cpu_p99_ms": max(s["cpu_p99_ms"] for s in summaries),
        "per_window_cpu_max_ms": [round(s["cpu_max_ms"], 2) for s in summaries],
        "window_s_median": statistics.median(s["window_s"] for s in summaries),
        "wakeups": sum(s["wakeups"] for s in summaries),
        "gaps_over_1ms": sum(s["gaps_over_1ms"] for s in summaries),
        "cpu_gaps_over_1ms": sum(s["cpu_gaps_over_1ms"] for s in summaries),
    }


def _burn_cpu(seconds: float) -> None:
    """Spin until this thread has used *seconds* of CPU (a stall made of work, as SSL loading is)."""
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


async def _inject(block: Callable[[float], None], seconds: float) -> dict[str, Any]:
    async def blocker() -> None:
        await anyio.sleep(0.02)
        block(seconds)  # runs synchronously inside a task: blocks the whole event loop

    async with lag_monitor() as monitor, anyio.create_task_group() as tg:
        tg.start_soon(blocker)
        await anyio.sleep(0.1)
    return monitor.summary()


async def stall_self_test(block_seconds: float = 0.015) -> dict[str, Any]:
    """Inject synchronous blocks into a task; the monitor must report at least their length.

    ``time.sleep`` must show in the wall gap; CPU-burning work in both the wall
    and the CPU gap.
    """
    slept = await _inject(time.sleep, block_seconds)
    burnt = await _inject(_burn_cpu, block_seconds)
    floor = block_seconds * 1e3
    return {
        "injected_ms": floor,
        "time_sleep": {"wall_max_ms": slept["max_ms"], "cpu_max_ms": slept["cpu_max_ms"]},
        "cpu_burn": {"wall_max_ms": burnt["max_ms"], "cpu_max_ms": burnt["cpu_max_ms"]},
        "passed": slept["max_ms"] >= floor and burnt["max_ms"] >= floor and burnt["cpu_max_ms"] >= floor,
    }


async def _cold_start_once(
    cells: dict[str, providers.Provider], ca_file: str | None, tail: float
) -> tuple[dict[str, Any], int, float]:
    """One window: ``TokenPool(...)`` built, entered and warmed (metrics on), then *tail* seconds."""
    async with lag_monitor() as monitor:
        started = time.perf_counter()
        pool = TokenPool(cells, ca_file=ca_file, metrics=CollectorRegistry(), warm_up="wait")
        async with pool:
            warm = time.perf_counter() - started
            await anyio.sleep(tail)
            monitor.stop()
            stats = pool.statistics()
    return monitor.summary(), sum(1 for c in stats.cells.values() if c.has_token), warm


class _StepTimer:
    """Times every callback the asyncio loop runs (asyncio only), attributed to its task's name.

    A gap seen by the lag monitor can be several callbacks run back to back in
    one loop iteration (six TLS handshakes finishing together, say), or a
    garbage-collector pass that happened to fall inside one.  This splits the
    two: the longest *single* step of the pool's own tasks (names starting
    with ``tokenpool``), with the collector's passes timed apart through
    ``gc.callbacks``.  CPU time of the loop thread, so other processes do not count.
    """

    def __init__(self) -> None:
        self.steps: list[tuple[float, str]] = []
        self.gc_pauses: list[float] = []
        self._gc_total = 0.0
        self._gc_started = 0.0
        self._original: Any = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            pause = time.thread_time() - self._gc_started
            self.gc_pauses.append(pause)
            self._gc_total += pause

    def __enter__(self) -> _StepTimer:
        import asyncio.events

        original = self._original = asyncio.events.Handle._run
        steps = self.steps

        def timed(handle: Any) -> None:
            started, collected = time.thread_time(), self._gc_total
            original(handle)
            callback = handle._callback
            task: Any = getattr(callback, "__self__", None)
            name = task.get_name() if task is not None and hasattr(task, "get_name") else "callback"
            # A collector pass that fell inside this step is the heap's cost, not the step's.
            steps.append((time.thread_time() - started - (self._gc_total - collected), str(name)))

        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio.events

        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]
        gc.callbacks.remove(self._on_gc)

    def summary(self) -> dict[str, Any]:
        ours = sorted((d for d, name in self.steps if name.startswith("tokenpool")), reverse=True)
        worst = sorted(self.steps, reverse=True)[:5]
        return {
            "pool_steps": len(ours),
            "pool_step_max_ms": (ours[0] if ours else 0.0) * 1e3,
            "pool_step_p99_ms": (ours[int(len(ours) * 0.01)] if ours else 0.0) * 1e3,
            "pool_steps_over_1ms": sum(1 for d in ours if d >= 0.001),
            "worst_steps": [{"cpu_ms": round(d * 1e3, 3), "task": name} for d, name in worst],
            "gc_passes": len(self.gc_pauses),
            "gc_pause_max_ms": max(self.gc_pauses, default=0.0) * 1e3,
        }


async def bench_steps(emulator: EmulatorProcess, *, reps: int, renew_seconds: float) -> dict[str, Any]:
    """The longest single step of the pool's tasks on cold start and renewals (asyncio only)."""
    results: dict[str, Any] = {}
    for key, tls in (("https", True), ("http", False)):
        timer = _StepTimer()
        with timer:
            for _ in range(reps):
                cells = emulator_providers(emulator, tls=tls)
                ca_file = emulator.ca_file if tls else None
                pool = TokenPool(cells, ca_file=ca_file, metrics=CollectorRegistry())
                async with pool:
                    await anyio.sleep(0.05)
        results[f"cold_start_{key}"] = timer.summary()
        progress(f"steps: cold start over {key}: {results[f'cold_start_{key}']['pool_step_max_ms']:.2f} ms")
    emulator.reset()
    for name in PROVIDERS:
        emulator.set_lifetime(name, expires_in=2)
    try:
        timer = _StepTimer()
        pool = TokenPool(
            emulator_providers(emulator, tls=True), ca_file=emulator.ca_file, metrics=CollectorRegistry()
        )
        async with pool:
            with timer:
                await anyio.sleep(renew_seconds)
            renewals = pool.statistics().token_requests - len(pool.names)
        results["renewals_https"] = {**timer.summary(), "renewals": renewals}
    finally:
        emulator.reset()
    return results


async def bench_stall(
    emulator: EmulatorProcess, *, reps: int, renew_seconds: float, renew_lifetime: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    progress("stall: self-test (a 15 ms time.sleep, then 15 ms of CPU work, in a task)")
    results["self_test"] = await stall_self_test()
    if not results["self_test"]["passed"]:
        progress(f"stall: SELF-TEST FAILED: {results['self_test']}")

    results["reference_ssl_context_ms"] = ssl_context_reference(emulator.ca_file)

    tail = 0.05
    cold: dict[str, Any] = {}
    variants: list[tuple[str, bool, Callable[[], dict[str, providers.Provider]], str]] = [
        ("https", True, lambda: emulator_providers(emulator, tls=True), "5+1 providers"),
        ("http", False, lambda: emulator_providers(emulator, tls=False), "5+1 providers"),
        ("http-1", False, lambda: {"generic": generic(emulator, tls=False)}, "one ClientCredentials"),
    ]
    for key, tls, build, what in variants:
        transport = "https" if tls else "http"
        progress(f"stall: cold start, {what} over {transport}, {reps} pools")
        summaries: list[dict[str, Any]] = []
        warm_s: list[float] = []
        missing = 0
        for _ in range(reps):
            cells = build()  # configuration: built before the window
            summary, with_token, warm = await _cold_start_once(cells, emulator.ca_file if tls else None, tail)
            summaries.append(summary)
            warm_s.append(warm)
            missing += len(cells) - with_token
        cold[key] = {
            "config": (
                f"{len(cells)} provider(s) ({', '.join(cells)}) over {transport}"
                + (", ca_file=emulator CA" if tls else ", no ca_file (pool default: certifi)")
                + ", warm_up='wait', metrics on (fresh registry); window = TokenPool(...) to "
                + f"{tail * 1e3:.0f} ms after the pool is open and warm"
            ),
            "providers": len(cells),
            **merge(summaries),
            "warm_up_ms_median": statistics.median(warm_s) * 1e3,
            "cells_without_token": missing,
        }
    results["cold_start"] = cold

    progress(f"stall: baseline, no pool, {reps} windows of the cold-start length")
    short = cold["https"]["window_s_median"]
    base_short: list[dict[str, Any]] = []
    for _ in range(reps):
        async with lag_monitor() as monitor:
            await anyio.sleep(short)
        base_short.append(monitor.summary())
    results["baseline_short"] = {
        "config": f"no pool, {reps} windows of {short * 1e3:.0f} ms",
        **merge(base_short),
    }

    renewals: dict[str, Any] = {}
    for transport, tls in (("https", True), ("http", False)):
        progress(f"stall: renewals over {transport}, {renew_lifetime} s tokens, {renew_seconds:g} s window")
        for name in PROVIDERS:
            emulator.set_lifetime(name, expires_in=renew_lifetime)
        try:
            cells = emulator_providers(emulator, tls=tls)
            async with TokenPool(
                cells, ca_file=emulator.ca_file if tls else None, metrics=CollectorRegistry(), warm_up="wait"
            ) as pool:
                await anyio.sleep(0.2)
                before = pool.statistics()
                async with lag_monitor() as monitor:
                    await anyio.sleep(renew_seconds)
                after = pool.statistics()
        finally:
            for name in PROVIDERS:
                emulator.set_lifetime(name)  # back to the documented lifetime
        failing = [c.name for c in after.cells.values() if c.consecutive_failures or not c.has_token]
        renewals[transport] = {
            "config": (
                f"{len(PROVIDERS)} providers over {transport}, expires_in={renew_lifetime} s (renewal every"
                f" ~{0.8 * renew_lifetime:.1f} s per cell), metrics on; pool opened before the window"
            ),
            **monitor.summary(),
            "renewals_in_window": after.token_requests - before.token_requests,
            "cells_failing": failing,
        }
    results["renewals"] = renewals

    progress(f"stall: baseline, no pool, {renew_seconds:g} s window")
    async with lag_monitor() as monitor:
        await anyio.sleep(renew_seconds)
    results["baseline"] = {"config": f"no pool, {renew_seconds:g} s window", **monitor.summary()}
    return results


def ssl_context_reference(ca_file: str) -> dict[str, float]:
    """Not the pool: what building a client SSL context costs on this machine (median of 5)."""

    def timed(cafile: str) -> float:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            ssl.create_default_context(cafile=cafile)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1e3

    return {"certifi_bundle": timed(certifi.where()), "emulator_ca": timed(ca_file)}


# =============================================================================================
# Memory and idle CPU at scale
# =============================================================================================


def _short_path(filename: str) -> str:
    for prefix in sorted({p for p in sys.path if p} | {os.getcwd()}, key=len, reverse=True):
        if filename.startswith(prefix + os.sep):
            return filename[len(prefix) + 1 :]
    return filename


async def measure_memory(
    emulator: EmulatorProcess, cells: int, *, metrics_on: bool, breakdown: int
) -> dict[str, Any]:
    """Bytes per lazy, idle cell: providers, then the pool, each a separate traced interval."""
    names = tenant_names(cells)
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        cell_providers = tenant_providers(emulator, names, distinct_credentials=True)
        gc.collect()
        provider_bytes = tracemalloc.get_traced_memory()[0] - start
        # From here on only what building and opening the pool allocates (and
        # still holds) is traced: the providers exist before this interval.
        tracemalloc.clear_traces()
        pool = TokenPool(cell_providers, warm_up="lazy", metrics=registry_or_off(metrics_on))
        async with pool:
            await anyio.sleep(SETTLE_SECONDS)
            gc.collect()
            pool_bytes, pool_peak = tracemalloc.get_traced_memory()
            top: list[dict[str, Any]] = []
            if breakdown:
                snapshot = tracemalloc.take_snapshot()
                for stat in snapshot.statistics("filename")[:breakdown]:
                    frame = stat.traceback[0]
                    top.append(
                        {
                            "file": _short_path(frame.filename),
                            "bytes_per_cell": stat.size / cells,
                            "blocks_per_cell": stat.count / cells,
                        }
                    )
                del snapshot
            stats = pool.statistics()
    finally:
        tracemalloc.stop()
    if stats.token_requests:
        raise RuntimeError(f"a lazy pool sent {stats.token_requests} token requests while idle")
    return {
        "config": (
            f"{cells:,} cells, one ClientCredentials each, warm_up='lazy', no token fetched, "
            f"{metrics_label(metrics_on)}" + (" (fresh CollectorRegistry)" if metrics_on else "")
        ),
        "cells": cells,
        "metrics": metrics_on,
        "pool_only_bytes_per_cell": pool_bytes / cells,
        "providers_bytes_per_cell": provider_bytes / cells,
        "providers_plus_pool_bytes_per_cell": (pool_bytes + provider_bytes) / cells,
        "pool_peak_bytes_per_cell": pool_peak / cells,
        "top_files_pool_only": top,
        "note": (
            "tracemalloc, blocks allocated and still held; pool only = TokenPool(...) built and entered "
            f"with the providers already built, measured {SETTLE_SECONDS} s after entering (every cell's "
            "task started, one metrics fold done); providers = the names dict and the ClientCredentials "
            "objects with distinct credential strings"
        ),
        "goal": f"pool only, metrics on <= {GOAL_BYTES_PER_CELL} B",
    }


async def measure_idle(
    emulator: EmulatorProcess, cells: int, *, metrics_on: bool, idle_seconds: float, warm: bool
) -> dict[str, Any]:
    """CPU of the process while an open pool sits idle (no tracemalloc, no lag monitor in the window)."""
    cell_providers = tenant_providers(emulator, tenant_names(cells), distinct_credentials=not warm)
    gc.collect()
    result: dict[str, Any] = {}
    async with lag_monitor() as monitor:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        async with TokenPool(
            cell_providers,
            warm_up="wait" if warm else "lazy",
            warm_up_timeout=600.0,
            metrics=registry_or_off(metrics_on),
        ) as pool:
            # The monitor watched the pool being built and entered; it ends here,
            # before the idle window, so its own CPU is not counted there.
            monitor.stop()
            open_cpu, open_wall = time.process_time() - cpu0, time.perf_counter() - wall0
            result["open_wall_s"] = open_wall
            result["open_max_stall_ms"] = monitor.summary()["max_ms"]
            if warm:
                result["warm_up_cpu_per_token_request_us"] = open_cpu / cells * 1e6
            await anyio.sleep(SETTLE_SECONDS)
            gc.collect()
            before = pool.statistics()
            cpu1, wall1 = time.process_time(), time.perf_counter()
            await anyio.sleep(idle_seconds)
            idle_cpu, idle_wall = time.process_time() - cpu1, time.perf_counter() - wall1
            after = pool.statistics()
    with_token = sum(1 for c in before.cells.values() if c.has_token)
    if warm and with_token != cells:
        progress(f"idle-warm: only {with_token} of {cells} cells got a token")
    result.update(
        {
            "config": (
                f"{cells:,} cells, one ClientCredentials each, "
                + (
                    "warm_up='wait' (every cell holds a 600 s token, plain HTTP)"
                    if warm
                    else "warm_up='lazy' (no token)"
                )
                + f", {metrics_label(metrics_on)}"
                + (" (fresh CollectorRegistry)" if metrics_on else "")
            ),
            "cells": cells,
            "metrics": metrics_on,
            "cells_with_token": with_token,
            "idle_seconds": idle_wall,
            "idle_cpu_percent": idle_cpu / idle_wall * 100,
            "token_requests_in_window": after.token_requests - before.token_requests,
            "goal": f"metrics on <= {GOAL_IDLE_CPU_PERCENT} % of one core",
        }
    )
    if warm:
        result["note"] = (
            "cells = --warm-cells, not --cells: every cell fetches a token from the emulator first "
            "(see warm_up_cpu_per_token_request_us for the client CPU each costs)"
        )
    return result


async def idle_baseline(seconds: float) -> dict[str, Any]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    await anyio.sleep(seconds)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"config": "no pool, the same process", "idle_seconds": wall, "idle_cpu_percent": cpu / wall * 100}


# =============================================================================================
# Report
# =============================================================================================


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "anyio": version("anyio"),
        "httpx": version("httpx"),
        "httpcore": version("httpcore"),
        "prometheus_client": version("prometheus_client"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def revision() -> dict[str, Any]:
    """Which tokenpool was measured: where it was imported from, its commit, uncommitted core files.

    Read-only git calls; outside a git checkout (an exported tree, say) only the path is known.
    """
    import tokenpool

    root = Path(tokenpool.__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
                ["git", *args],  # noqa: S607 - git from PATH
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    changed = git("diff", "--name-only", "HEAD", "--", "tokenpool").split() if commit else []
    return {"tokenpool_path": str(root), "commit": commit or None, "uncommitted_core_files": changed}


def _goal(ok: bool) -> str:
    return "✓" if ok else "✗"


def _stall_value(r: Mapping[str, Any], *, bold: bool = True) -> str:
    mark = "**" if bold else ""
    return (
        f"max {mark}{r['max_ms']:.1f} ms{mark} wall, {r['cpu_max_ms']:.1f} ms CPU; "
        f"p99 {r['p99_ms']:.3f} ms wall, {r['cpu_p99_ms']:.3f} ms CPU"
    )


def _stall_goal(r: Mapping[str, Any]) -> str:
    return (
        f"< {GOAL_STALL_MS:g} ms: wall {_goal(r['max_ms'] < GOAL_STALL_MS)} "
        f"CPU {_goal(r['cpu_max_ms'] < GOAL_STALL_MS)}"
    )


def table(results: Mapping[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    if "hit" in results:
        r = results["hit"]
        rows.append(
            (
                "hit path: `await pool.token()` vs bare awaited lookup + `monotonic()`",
                f"metrics on; min / median of {r['rounds']} interleaved rounds × {r['calls_per_round']:,}",
                f"{r['tokenpool_min_ns']:.0f} / {r['baseline_min_ns']:.0f} ns → **{r['ratio_min']:.2f}×** "
                f"(median {r['tokenpool_median_ns']:.0f} / {r['baseline_median_ns']:.0f} ns → "
                f"{r['ratio_median']:.2f}×)",
                f"≤ {GOAL_HIT_RATIO}× {_goal(r['ratio_min'] <= GOAL_HIT_RATIO)}",
            )
        )
    if "hit-store" in results:
        r = results["hit-store"]
        m = r["min_ns"]
        rows.append(
            (
                "hit path with a fleet store: `TokenPool(store=RedisStore(...))` vs without vs bare",
                f"metrics on; min of {r['rounds']} interleaved rounds × {r['calls_per_round']:,}",
                f"store {m['store']:.0f} / plain {m['plain']:.0f} / bare {m['bare']:.0f} ns → "
                f"store vs plain **{r['store_vs_plain_min']:.2f}×**, "
                f"store vs bare {r['store_vs_bare_min']:.2f}×",
                "≈ 1.0× vs plain",
            )
        )
    if "auth" in results:
        r = results["auth"]
        rows.append(
            (
                "auth overhead: GET through `pool.auth()` vs static header",
                f"metrics on; {r['requests']:,} loopback requests, medians",
                f"{r['auth_us']:.0f} / {r['static_us']:.0f} µs → **{r['ratio']:.3f}×**",
                f"≤ {GOAL_AUTH_RATIO}× {_goal(r['ratio'] <= GOAL_AUTH_RATIO)}",
            )
        )
    if "stall" in results:
        s = results["stall"]
        t = s["self_test"]
        rows.append(
            (
                "stall monitor self-test",
                f"{t['injected_ms']:g} ms `time.sleep()`, then {t['injected_ms']:g} ms of CPU work, "
                "in a task",
                f"wall max {t['time_sleep']['wall_max_ms']:.1f} ms / "
                f"wall {t['cpu_burn']['wall_max_ms']:.1f}, CPU {t['cpu_burn']['cpu_max_ms']:.1f} ms",
                f"≥ {t['injected_ms']:g} ms {_goal(t['passed'])}",
            )
        )
        for key, r in s["cold_start"].items():
            transport = "https" if key == "https" else "http"
            ca = "ca_file=emulator CA" if transport == "https" else "no ca_file"
            what = f"{r['providers']} emulator providers" if r["providers"] > 1 else "1 ClientCredentials"
            rows.append(
                (
                    f"loop stall, cold start ({transport})",
                    f"{what}, {ca}, metrics on; worst of {r['windows']} pools (per pool)",
                    _stall_value(r) + " (" + ", ".join(f"{x:.1f}" for x in r["per_window_max_ms"]) + " ms)",
                    _stall_goal(r),
                )
            )
        b = s["baseline_short"]
        rows.append(
            (
                "loop stall, baseline (no pool)",
                f"same monitor, {b['windows']} windows of {b['window_s_median'] * 1e3:.0f} ms",
                _stall_value(b, bold=False),
                "",
            )
        )
        for transport, r in s["renewals"].items():
            rows.append(
                (
                    f"loop stall, renewals ({transport})",
                    f"{len(PROVIDERS)} providers, {r['renewals_in_window']} renewals "
                    f"in {r['window_s']:.1f} s, metrics on",
                    _stall_value(r) + f"; {r['gaps_over_1ms']} gaps ≥ 1 ms ({r['cpu_gaps_over_1ms']} on CPU)",
                    _stall_goal(r),
                )
            )
        b = s["baseline"]
        rows.append(
            (
                "loop stall, baseline (no pool)",
                f"same monitor, {b['window_s']:.1f} s window",
                _stall_value(b, bold=False)
                + f"; {b['gaps_over_1ms']} gaps ≥ 1 ms ({b['cpu_gaps_over_1ms']} on CPU)",
                "",
            )
        )
        ref = s["reference_ssl_context_ms"]
        rows.append(
            (
                "reference (not the pool): `ssl.create_default_context()`",
                "certifi bundle / emulator CA, median of 5",
                f"{ref['certifi_bundle']:.1f} / {ref['emulator_ca']:.2f} ms",
                "",
            )
        )
    for key in ("metrics_on", "metrics_off"):
        r = results.get("memory", {}).get(key)
        if r is None:
            continue
        on = r["metrics"]
        rows.append(
            (
                f"memory per idle cell, pool only ({metrics_label(on)})",
                f"{r['cells']:,} lazy cells, providers excluded",
                f"**{r['pool_only_bytes_per_cell']:,.0f} B**",
                f"≤ {GOAL_BYTES_PER_CELL:,} B {_goal(r['pool_only_bytes_per_cell'] <= GOAL_BYTES_PER_CELL)}"
                if on
                else "",
            )
        )
        rows.append(
            (
                f"memory per idle cell, providers + pool ({metrics_label(on)})",
                f"{r['cells']:,} lazy cells, providers included",
                f"{r['providers_plus_pool_bytes_per_cell']:,.0f} B "
                f"(providers {r['providers_bytes_per_cell']:,.0f} B)",
                "",
            )
        )
    for section, label in (("idle", "lazy, no token"), ("idle-warm", "every cell holds a token")):
        for key in ("metrics_on", "metrics_off"):
            r = results.get(section, {}).get(key)
            if r is None:
                continue
            on = r["metrics"]
            extra = ""
            if "warm_up_cpu_per_token_request_us" in r:
                extra = (
                    f"; warm-up {r['open_wall_s']:.1f} s, "
                    f"{r['warm_up_cpu_per_token_request_us']:,.0f} µs CPU per token request"
                )
            rows.append(
                (
                    f"idle CPU ({metrics_label(on)})",
                    f"{r['cells']:,} cells, {label}, {r['idle_seconds']:.0f} s window",
                    f"**{r['idle_cpu_percent']:.2f} %** of one core ({r['token_requests_in_window']} token "
                    "requests in the window; opening blocked the loop "
                    f"{r['open_max_stall_ms']:,.0f} ms{extra})",
                    f"≤ {GOAL_IDLE_CPU_PERCENT:g} % {_goal(r['idle_cpu_percent'] <= GOAL_IDLE_CPU_PERCENT)}"
                    if on
                    else "",
                )
            )
    if "idle_baseline" in results:
        r = results["idle_baseline"]
        rows.append(("idle CPU, baseline", "no pool", f"{r['idle_cpu_percent']:.2f} %", ""))
    lines = ["| figure | configuration | value | goal |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


# =============================================================================================
# Main
# =============================================================================================


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.micro_bench",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        choices=[*SECTIONS, *ALIASES],
        action="append",
        help="run only these (repeatable; 'scale' = memory, idle and idle-warm)",
    )
    parser.add_argument(
        "--rounds", type=int, default=21, help="interleaved rounds for hit and auth (default 21)"
    )
    parser.add_argument("--hit-calls", type=int, default=100_000, help="calls per round for the hit path")
    parser.add_argument("--auth-requests", type=int, default=150, help="requests per round for auth overhead")
    parser.add_argument(
        "--cells", type=int, default=10_000, help="cells for memory and idle (default 10,000)"
    )
    parser.add_argument(
        "--warm-cells",
        type=int,
        default=1_000,
        help="cells for idle-warm, each fetching a token first (default 1,000; 10,000 takes ~30 s per pool)",
    )
    parser.add_argument(
        "--idle-seconds", "--idle", type=float, default=10.0, help="idle window measured (default 10 s)"
    )
    parser.add_argument(
        "--stall-reps", type=int, default=5, help="cold-start pools per transport (default 5)"
    )
    parser.add_argument(
        "--renew-seconds", type=float, default=6.0, help="renewal window for stalls (default 6 s)"
    )
    parser.add_argument(
        "--renew-lifetime", type=int, default=2, help="expires_in of renewing tokens (default 2 s)"
    )
    parser.add_argument(
        "--memory-breakdown",
        type=int,
        default=0,
        metavar="K",
        help="also list the K source files holding most of the pool's memory (a tracemalloc snapshot: "
        "adds ~40 s at 10,000 cells with metrics on; default 0, off)",
    )
    parser.add_argument(
        "--self-test", action="store_true", help="only check that the stall monitor catches a 15 ms block"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="output directory (default benchmarks/out)")
    return parser


def chosen_sections(only: Sequence[str] | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    wanted: set[str] = set()
    for name in only:
        wanted.update(ALIASES.get(name, (name,)))
    return [s for s in SECTIONS if s in wanted]


@contextlib.contextmanager
def section(name: str) -> Iterator[None]:
    started = time.perf_counter()
    progress(f"{name}: start")
    yield
    progress(f"{name}: done in {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # An application's choice (the library never configures structlog): keep
    # info-level refresh events out of the measurements.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.self_test:
        result = anyio.run(stall_self_test)
        print(json.dumps(result, indent=2))
        return 0 if result["passed"] else 1
    chosen = chosen_sections(args.only)
    results: dict[str, Any] = {
        "machine": machine(),
        "revision": revision(),
        "options": vars(args) | {"out": str(args.out)},
    }
    with EmulatorProcess() as emulator:
        if "hit" in chosen:
            with section("hit"):
                results["hit"] = anyio.run(bench_hit, emulator, args.rounds, args.hit_calls)
            r = results["hit"]
            print(
                f"hit path (metrics on): tokenpool {r['tokenpool_min_ns']:.0f} ns vs bare "
                f"{r['baseline_min_ns']:.0f} ns -> {r['ratio_min']:.2f}x min, "
                f"{r['ratio_median']:.2f}x median (goal <= {GOAL_HIT_RATIO})"
            )
        if "hit-store" in chosen and (shutil.which("redis-server") is None or find_spec("redis") is None):
            progress("hit-store: skipped (needs redis-server and the redis extra)")
        elif "hit-store" in chosen:
            with section("hit-store"):
                results["hit-store"] = anyio.run(bench_hit_store, emulator, args.rounds, args.hit_calls)
            r = results["hit-store"]
            print(
                f"hit path with a store: {r['min_ns']['store']:.0f} ns vs {r['min_ns']['plain']:.0f} ns "
                f"without -> {r['store_vs_plain_min']:.2f}x (bare {r['min_ns']['bare']:.0f} ns)"
            )
        if "auth" in chosen:
            with section("auth"):
                results["auth"] = anyio.run(bench_auth, emulator, args.rounds, args.auth_requests)
            r = results["auth"]
            print(
                f"auth overhead: pool.auth() {r['auth_us']:.0f} us vs static header {r['static_us']:.0f} us "
                f"-> {r['ratio']:.3f}x (goal <= {GOAL_AUTH_RATIO})"
            )
        if "steps" in chosen:
            with section("steps"):
                results["steps"] = anyio.run(
                    functools.partial(
                        bench_steps, emulator, reps=args.stall_reps, renew_seconds=args.renew_seconds
                    )
                )
            r = results["steps"]
            print(
                "longest single step of the pool's tasks (loop CPU, asyncio; GC passes subtracted, "
                "reported apart): "
                + ", ".join(
                    f"{key} {v['pool_step_max_ms']:.2f} ms (GC max {v['gc_pause_max_ms']:.1f} ms)"
                    for key, v in r.items()
                )
            )
        if "stall" in chosen:
            with section("stall"):
                results["stall"] = anyio.run(
                    functools.partial(
                        bench_stall,
                        emulator,
                        reps=args.stall_reps,
                        renew_seconds=args.renew_seconds,
                        renew_lifetime=args.renew_lifetime,
                    )
                )
            s = results["stall"]
            print(
                "loop stall (metrics on), max wall / loop CPU: cold start "
                + ", ".join(
                    f"{key} {r['max_ms']:.1f} / {r['cpu_max_ms']:.1f} ms"
                    for key, r in s["cold_start"].items()
                )
                + "; renewals "
                + ", ".join(
                    f"{key} {r['max_ms']:.1f} / {r['cpu_max_ms']:.1f} ms" for key, r in s["renewals"].items()
                )
                + f"; no-pool baseline {s['baseline']['max_ms']:.1f} / {s['baseline']['cpu_max_ms']:.1f} ms"
                f" (goal < {GOAL_STALL_MS:g} ms); "
                f"self-test {'passed' if s['self_test']['passed'] else 'FAILED'}"
            )
        if "memory" in chosen:
            with section("memory"):
                memory: dict[str, Any] = {}
                for on in (True, False):
                    progress(f"memory: {args.cells:,} lazy cells, {metrics_label(on)} (tracemalloc, slow)")
                    memory["metrics_on" if on else "metrics_off"] = anyio.run(
                        functools.partial(
                            measure_memory,
                            emulator,
                            args.cells,
                            metrics_on=on,
                            breakdown=args.memory_breakdown,
                        )
                    )
                    gc.collect()
                results["memory"] = memory
            for r in memory.values():
                print(
                    f"memory ({metrics_label(r['metrics'])}, {r['cells']} lazy cells): pool only "
                    f"{r['pool_only_bytes_per_cell']:.0f} B/cell, providers + pool "
                    f"{r['providers_plus_pool_bytes_per_cell']:.0f} B/cell (goal <= {GOAL_BYTES_PER_CELL} B)"
                )
        for name, warm, cells in (("idle", False, args.cells), ("idle-warm", True, args.warm_cells)):
            if name not in chosen:
                continue
            with section(name):
                idle: dict[str, Any] = {}
                for on in (True, False):
                    progress(
                        f"{name}: {cells:,} cells, {metrics_label(on)}, "
                        f"{'warm-up, then ' if warm else ''}{args.idle_seconds:g} s idle"
                    )
                    idle["metrics_on" if on else "metrics_off"] = anyio.run(
                        functools.partial(
                            measure_idle,
                            emulator,
                            cells,
                            metrics_on=on,
                            idle_seconds=args.idle_seconds,
                            warm=warm,
                        )
                    )
                    gc.collect()
                results[name] = idle
            for r in idle.values():
                print(
                    f"{name} ({metrics_label(r['metrics'])}, {r['cells']} cells): "
                    f"{r['idle_cpu_percent']:.2f} % CPU over {r['idle_seconds']:.1f} s, "
                    f"{r['token_requests_in_window']} token requests in the window (goal <= "
                    f"{GOAL_IDLE_CPU_PERCENT} % with metrics on)"
                )
        if "idle" in chosen or "idle-warm" in chosen:
            results["idle_baseline"] = anyio.run(idle_baseline, min(args.idle_seconds, 3.0))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "micro.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(table(results))
    print()
    print(f"results written to {path}")
    failed_self_test = "stall" in results and not results["stall"]["self_test"]["passed"]
    return 1 if failed_self_test else 0


if __name__ == "__main__":
    sys.exit(main())
