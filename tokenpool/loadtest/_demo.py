"""``tokenpool demo``: a small fleet against the loopback emulator, and a summary anyone can check.

It starts the emulator (``python -m tokenpool.testing``) with token lifetimes
compressed, runs W worker processes × C tasks per provider through
``pool.auth(name)`` for a while, and prints per provider: calls, 401s, token
requests per worker against the ideal ``⌈T / (r·L)⌉``, hit ratio and token
wait.  The emulator rejects expired tokens by its own clock, so a single
token served too late would show up as a 401.  Exit status: 0 when every call
succeeded, 1 on any 401 or lost call, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .._argtypes import non_negative_number, positive_int, positive_number
from ._emulator import emulator_specs
from ._progress import ProgressPrinter
from ._results import FleetResult
from ._run import run_fleet
from ._settings import ALL_PROVIDERS, FIVE_PROVIDERS, FleetSettings

__all__ = ["add_demo_arguments", "run_demo"]


def _providers(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ALL_PROVIDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(ALL_PROVIDERS)} (comma-separated)")
    return names


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``tokenpool demo``'s options to *parser*."""
    parser.add_argument(
        "--workers", type=positive_int, default=3, metavar="W", help="worker processes (default 3)"
    )
    parser.add_argument(
        "--tasks",
        type=positive_int,
        default=10,
        metavar="C",
        help="concurrent tasks per provider in each worker (default 10)",
    )
    parser.add_argument(
        "--duration", type=positive_number, default=30.0, metavar="S", help="seconds of load (default 30)"
    )
    parser.add_argument(
        "--lifetime-scale",
        type=positive_number,
        default=0.01,
        metavar="X",
        help="multiply every documented token lifetime by X (default 0.01: 300 s → 3 s, 600 s → 6 s, "
        "3600 s → 36 s, 8600 s → 86 s)",
    )
    parser.add_argument(
        "--max-lifetime",
        type=non_negative_number,
        default=None,
        metavar="S",
        help="cap every lifetime at S seconds so each provider is renewed several times during the run "
        "(default: a quarter of --duration, at least 2; 0 disables the cap)",
    )
    parser.add_argument(
        "--tenants",
        type=positive_int,
        default=3,
        metavar="N",
        help="Zertiban tenants (businessUuids) per worker, one token each (default 3)",
    )
    parser.add_argument(
        "--providers",
        type=_providers,
        default=FIVE_PROVIDERS,
        metavar="LIST",
        help=f"comma-separated providers (default {','.join(FIVE_PROVIDERS)}; also: generic)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=positive_int,
        default=8,
        metavar="N",
        help="FIFO bound on each worker's in-flight HTTP requests; the other tasks queue in order "
        "(default 8; without a bound httpcore's pool, not tokenpool, becomes the bottleneck)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the full results as JSON to PATH")
    parser.add_argument("--http1", action="store_true", help="resource calls over HTTP/1.1 instead of HTTP/2")
    parser.add_argument(
        "--plain-http",
        action="store_true",
        help="talk to the emulator over plain HTTP (loopback only) instead of HTTPS and mutual TLS",
    )
    parser.add_argument("--quiet", action="store_true", help="no live progress line")


def default_max_lifetime(duration: float) -> float:
    """The lifetime cap that renews every token at least three times in *duration* seconds."""
    return max(2.0, math.floor(duration / 4.0))


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo described by *args*; returns the exit status."""
    try:
        from ..testing import EmulatorProcess
    except ImportError as exc:  # pragma: no cover - the testing extra is missing
        print(
            f"tokenpool demo needs the testing extra: pip install 'tokenpool[testing]' ({exc})",
            file=sys.stderr,
        )
        return 2
    out = sys.stdout
    duration = float(args.duration)
    cap = default_max_lifetime(duration) if args.max_lifetime is None else float(args.max_lifetime)
    tls = not args.plain_http
    print(
        f"tokenpool demo: starting the loopback emulator (lifetime scale {args.lifetime_scale:g}"
        + (f", lifetimes capped at {cap:g} s" if cap > 0 else "")
        + ")…",
        file=out,
        flush=True,
    )
    started = time.monotonic()
    with EmulatorProcess(lifetime_scale=args.lifetime_scale) as emu:
        lifetimes: dict[str, int] = {}
        for provider in args.providers:
            current = int(emu.stats(events=False)["providers"][provider]["expires_in"])
            if cap > 0 and current > cap:
                current = emu.set_lifetime(provider, expires_in=max(1, int(cap)))
            lifetimes[provider] = current
        specs = emulator_specs(emu, providers=args.providers, tls=tls, zertiban_tenants=args.tenants)
        settings = FleetSettings(
            specs=tuple(specs),
            workers=args.workers,
            tasks=args.tasks,
            duration=duration,
            max_in_flight=args.max_in_flight,
            http2=not args.http1,
            ca_file=emu.ca_file if tls else None,
        )
        print(
            f"running {args.workers} worker processes × {args.tasks} tasks per provider × "
            f"{len(args.providers)} providers ({len(specs)} token cells per worker) for {duration:g} s; "
            "lifetimes: " + ", ".join(f"{p} {s} s" for p, s in lifetimes.items()),
            file=out,
            flush=True,
        )
        progress = None if args.quiet else ProgressPrinter("demo", duration)
        result = run_fleet(settings, progress=progress)
        server: dict[str, Any] = {}
        if not result.interrupted and emu.running:
            # On Ctrl-C the emulator got the signal too and is already gone.
            server = emu.stats(events=False)
    report = build_report(result, server, lifetimes)
    report["wall_seconds"] = round(time.monotonic() - started, 3)
    print_summary(report, result, out)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}", file=out)
    if result.interrupted:
        print("tokenpool demo: interrupted", file=sys.stderr)
        return 130
    return 0 if report["passed"] else 1


def build_report(result: FleetResult, server: dict[str, Any], lifetimes: dict[str, int]) -> dict[str, Any]:
    """The demo's JSON: the fleet's own figures, the emulator's counters, and the verdict."""
    data = result.to_json()
    providers = data["providers"]
    server_providers = server.get("providers", {})
    for name, figures in providers.items():
        figures["lifetime_s"] = lifetimes.get(name)
        seen = server_providers.get(name, {})
        figures["emulator"] = {
            "token_requests": seen.get("token_requests"),
            "resource_calls": seen.get("resource_calls"),
            "resource_ok": seen.get("resource_ok"),
            "resource_401": sum((seen.get("resource_401") or {}).values()),
            "token_failures": seen.get("token_failures"),
        }
        per_worker = figures["token_requests_per_worker"]
        figures["min_token_requests_per_worker"] = min((w["token_requests"] for w in per_worker), default=0)
    total = data["total"]
    problems: list[str] = []
    if total["unauthorized"]:
        problems.append(f"{total['unauthorized']} calls failed with 401")
    if data["lost_calls"]:
        problems.append(f"{data['lost_calls']} calls did not succeed")
    if data["errors"]:
        problems.extend(data["errors"])
    if data["missing_workers"]:
        problems.append(f"no result from workers {data['missing_workers']}")
    if total["calls"] == 0:
        problems.append("no calls were made")
    data["problems"] = problems
    data["passed"] = not problems and not result.interrupted
    return data


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _workers_cell(rows: list[dict[str, Any]]) -> str:
    return "/".join(str(r["token_requests"]) for r in rows)


def _ideal_cell(rows: list[dict[str, Any]]) -> str:
    ideals = sorted({int(r["ideal"]) for r in rows})
    return "/".join(str(i) for i in ideals)


def print_summary(report: dict[str, Any], result: FleetResult, out: TextIO) -> None:
    """The human-readable summary table."""
    settings = report["settings"]
    header = (
        "provider",
        "lifetime",
        "cells",
        "calls",
        "calls/s",
        "401s",
        "failed",
        "token req/worker",
        "ideal",
        "hit ratio",
        "wait p50 ms",
        "wait p99 ms",
        "latency p50 ms",
    )
    rows: list[tuple[str, ...]] = []
    for name, g in report["providers"].items():
        per_worker = g["token_requests_per_worker"]
        cells = g["cells"] // max(1, len(per_worker))
        hit = g["hit_ratio"]
        rows.append(
            (
                name,
                f"{g['lifetime_s']} s" if g.get("lifetime_s") is not None else "?",
                str(cells),
                f"{g['calls']:,}",
                f"{g['calls_per_s']:,.0f}",
                f"{g['unauthorized']}" + (f" (+{g['recovered_401']} retried)" if g["recovered_401"] else ""),
                str(g["failed"]),
                _workers_cell(per_worker),
                _ideal_cell(per_worker),
                "-" if hit is None else f"{hit:.4f}",
                _ms(g["token_wait"]["p50_ms"]),
                _ms(g["token_wait"]["p99_ms"]),
                _ms(g["latency"]["p50_ms"]),
            )
        )
    t = report["total"]
    rows.append(
        (
            "total",
            "",
            "",
            f"{t['calls']:,}",
            f"{t['calls_per_s']:,.0f}",
            str(t["unauthorized"]) + (f" (+{t['recovered_401']} retried)" if t["recovered_401"] else ""),
            str(t["failed"]),
            str(t["token_requests"]),
            str(t["ideal_token_requests"]),
            "-" if t["hit_ratio"] is None else f"{t['hit_ratio']:.4f}",
            _ms(t["token_wait"]["p50_ms"]),
            _ms(t["token_wait"]["p99_ms"]),
            _ms(t["latency"]["p50_ms"]),
        )
    )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print("", file=out)
    print(
        f"tokenpool demo — {settings['workers']} workers × {settings['tasks_per_provider']} tasks per "
        f"provider, {report['duration_s']:.1f} s of load, HTTP/{'2' if settings['http2'] else '1.1'}"
        f"{' over TLS' if settings['tls'] else ' (plain)'}, ≤ {settings['max_in_flight_per_worker']} "
        f"requests in flight per worker, refresh at r = {settings['refresh_ratio']:g} of the lifetime",
        file=out,
    )
    print("", file=out)
    print(line(header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows[:-1]:
        print(line(row), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    print(line(rows[-1]), file=out)
    print("", file=out)
    resends = int(t.get("goaway_resends") or 0)
    if resends:
        print(
            f"{resends} calls were sent a second time after the emulator's graceful HTTP/2 GOAWAY (it closes "
            "a connection after 1,000 requests; refused streams were never processed).",
            file=out,
        )
    emulator_401 = sum(int(g["emulator"]["resource_401"] or 0) for g in report["providers"].values())
    emulator_tokens = sum(int(g["emulator"]["token_requests"] or 0) for g in report["providers"].values())
    emulator_calls = sum(int(g["emulator"]["resource_calls"] or 0) for g in report["providers"].values())
    print(
        "token req/worker: one number per worker; ideal = ⌈T / (r·L)⌉ for T = each worker's time with a "
        "pool open. token wait = time in `await pool.token(name)` before each call.",
        file=out,
    )
    if not result.interrupted:
        print(
            f"The emulator's own counters: {emulator_calls:,} resource calls, {emulator_401} rejected "
            f"with 401 (expired, revoked or unknown token by the server's clock), "
            f"{emulator_tokens} token requests.",
            file=out,
        )
    if result.interrupted:
        print(
            "INTERRUPTED: partial results of the calls made before Ctrl-C (the emulator stops too).", file=out
        )
    elif report["passed"]:
        low = min((g["min_token_requests_per_worker"] for g in report["providers"].values()), default=0)
        print(
            f"PASS: {t['calls']:,} calls, 0 failed with 401, 0 lost; every worker renewed every provider's "
            f"token at least {max(0, low - 1)} times; token wait p99 {_ms(t['token_wait']['p99_ms'])} ms, "
            f"max {_ms(t['token_wait']['max_ms'])} ms.",
            file=out,
        )
    else:
        print("FAIL: " + "; ".join(report["problems"]), file=out)
