"""Micro-benchmarks, each measured side by side with its baseline in the same process and run.

- **hit**: ``await pool.token(name)`` on a fresh token (metrics on) against a bare
  awaited dict lookup plus a ``time.monotonic()`` check.  Goal: ratio ≤ 2.0.
- **auth**: loopback GETs through ``pool.auth()`` against the same GETs with a
  static ``Authorization`` header, over one keep-alive connection to the
  emulator.  Goal: ratio ≤ 1.03.
- **scale**: one worker with N cells (tenants): memory per cell, CPU while idle
  (timers only, no polling), CPU per refresh.

Rounds alternate between the two sides so drift on a noisy machine hits both
alike; the figures are medians over rounds.  Run::

    python -m benchmarks.micro_bench                # all three, results in benchmarks/out/micro.json
    python -m benchmarks.micro_bench --only hit --rounds 31
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

from tokenpool import TokenPool
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

OUT = Path(__file__).parent / "out"


def generic(emulator: EmulatorProcess, *, tls: bool = False) -> ClientCredentials:
    client_id, secret = emulator.credentials("generic")
    return ClientCredentials(
        token_url=f"{emulator.url('generic', tls=tls)}/oauth/token", client_id=client_id, client_secret=secret
    )


async def _timed_loop(call: Callable[[str], Awaitable[object]], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await call("acme")
    return (time.perf_counter() - started) / n


async def bench_hit(emulator: EmulatorProcess, rounds: int, per_round: int) -> dict[str, Any]:
    async with TokenPool({"acme": generic(emulator)}) as pool:  # metrics on, global registry
        token = await pool.token("acme")
        table = {"acme": token}
        monotonic = time.monotonic

        async def bare(name: str) -> object:
            entry = table[name]
            if monotonic() < entry.usable_until:
                return entry
            raise RuntimeError("expired")

        ours: list[float] = []
        base: list[float] = []
        for i in range(rounds):
            gc.collect()
            first, second = (pool.token, bare) if i % 2 else (bare, pool.token)
            a = await _timed_loop(first, per_round)
            b = await _timed_loop(second, per_round)
            (ours if first is pool.token else base).append(a)
            (base if first is pool.token else ours).append(b)
        hits = pool.statistics().cells["acme"].hits
    return {
        "tokenpool_ns": statistics.median(ours) * 1e9,
        "baseline_ns": statistics.median(base) * 1e9,
        "ratio": statistics.median(ours) / statistics.median(base),
        "rounds": rounds,
        "calls_per_round": per_round,
        "hits_counted": hits,
        "goal": "<= 2.0",
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

            ours, base = [], []
            for i in range(rounds):
                if i % 2:
                    ours.append(await run(with_auth))
                    base.append(await run(static))
                else:
                    base.append(await run(static))
                    ours.append(await run(with_auth))
    return {
        "auth_us": statistics.median(ours) * 1e6,
        "static_us": statistics.median(base) * 1e6,
        "ratio": statistics.median(ours) / statistics.median(base),
        "requests": 2 * rounds * per_round,
        "goal": "<= 1.03",
    }


async def bench_scale(emulator: EmulatorProcess, cells: int, idle_seconds: float) -> dict[str, Any]:
    provider = generic(emulator)
    names = [f"tenant-{i:05d}" for i in range(cells)]

    # Pass 1, memory: tracemalloc slows everything down, so it gets a pass of its own.
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    async with TokenPool(dict.fromkeys(names, provider), warm_up="lazy", metrics=False) as pool:
        await pool.warm_up(timeout=300)
        gc.collect()
        after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    allocated = sum(stat.size_diff for stat in after.compare_to(before, "filename"))

    # Pass 2, CPU: warm-up cost per token request, then a quiet pool's idle cost.
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with TokenPool(dict.fromkeys(names, provider), warm_up="lazy", metrics=False) as pool:
        results = await pool.warm_up(timeout=300)
        warm_cpu, warm_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        failed = sum(1 for error in results.values() if error is not None)
        cpu1 = time.process_time()
        await anyio.sleep(idle_seconds)
        idle_cpu = time.process_time() - cpu1
        stats = pool.statistics()
    return {
        "cells": cells,
        "warm_up_failures": failed,
        "bytes_per_cell": allocated / cells,
        "note_memory": "tracemalloc, includes each cell's token, task and schedule",
        "warm_up_wall_s": warm_wall,
        "cpu_per_refresh_us": warm_cpu / cells * 1e6,
        "note_cpu_per_refresh": "client side: HTTP request and parsing (plain HTTP/1.1, loopback)",
        "idle_seconds": idle_seconds,
        "idle_cpu_percent": idle_cpu / idle_seconds * 100,
        "token_requests": stats.token_requests,
    }


def machine() -> dict[str, Any]:
    import os

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "anyio": _version("anyio"),
        "httpx": _version("httpx"),
    }


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.micro_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--only", choices=["hit", "auth", "scale"], action="append", help="run only these")
    parser.add_argument(
        "--rounds", type=int, default=21, help="alternating rounds per comparison (default 21)"
    )
    parser.add_argument("--hit-calls", type=int, default=100_000, help="calls per round for the hit path")
    parser.add_argument("--auth-requests", type=int, default=150, help="requests per round for auth overhead")
    parser.add_argument("--cells", type=int, default=10_000, help="cells for the scale benchmark")
    parser.add_argument(
        "--idle", type=float, default=5.0, help="idle seconds measured in the scale benchmark"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="output directory (default benchmarks/out)")
    args = parser.parse_args(argv)
    # An application's choice (the library never configures structlog): keep
    # info-level refresh events out of the measurements.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    chosen = args.only or ["hit", "auth", "scale"]
    results: dict[str, Any] = {"machine": machine()}
    with EmulatorProcess() as emulator:
        if "hit" in chosen:
            results["hit"] = anyio.run(bench_hit, emulator, args.rounds, args.hit_calls)
            r = results["hit"]
            print(
                f"hit path: tokenpool {r['tokenpool_ns']:.0f} ns vs bare {r['baseline_ns']:.0f} ns "
                f"-> {r['ratio']:.2f}x (goal <= 2.0)"
            )
        if "auth" in chosen:
            results["auth"] = anyio.run(bench_auth, emulator, args.rounds, args.auth_requests)
            r = results["auth"]
            print(
                f"auth overhead: pool.auth() {r['auth_us']:.0f} us vs static header {r['static_us']:.0f} us "
                f"-> {r['ratio']:.3f}x (goal <= 1.03)"
            )
        if "scale" in chosen:
            results["scale"] = anyio.run(bench_scale, emulator, args.cells, args.idle)
            r = results["scale"]
            print(
                f"scale: {r['cells']} cells, {r['bytes_per_cell']:.0f} B/cell, "
                f"idle CPU {r['idle_cpu_percent']:.2f} %, "
                f"{r['cpu_per_refresh_us']:.0f} us CPU per refresh, {r['warm_up_failures']} failures"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "micro.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
