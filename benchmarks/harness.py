"""``python -m benchmarks.harness``: tokenpool under load and faults, beside peer libraries, in one run.

Starts the loopback emulator once, then for each named scenario runs a fleet
of worker processes (``tokenpool.loadtest``) against it, asserts the scenario's
expected outcome and reports PASS/FAIL.  Writes ``results.json``,
``results.md`` and PNG plots into the output directory (default
``benchmarks/out/``).  Exit status: 0 when every expectation held, 1 when any
failed (any 401, lost call or broken expectation of a tokenpool run), 130 when
interrupted.

Examples::

    python -m benchmarks.harness                        # everything (~12 min)
    python -m benchmarks.harness --scenarios steady,mass-revocation --duration 10
    python -m benchmarks.harness --list
    python -m benchmarks.harness --scenarios fleet                # W = 8 workers, with and without Redis
    python -m benchmarks.harness --scenarios fleet-faults --duration 20   # Redis and lease faults

The ``fleet`` and ``fleet-faults`` scenarios start their own ``redis-server``
(loopback, a free port, no persistence) the first time a run needs it, empty
it before every run that uses it, and stop it when the harness ends.  A
fleet-faults run may kill it (it is restarted on the same port, and again
after the run if it is down) or put a loopback proxy in front of it
(``benchmarks/redis_proxy.py``), started and stopped with the run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tokenpool.loadtest import FleetSettings, ProgressPrinter, ProviderSpec, emulator_specs, run_fleet
from tokenpool.testing import EmulatorProcess, RedisServerProcess

from . import report
from .redis_proxy import RedisProxy
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
        epilog="scenarios: "
        + ", ".join(SCENARIOS)
        + " (default: all; 'peers' needs the bench extra, 'fleet' and 'fleet-faults' redis-server and the "
        "redis extra)",
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
        "--fleet-workers",
        type=int,
        default=8,
        metavar="W",
        help="worker processes of the fleet and fleet-faults scenarios' runs (default 8; the issue's "
        "proof needs ≥ 8)",
    )
    parser.add_argument(
        "--fleet-rate",
        type=float,
        default=200.0,
        metavar="N",
        help="calls per second the fleet scenario's workers offer together, by a pause after each call "
        "(default 200; 0: as fast as they can, which saturates a small machine)",
    )
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


#: The scenarios that need redis-server and redis-py.
REDIS_SCENARIOS = ("fleet", "fleet-faults")


def _scenario_names(text: str, *, peers: bool, fleet: bool = True) -> list[str]:
    if text == "all":
        names = [
            name
            for name in SCENARIOS
            if (name != "peers" or peers) and (name not in REDIS_SCENARIOS or fleet)
        ]
    else:
        names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return names


def _peers_available() -> list[str]:
    return [name for name in ("authlib", "httpx_auth") if importlib.util.find_spec(name) is None]


def _fleet_missing() -> list[str]:
    """What the fleet scenario needs and this machine lacks."""
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server (Debian: apt-get install redis-server)")
    if importlib.util.find_spec("redis") is None:
        missing.append("redis-py (pip install -e '.[redis]')")
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1 or args.fleet_workers < 1 or args.tasks < 1:
        parser.error("--workers, --fleet-workers and --tasks must be at least 1")
    if not args.fleet_rate >= 0:
        parser.error("--fleet-rate must not be negative")
    opts = Options(
        workers=args.workers,
        fleet_workers=args.fleet_workers,
        fleet_rate=args.fleet_rate,
        tasks=args.tasks,
        tenants=args.tenants,
        max_in_flight=args.max_in_flight,
        duration=args.duration,
        duration_factor=args.duration_factor,
        http2=not args.http1,
        tls=not args.plain_http,
    )
    missing = _peers_available()
    fleet_missing = _fleet_missing()
    names = _scenario_names(args.scenarios, peers=not args.no_peers and not missing, fleet=not fleet_missing)
    notes: list[str] = []
    if "peers" in names and missing:
        raise SystemExit(f"the peers scenario needs {', '.join(missing)}: pip install -e '.[bench]'")
    wanted = [name for name in names if name in REDIS_SCENARIOS]
    if wanted and fleet_missing and not args.list:
        raise SystemExit(f"the {' and '.join(wanted)} scenario(s) need {', '.join(fleet_missing)}")
    if args.scenarios == "all" and missing and not args.no_peers:
        notes.append(f"peers skipped: {', '.join(missing)} not installed (pip install -e '.[bench]')")
    if args.scenarios == "all" and fleet_missing:
        notes.append(f"fleet and fleet-faults skipped: {', '.join(fleet_missing)} not installed")
    plans = plans_for(names, opts)
    if args.list:
        for plan in plans:
            print(f"{plan.label:38} {plan.duration:5.0f} s  {plan.title}\n{'':46}expects: {plan.expectation}")
        return 0
    if wanted and opts.fleet_workers < 8:
        notes.append(
            f"{' and '.join(wanted)} ran with {opts.fleet_workers} workers; "
            "the issue's proof asks for at least 8"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    total = sum(p.duration for p in plans)
    sizes = "/".join(str(w) for w in sorted({p.workers or opts.workers for p in plans}))
    print(
        f"benchmarks.harness: {len(plans)} runs, ~{total / 60:.1f} min of load "
        f"({sizes} workers × {opts.tasks} tasks per provider); results in {args.out}",
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
        with EmulatorProcess(lifetime_scale=STEADY_SCALE) as emu, contextlib.ExitStack() as resources:
            servers: list[RedisServerProcess] = []

            def redis() -> RedisServerProcess:
                # Started the first time a run needs it; stopped when the harness ends.
                if not servers:
                    servers.append(resources.enter_context(RedisServerProcess()))
                return servers[0]

            for number, plan in enumerate(plans, start=1):
                try:
                    record = _run(emu, plan, opts, number, len(plans), quiet=args.quiet, redis=redis)
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
    emu: EmulatorProcess,
    plan: RunPlan,
    opts: Options,
    number: int,
    count: int,
    *,
    quiet: bool,
    redis: Callable[[], RedisServerProcess] | None = None,
) -> dict[str, Any]:
    emu.reset()
    lifetimes = set_lifetimes(emu, plan)
    if plan.prepare is not None:
        plan.prepare(emu)
    specs = emulator_specs(emu, providers=plan.providers, tls=opts.tls, zertiban_tenants=plan.tenants)
    server: RedisServerProcess | None = None
    if plan.store:
        if redis is None:
            raise RuntimeError(f"{plan.label} needs a redis-server and the harness gave it none")
        server = redis()
        if not server.running:
            server.restart()  # a fault run before this one left it down
        server.flush()  # no run adopts another run's tokens (the emulator forgot them on reset)
    with contextlib.ExitStack() as stack:
        proxy: RedisProxy | None = None
        if plan.store_proxy:
            if server is None:
                raise RuntimeError(f"{plan.label}: a store proxy needs a store")
            proxy = stack.enter_context(RedisProxy(server.port))
        return _run_fleet(emu, plan, opts, number, count, specs, lifetimes, server, proxy, quiet=quiet)


def _run_fleet(
    emu: EmulatorProcess,
    plan: RunPlan,
    opts: Options,
    number: int,
    count: int,
    specs: Sequence[ProviderSpec],
    lifetimes: dict[str, int],
    server: RedisServerProcess | None,
    proxy: RedisProxy | None,
    *,
    quiet: bool,
) -> dict[str, Any]:
    workers = plan.workers or opts.workers
    store_url = None if server is None else (server.url if proxy is None else proxy.url)
    settings = FleetSettings(
        specs=tuple(specs),
        workers=workers,
        tasks=opts.tasks,
        duration=plan.duration,
        max_in_flight=opts.max_in_flight,
        http2=opts.http2,
        ca_file=emu.ca_file if opts.tls else None,
        policy=plan.policy,
        strategy=plan.strategy,
        store_url=store_url,
        store_options=plan.store_options if store_url is not None else (),
        think_time=plan.think_time,
    )
    ctx = Ctx(
        emu=emu,
        plan=plan,
        lifetimes=lifetimes,
        workers=workers,
        redis=server,
        proxy=proxy,
        specs=tuple(specs),
    )
    label = f"[{number}/{count}] {plan.label}"
    print(
        f"{label}: {plan.title} (lifetimes {lifetimes}"
        + ("" if store_url is None else f"; store {store_url}")
        + ("" if proxy is None else f" (a proxy to {server.url if server else '?'})")
        + ")",
        file=sys.stderr,
        flush=True,
    )
    progress = None if quiet else ProgressPrinter(label, plan.duration)
    commands_before = None if server is None else server.commands_processed()
    restarts_before = 0 if server is None else server.restarts
    try:
        result = run_fleet(settings, actions=plan.actions(ctx), progress=progress)
    finally:
        if server is not None and not server.running:
            # Killed by the run and not restarted (interrupted, or the restart failed): the
            # next run needs it.
            with contextlib.suppress(RuntimeError):
                server.restart()
    if server is not None and commands_before is not None and server.restarts == restarts_before:
        # Minus the INFO that reads the count.  (After a restart the server's count began again.)
        ctx.redis_commands = max(0, server.commands_processed() - commands_before - 1)
    stats = emu.stats()
    ctx.server = stats
    ctx.emulator_offset = (time.monotonic() - float(stats["now"])) - result.started
    checks = plan.checks(ctx, result) if not result.interrupted else []
    summary = plan.summary(ctx, result) if plan.summary is not None and not result.interrupted else None
    passed = all(c.passed for c in checks) and not result.interrupted
    verdict = ("PASS" if passed else "FAIL") if plan.asserted else "measured"
    t = result.total
    print(
        f"{label}: {verdict}: {t.calls:,} calls, {t.unauthorized} 401s ({t.recovered_401} retried), "
        f"{t.failed} failed, {t.token_requests} token requests (ideal {t.ideal})"
        + "".join(
            f"; worker {k['worker']} (pid {k['pid']}) killed by the harness at {k['at']:.2f} s"
            for k in result.killed_workers
        )
        + ("" if summary is None or "line" not in summary else f"\n    {summary['line']}")
        + "".join(f"\n    FAIL {c.name}: {c.detail}" for c in checks if not c.passed),
        file=sys.stderr,
        flush=True,
    )
    emulator = {
        name: {k: v for k, v in figures.items() if k != "faults"}
        for name, figures in stats["providers"].items()
    }
    return {
        "label": plan.label,
        "scenario": plan.scenario,
        "strategy": plan.strategy.label,
        "group": plan.group,
        "workers": workers,
        "store": plan.store,
        "fleet": summary,
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
        "timeline": report.timeline(stats.get("events", []), ctx.emulator_offset, plan.duration),
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
        "workers": plan.workers,
        "store": plan.store,
        "fleet": None,
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
