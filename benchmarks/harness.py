"""``python -m benchmarks.harness``: tokenpool under load and faults, beside peer libraries, in one run.

Starts the loopback emulator once, then for each named scenario runs a fleet
of worker processes (``tokenpool._fleet``) against it, asserts the scenario's
expected outcome and reports PASS/FAIL.  Writes ``results.json``,
``results.md`` and PNG plots into the output directory (default
``benchmarks/out/``).  Exit status: 0 when every expectation held, 1 when any
failed (any 401, lost call or broken expectation of a tokenpool run), 130 when
interrupted.

Examples::

    python -m benchmarks.harness                        # everything (~12 min)
    python -m benchmarks.harness --scenarios steady,mass-revocation --duration 10
    python -m benchmarks.harness --list
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenpool._fleet import FleetSettings, ProgressPrinter, emulator_specs, run_fleet
from tokenpool.testing import EmulatorProcess

from . import report
from .scenarios import PEER_SCALE, SCENARIOS, STEADY_SCALE, Ctx, Options, RunPlan, plans_for, set_lifetimes

__all__ = ["main"]

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.harness",
        description=(
            "Drive W worker processes × C tasks per provider against tokenpool's loopback emulator "
            "(which rejects expired tokens by its own clock) under named scenarios — steady load and "
            "injected faults — and beside peer libraries; assert each scenario's expected outcome. "
            "Writes results.json, results.md and PNG plots."
        ),
        epilog="scenarios: " + ", ".join(SCENARIOS) + " (default: all; 'peers' needs the bench extra)",
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        metavar="LIST",
        help="comma-separated scenario names, or 'all' (default)",
    )
    parser.add_argument("--no-peers", action="store_true", help="leave the peer libraries out of 'all'")
    parser.add_argument(
        "--list", action="store_true", help="list the scenarios and their expectations, then exit"
    )
    parser.add_argument("--workers", type=int, default=3, metavar="W", help="worker processes (default 3)")
    parser.add_argument(
        "--tasks", type=int, default=10, metavar="C", help="tasks per provider per worker (default 10)"
    )
    parser.add_argument(
        "--tenants", type=int, default=3, metavar="N", help="Zertiban tenants per worker (default 3)"
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=8,
        metavar="N",
        help="FIFO bound on each worker's in-flight HTTP requests (default 8)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="seconds of load for every run (default: each scenario's own, 20–45 s)",
    )
    parser.add_argument(
        "--duration-factor",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply every scenario's default duration by F (default 1)",
    )
    parser.add_argument("--http1", action="store_true", help="resource calls over HTTP/1.1 instead of HTTP/2")
    parser.add_argument("--plain-http", action="store_true", help="plain HTTP to the emulator instead of TLS")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="output directory")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no live progress line")
    return parser


def _scenario_names(text: str, *, peers: bool) -> list[str]:
    if text == "all":
        names = [name for name in SCENARIOS if name != "peers" or peers]
    else:
        names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return names


def _peers_available() -> list[str]:
    return [name for name in ("authlib", "httpx_auth") if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = Options(
        workers=args.workers,
        tasks=args.tasks,
        tenants=args.tenants,
        max_in_flight=args.max_in_flight,
        duration=args.duration,
        duration_factor=args.duration_factor,
        http2=not args.http1,
        tls=not args.plain_http,
    )
    missing = _peers_available()
    names = _scenario_names(args.scenarios, peers=not args.no_peers and not missing)
    notes: list[str] = []
    if "peers" in names and missing:
        raise SystemExit(f"the peers scenario needs {', '.join(missing)}: pip install -e '.[bench]'")
    if args.scenarios == "all" and missing and not args.no_peers:
        notes.append(f"peers skipped: {', '.join(missing)} not installed (pip install -e '.[bench]')")
    plans = plans_for(names, opts)
    if args.list:
        for plan in plans:
            print(f"{plan.label:38} {plan.duration:5.0f} s  {plan.title}\n{'':46}expects: {plan.expectation}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    total = sum(p.duration for p in plans)
    print(
        f"benchmarks.harness: {len(plans)} runs, ~{total / 60:.1f} min of load "
        f"({opts.workers} workers × {opts.tasks} tasks per provider); results in {args.out}",
        file=sys.stderr,
        flush=True,
    )
    document: dict[str, Any] = {
        "machine": report.machine(),
        "options": vars(opts),
        "peer_scale": PEER_SCALE,
        "notes": notes,
        "runs": [],
    }
    interrupted = False
    started = time.monotonic()
    try:
        with EmulatorProcess(lifetime_scale=STEADY_SCALE) as emu:
            for number, plan in enumerate(plans, start=1):
                try:
                    record = _run(emu, plan, opts, number, len(plans), quiet=args.quiet)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    # One run that could not start (a worker died on import, say) is a
                    # failed run in the report, not the end of the whole harness.
                    print(f"[{number}/{len(plans)}] {plan.label}: ERROR: {exc}", file=sys.stderr, flush=True)
                    record = _error_record(plan, exc)
                document["runs"].append(record)
                if record["interrupted"]:
                    interrupted = True
                    break
    except KeyboardInterrupt:
        interrupted = True
    document["wall_seconds"] = round(time.monotonic() - started, 1)
    asserted = [r for r in document["runs"] if r["asserted"]]
    failed = [r for r in asserted if not r["passed"]]
    document["passed"] = not failed and not interrupted and bool(document["runs"])
    document["summary"] = (
        f"{len(asserted) - len(failed)}/{len(asserted)} asserted runs passed"
        + (f"; failed: {', '.join(r['label'] for r in failed)}" if failed else "")
        + ("; interrupted" if interrupted else "")
    )
    plots: list[str] = []
    if not args.no_plot and document["runs"]:
        try:
            plots = report.write_plots(args.out, document)
        except ImportError as exc:
            notes.append(f"plots skipped: {exc} (pip install -e '.[bench]')")
    document["plots"] = plots
    report.write_json(args.out / "results.json", document)
    text = report.write_markdown(args.out / "results.md", document)
    print(text)
    print(
        f"written: {args.out / 'results.json'}, {args.out / 'results.md'}"
        + (f", {len(plots)} plots" if plots else "")
    )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if interrupted:
        return 130
    return 0 if document["passed"] else 1


def _run(
    emu: EmulatorProcess, plan: RunPlan, opts: Options, number: int, count: int, *, quiet: bool
) -> dict[str, Any]:
    emu.reset()
    lifetimes = set_lifetimes(emu, plan)
    specs = emulator_specs(emu, providers=plan.providers, tls=opts.tls, zertiban_tenants=plan.tenants)
    settings = FleetSettings(
        specs=tuple(specs),
        workers=opts.workers,
        tasks=opts.tasks,
        duration=plan.duration,
        max_in_flight=opts.max_in_flight,
        http2=opts.http2,
        ca_file=emu.ca_file if opts.tls else None,
        policy=plan.policy,
        strategy=plan.strategy,
    )
    ctx = Ctx(emu=emu, plan=plan, lifetimes=lifetimes)
    label = f"[{number}/{count}] {plan.label}"
    print(f"{label}: {plan.title} (lifetimes {lifetimes})", file=sys.stderr, flush=True)
    progress = None if quiet else ProgressPrinter(label, plan.duration)
    result = run_fleet(settings, actions=plan.actions(ctx), progress=progress)
    server = emu.stats()
    ctx.server = server
    ctx.emulator_offset = (time.monotonic() - float(server["now"])) - result.started
    checks = plan.checks(ctx, result) if not result.interrupted else []
    passed = all(c.passed for c in checks) and not result.interrupted
    verdict = ("PASS" if passed else "FAIL") if plan.asserted else "measured"
    t = result.total
    print(
        f"{label}: {verdict}: {t.calls:,} calls, {t.unauthorized} 401s ({t.recovered_401} retried), "
        f"{t.failed} failed, {t.token_requests} token requests (ideal {t.ideal})"
        + "".join(f"\n    FAIL {c.name}: {c.detail}" for c in checks if not c.passed),
        file=sys.stderr,
        flush=True,
    )
    emulator = {
        name: {k: v for k, v in stats.items() if k != "faults"} for name, stats in server["providers"].items()
    }
    return {
        "label": plan.label,
        "scenario": plan.scenario,
        "strategy": plan.strategy.label,
        "group": plan.group,
        "title": plan.title,
        "expectation": plan.expectation,
        "asserted": plan.asserted,
        "passed": passed if plan.asserted else True,
        "interrupted": result.interrupted,
        "checks": [c.to_json() for c in checks],
        "lifetimes": lifetimes,
        "policy": None if plan.policy is None else _policy_json(plan.policy),
        "result": result.to_json(),
        "emulator": {name: emulator[name] for name in plan.providers if name in emulator},
        "timeline": report.timeline(server.get("events", []), ctx.emulator_offset, plan.duration),
    }


def _error_record(plan: RunPlan, exc: BaseException) -> dict[str, Any]:
    empty = {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    total = {
        "calls": 0,
        "ok": 0,
        "unauthorized": 0,
        "recovered_401": 0,
        "goaway_resends": 0,
        "failed": 0,
        "failures": {},
        "calls_per_s": 0.0,
        "token_requests": 0,
        "ideal_token_requests": 0,
        "hit_ratio": None,
        "token_wait": empty,
        "latency": empty,
        "auth_overhead": empty,
        "refresh_latency": empty,
    }
    return {
        "label": plan.label,
        "scenario": plan.scenario,
        "strategy": plan.strategy.label,
        "group": plan.group,
        "title": plan.title,
        "expectation": plan.expectation,
        "asserted": True,
        "passed": False,
        "interrupted": False,
        "checks": [{"name": "run completed", "passed": False, "detail": f"{type(exc).__name__}: {exc}"}],
        "lifetimes": {},
        "policy": None,
        "result": {"total": total, "providers": {}, "notes": [], "duration_s": 0.0, "lost_calls": 0},
        "emulator": {},
        "timeline": None,
    }


def _policy_json(policy: Any) -> dict[str, float]:
    return {name: getattr(policy, name) for name in policy.__dataclass_fields__}


if __name__ == "__main__":
    sys.exit(main())
