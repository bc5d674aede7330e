"""``tokenpool demo``: a small fleet against the loopback emulator, under faults, and a checkable verdict.

It starts the emulator (``python -m tokenpool.testing``) with token lifetimes
compressed, runs W worker processes × C tasks per provider through
``pool.auth(name)`` for a while and, unless ``--calm``, revokes every token
at 40 % of the run and takes every token endpoint down (503) over the
renewals that follow (``_faults``).  The emulator rejects expired and revoked
tokens by its own clock, so a single token served too late, or a revoked one
not replaced, would show up as a 401.

It prints per provider: calls, 401s, calls replayed after a 401, failures,
tokens per cell against the ideal ``⌈T / (r·L)⌉`` and the token wait; what
the faults did; and the verdict (``_verdict``: the exact criteria).  Exit
status: 0 on PASS, 1 on FAIL, 130 when interrupted.  Everything goes to
standard output, fitted to its width; a pipe gets a plain progress line every
5 s instead of a live one, and an encoding that cannot show ``…`` gets ASCII.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from .._argtypes import non_negative_number, positive_int, positive_number, writable_file
from ._emulator import emulator_specs
from ._faults import DEMO_POLICY, FaultPlan, fault_actions, plan_faults
from ._progress import ProgressPrinter
from ._run import run_fleet
from ._settings import ALL_PROVIDERS, FIVE_PROVIDERS, FleetSettings
from ._summary import render_summary
from ._text import Text, plural
from ._verdict import build_report

__all__ = ["add_demo_arguments", "run_demo"]


def _providers(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ALL_PROVIDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(ALL_PROVIDERS)} (comma-separated)")
    return names


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``tokenpool demo``'s options to *parser* (help texts in ASCII: any terminal shows them)."""
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="W",
        help="worker processes (default 3, or the number of CPUs if fewer; more than the machine "
        "has CPUs, and the waits measure the CPU queue: the demo warns)",
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
        "--calm",
        action="store_true",
        help="no faults: without it every token is revoked at 40%% of the run, and every token "
        "endpoint answers 503 for up to 2 s over the renewals that follow",
    )
    parser.add_argument(
        "--lifetime-scale",
        type=positive_number,
        default=None,
        metavar="X",
        help="multiply every documented token lifetime by X (default with --calm 0.01: 300 s -> 3 s, "
        "600 s -> 6 s, 3600 s -> 36 s, 8600 s -> 86 s; default otherwise 1, so that every lifetime "
        "is --max-lifetime's)",
    )
    parser.add_argument(
        "--max-lifetime",
        type=non_negative_number,
        default=None,
        metavar="S",
        help="cap every lifetime at S seconds so each token is renewed during the run (default with "
        "--calm: a quarter of --duration, at least 2; otherwise 40%% of --duration, where the "
        "faults fit; 0 disables the cap)",
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
    parser.add_argument(
        "--json",
        type=writable_file,
        metavar="PATH",
        help="also write the full results as JSON to PATH (checked before the run starts)",
    )
    parser.add_argument("--http1", action="store_true", help="resource calls over HTTP/1.1 instead of HTTP/2")
    parser.add_argument(
        "--plain-http",
        action="store_true",
        help="talk to the emulator over plain HTTP (loopback only) instead of HTTPS and mutual TLS",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line (the summary only)")


def default_max_lifetime(duration: float, *, calm: bool = True) -> float:
    """The default lifetime cap for a run of *duration* seconds.

    Calm: renews every token at least three times.  With the faults: 40 % of
    the run, so that each cell renews once before the revocation (at 40 %)
    and once more during the outage, and the outage can be long enough to see.
    """
    if calm:
        return max(2.0, math.floor(duration / 4.0))
    return max(2.0, math.floor(0.4 * duration))


#: Worker processes by default, when the machine has as many CPUs.
DEFAULT_WORKERS = 3


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo described by *args*; returns the exit status."""
    if args.workers is None:
        args.workers = min(DEFAULT_WORKERS, available_cpus())
    try:
        from ..testing import EmulatorProcess
    except ImportError as exc:  # pragma: no cover - the testing extra is missing
        print(
            f"tokenpool demo needs the testing extra: pip install 'tokenpool[testing]' ({exc})",
            file=sys.stderr,
        )
        return 2
    text = Text(sys.stdout)
    calm = bool(getattr(args, "calm", False))
    duration = float(args.duration)
    scale = (0.01 if calm else 1.0) if args.lifetime_scale is None else float(args.lifetime_scale)
    cap = default_max_lifetime(duration, calm=calm) if args.max_lifetime is None else float(args.max_lifetime)
    tls = not args.plain_http
    cpus = available_cpus()
    text.say(
        f"tokenpool demo: starting the loopback emulator (lifetime scale {scale:g}"
        + (f", lifetimes capped at {cap:g} s" if cap > 0 else "")
        + ")…"
    )
    started = time.monotonic()
    with EmulatorProcess(lifetime_scale=scale) as emu:
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
            policy=DEMO_POLICY,
        )
        text.say(
            f"running {plural(args.workers, 'worker process', 'worker processes')} × {args.tasks} tasks "
            f"per provider × {plural(len(args.providers), 'provider')} "
            f"({plural(len(specs), 'token cell')} per worker) for {duration:g} s; lifetimes: "
            + ", ".join(f"{p} {s} s" for p, s in lifetimes.items())
        )
        granted = {p: float(s) for p, s in lifetimes.items()}
        plan = None if calm else plan_faults(duration, granted, DEMO_POLICY)
        _say_plan(text, plan)
        _warn(text, args.workers, cpus, duration, lifetimes)
        progress = None if args.quiet else ProgressPrinter("demo", duration, sys.stdout)
        note = progress.note if progress is not None else (lambda line: None)
        actions = [] if plan is None else fault_actions(plan, emu, args.providers, note)
        result = run_fleet(settings, actions=actions, progress=progress)
        server: dict[str, Any] = {}
        if not result.interrupted and emu.running:
            # On Ctrl-C the emulator got the signal too and is already gone.
            server = emu.stats(events=False)
    report = build_report(result, server, lifetimes)
    report["wall_seconds"] = round(time.monotonic() - started, 3)
    report["calm"] = calm
    report["no_outage"] = None if plan is None else plan.no_outage
    report["backoff"] = f"{DEMO_POLICY.backoff_base:g}–{DEMO_POLICY.backoff_cap:g} s"
    report["cpus"] = cpus
    report["oversubscribed"] = {"workers": args.workers, "cpus": cpus} if args.workers > cpus else None
    text.write(*render_summary(report, text))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        text.say(f"results written to {args.json}")
    if result.interrupted:
        print("tokenpool demo: interrupted", file=sys.stderr)
        return 130
    return 0 if report["passed"] else 1


def _say_plan(text: Text, plan: FaultPlan | None) -> None:
    if plan is None:
        text.say("faults: none (--calm)")
        return
    outage = (
        f"; ~{plan.outage_after:g} s later, over the renewals of the new tokens, every token endpoint "
        f"answers 503 for {plan.outage_for:g} s"
        if plan.outage_after is not None
        else f"; no outage: {plan.no_outage}"
    )
    text.say(f"faults: at {plan.revoke_at:g} s every token is revoked at the emulator{outage}", indent="  ")


def _warn(text: Text, workers: int, cpus: int, duration: float, lifetimes: dict[str, int]) -> None:
    if workers > cpus:
        text.say(
            f"warning: {plural(workers, 'worker process', 'worker processes')} on "
            f"{plural(cpus, 'CPU')} (and the emulator needs one too): the processes take turns on the "
            "CPUs, so the token waits and latencies below measure that queue, not the pool. For "
            f"figures about tokenpool, run with --workers {cpus} or fewer. The verdict is the same.",
            indent="  ",
        )
    late = [p for p, s in lifetimes.items() if DEMO_POLICY.refresh_delay(float(s), 0.0) > duration]
    if late:
        text.say(
            f"warning: {', '.join(late)} tokens are due for renewal only after the run ends: "
            "PASS needs a renewal of every token (lower --max-lifetime or raise --duration).",
            indent="  ",
        )
