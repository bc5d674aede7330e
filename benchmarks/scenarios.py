"""The harness's named scenarios: what each one does to the emulator, and what it expects.

A scenario is a list of :class:`RunPlan` (one fleet run each: a strategy,
lifetimes, a duration, timed actions against the emulator and the workers)
plus the checks that decide PASS/FAIL.  Fault actions are timed from the
cells' own renewal schedule (reported by every worker when it is warm), so a
fault "at refresh time" really lands on the refreshes.

Compressed time.  Lifetimes are seconds instead of minutes, so the refresh
policy's own time constants are compressed too (:data:`FAULT_POLICY`): the
defaults (backoff 0.5 s → 30 s, 60 s after rejected credentials) would be
longer than the tokens.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenpool import RefreshPolicy
from tokenpool.loadtest import (
    ALL_PROVIDERS,
    Action,
    FleetController,
    FleetResult,
    ProviderSpec,
    StrategySpec,
    build_provider,
    ideal_requests,
)
from tokenpool.testing import EmulatorProcess, RedisServerProcess

from .redis_proxy import RedisProxy

__all__ = ["SCENARIOS", "Check", "Ctx", "RunPlan", "fleet_figures", "fleet_ideal", "plans_for"]

#: The refresh policy of the fault scenarios: tokenpool's defaults with the time constants
#: compressed like the lifetimes (r, jitter and margin are the defaults).
FAULT_POLICY = RefreshPolicy(
    min_refresh_delay=0.5,
    backoff_base=0.05,
    backoff_cap=0.5,
    credentials_backoff=1.0,
    max_retry_after=5.0,
    request_timeout=3.0,
)
#: Lifetime of every provider's tokens in the fault scenarios (seconds).
FAULT_LIFETIME = 20
#: Lifetimes of the steady scenarios: the documented ones × 0.01, capped.
STEADY_SCALE = 0.01

TOKENPOOL = StrategySpec()


@dataclass
class Check:
    """One expectation and whether it held."""

    name: str
    passed: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class Options:
    """Harness-wide settings (from the command line)."""

    workers: int = 3
    tasks: int = 10
    tenants: int = 3
    max_in_flight: int = 8
    duration: float | None = None
    duration_factor: float = 1.0
    http2: bool = True
    tls: bool = True
    #: Worker processes of the fleet scenario's runs (the issue's proof asks for at least 8).
    fleet_workers: int = 8
    #: Calls per second the fleet scenario's workers offer together (0: as fast as they can).
    fleet_rate: float = 200.0

    def length(self, default: float) -> float:
        if self.duration is not None:
            return self.duration
        return max(4.0, default * self.duration_factor)


@dataclass
class Ctx:
    """What actions and checks can see about a run."""

    emu: EmulatorProcess
    plan: RunPlan
    lifetimes: dict[str, int] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    #: Offset of the emulator's event clock from the start of the load.
    emulator_offset: float = 0.0
    #: Worker processes of this run.
    workers: int = 0
    #: Commands the run's Redis processed during the run (store runs only; ``None`` after a restart).
    redis_commands: int | None = None
    #: The run's redis-server (store runs only): fault actions kill and restart it.
    redis: RedisServerProcess | None = None
    #: The proxy between the workers and Redis (``RunPlan.store_proxy`` runs only).
    proxy: RedisProxy | None = None
    #: The cells' settings (secrets included: never to be written anywhere).
    specs: tuple[ProviderSpec, ...] = ()

    def events(self, kind: str, provider: str | None = None) -> list[float]:
        """Offsets (from the start of the load) of the emulator's events of *kind*."""
        return sorted(
            float(e["t"]) + self.emulator_offset
            for e in self.server.get("events", [])
            if e["kind"] == kind and (provider is None or e["provider"] == provider)
        )


@dataclass
class RunPlan:
    """One fleet run of a scenario."""

    scenario: str
    title: str
    expectation: str
    strategy: StrategySpec = TOKENPOOL
    providers: tuple[str, ...] = ALL_PROVIDERS
    tenants: int = 3
    duration: float = 30.0
    #: Sets the emulator's lifetimes for this run and returns them (default: see :func:`set_lifetimes`).
    lifetimes: Callable[[EmulatorProcess], dict[str, int]] | None = None
    lifetime_scale: float = STEADY_SCALE
    policy: RefreshPolicy | None = None
    actions: Callable[[Ctx], list[Action]] = lambda ctx: []
    checks: Callable[[Ctx, FleetResult], list[Check]] = lambda ctx, result: []
    #: False for peer runs: they are measured, not judged.
    asserted: bool = True
    group: str = ""
    #: Worker processes (``None``: the harness's ``--workers``).
    workers: int | None = None
    #: Every worker's pool shares tokens through the harness's redis-server (``RedisStore``).
    store: bool = False
    #: ``RedisStore`` keyword arguments besides the URL (``lease_ttl``, ``retry_after_failure``…).
    store_options: tuple[tuple[str, Any], ...] = ()
    #: The workers reach Redis through a :class:`~benchmarks.redis_proxy.RedisProxy` (``Ctx.proxy``).
    store_proxy: bool = False
    #: Runs against the emulator after the lifetimes are set (revoke-on-issue…).
    prepare: Callable[[EmulatorProcess], None] | None = None
    #: Figures of the run for the report (JSON-ready), beside the checks; ``"line"`` is printed.
    summary: Callable[[Ctx, FleetResult], dict[str, Any]] | None = None
    #: Pause after each call, per task (0: as fast as possible).
    think_time: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.scenario}/{self.strategy.label}"


def group_of(cell: str) -> str:
    """The provider of a cell name (``zertiban-03`` → ``zertiban``)."""
    return cell.split("-", 1)[0]


# =============================================================================================
# Common checks
# =============================================================================================


def _revoke_everything(when: Callable[[FleetController], float]) -> Callable[[Ctx], list[Action]]:
    """A run's actions: revoke every issued token at the emulator at the instant *when* picks."""

    def actions(ctx: Ctx) -> list[Action]:
        def act(controller: FleetController) -> None:
            start = controller.elapsed
            revoked = ctx.emu.revoke_tokens()
            controller.notes.append({"kind": "revocation", "start": round(start, 3), "revoked": revoked})

        return [(when, act)]

    return actions


def basic_checks(result: FleetResult, *, failures_allowed: bool = False) -> list[Check]:
    total = result.total
    checks = [
        Check("zero 401s", total.unauthorized == 0, f"{total.unauthorized} calls ended with 401"),
        Check(
            "workers healthy",
            not result.errors and not result.missing_workers,
            "; ".join(result.errors)
            or (f"missing {result.missing_workers}" if result.missing_workers else "no worker errors"),
        ),
        Check("calls made", total.calls > 0, f"{total.calls} calls"),
    ]
    if not failures_allowed:
        checks.append(
            Check(
                "zero lost calls",
                result.lost_calls == 0,
                f"{result.lost_calls} calls did not succeed" + _kinds(result),
            )
        )
    return checks


def _kinds(result: FleetResult) -> str:
    kinds = result.total.failures
    return f" ({', '.join(f'{k}: {v}' for k, v in kinds.most_common(4))})" if kinds else ""


def near_ideal(
    result: FleetResult, *, below: int = 1, above: int = 2, groups: Sequence[str] | None = None
) -> Check:
    """Every (worker, cell) made between ideal − *below* and ideal + *above* token requests."""
    bad = []
    cells = 0
    for cell in result.cells():
        group = group_of(str(cell["cell"]))
        if groups is not None and group not in groups:
            continue
        cells += 1
        n, ideal = int(cell["token_requests"]), int(cell["ideal"])
        if not ideal - below <= n <= ideal + above:
            bad.append(f"worker {cell['worker']} {cell['cell']}: {n} vs ideal {ideal}")
    return Check(
        f"token requests per (worker, cell) within ideal −{below}/+{above}",
        not bad and cells > 0,
        f"{cells} cells; " + ("; ".join(bad[:5]) if bad else "all within"),
    )


def hit_ratio_at_least(result: FleetResult, floor: float) -> Check:
    ratio = result.total.hit_ratio
    return Check(
        f"hit ratio ≥ {floor}",
        ratio is not None and ratio >= floor,
        "n/a" if ratio is None else f"{ratio:.5f}",
    )


def requests_in(cell: dict[str, Any], start: float, end: float) -> list[float]:
    return [t for t in cell.get("requests_at", []) if start <= t <= end]


# =============================================================================================
# Fault timing
# =============================================================================================


def around_refresh(
    providers: Sequence[str], width: float, *, fallback: float
) -> Callable[[FleetController], float]:
    """A start instant so that a window of *width* seconds is centred on the providers' renewals.

    It takes the cells' first renewal after the start of the load, as the
    workers reported it when they were ready, and centres the window on their
    median, so most of them fall inside.
    """

    def when(controller: FleetController) -> float:
        times = [t for t in controller.next_refresh(lambda name: group_of(name) in providers) if t > 0.5]
        if not times:
            return fallback
        median = times[len(times) // 2]
        return max(0.5, median - width / 2)

    return when


def quiet_instant(
    length: float, providers: Sequence[str] | None = None
) -> Callable[[FleetController], float]:
    """Halfway through a run of *length* s, or another instant at least 1.5 s from any first renewal.

    Only the cells of *providers* count (``None``: every cell).
    """

    def when(controller: FleetController) -> float:
        wanted = length / 2
        busy = controller.next_refresh(None if providers is None else (lambda n: group_of(n) in providers))
        for candidate in (wanted, wanted * 0.6, wanted * 1.3, wanted * 0.4):
            if all(abs(t - candidate) > 1.5 for t in busy):
                return candidate
        return wanted

    return when


def fault_action(
    ctx_emu: EmulatorProcess, providers: Sequence[str], *, duration: float, label: str, **fault: Any
) -> Callable[[FleetController], None]:
    def act(controller: FleetController) -> None:
        start = controller.elapsed
        for provider in providers:
            ctx_emu.fault(provider, duration=duration, **fault)
        controller.notes.append(
            {
                "kind": "fault",
                "label": label,
                "providers": list(providers),
                "start": round(start, 3),
                "end": round(start + duration, 3),
                "fault": dict(fault),
            }
        )

    return act


def fault_note(result: FleetResult) -> dict[str, Any] | None:
    return next((n for n in result.notes if n.get("kind") == "fault"), None)


def cells_hit(
    result: FleetResult, providers: Sequence[str], start: float, end: float
) -> list[dict[str, Any]]:
    """Cells that sent more than one token request during [start, end] (their refresh was hit)."""
    hit = []
    for cell in result.cells():
        if group_of(str(cell["cell"])) in providers and len(requests_in(cell, start, end)) >= 2:
            hit.append(cell)
    return hit


def fault_bit(ctx: Ctx, result: FleetResult, providers: Sequence[str]) -> Check:
    """The fault really met at least one refresh (otherwise the scenario proved nothing)."""
    note = fault_note(result)
    if note is None:
        return Check("fault injected", False, "the fault was never injected (run too short?)")
    failures = sum(
        sum((ctx.server["providers"][p].get("token_failures") or {}).values())
        for p in providers
        if p in ctx.server.get("providers", {})
    )
    delayed = max(
        (ctx.server["providers"][p].get("max_concurrent_token_requests", 0) for p in providers), default=0
    )
    label = note.get("label", "fault")
    if note["fault"].get("latency"):
        slow = sum(
            result.groups[p].refresh_latency.max >= note["fault"]["latency"]
            for p in providers
            if p in result.groups
        )
        return Check(
            f"{label} met refreshes",
            slow > 0,
            f"{slow} providers saw a refresh take ≥ {note['fault']['latency']} s "
            f"(max concurrent token requests {delayed})",
        )
    return Check(f"{label} met refreshes", failures > 0, f"{failures} token requests failed at the emulator")


# =============================================================================================
# Lifetimes
# =============================================================================================


def steady_lifetimes(emu: EmulatorProcess, providers: Sequence[str], duration: float) -> dict[str, int]:
    """Documented lifetimes × 0.01, capped so every provider renews at least ~5 times."""
    cap = max(3, math.floor(duration / 6))
    out = {}
    for provider in providers:
        current = int(emu.stats(events=False)["providers"][provider]["expires_in"])
        if current > cap:
            current = emu.set_lifetime(provider, expires_in=cap)
        out[provider] = current
    return out


def fixed_lifetimes(emu: EmulatorProcess, providers: Sequence[str], seconds: int) -> dict[str, int]:
    return {provider: emu.set_lifetime(provider, expires_in=seconds) for provider in providers}


# =============================================================================================
# The scenarios
# =============================================================================================


def steady(opts: Options) -> list[RunPlan]:
    def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
        return [
            *basic_checks(result),
            Check(
                "no 401 even retried",
                result.total.recovered_401 == 0,
                f"{result.total.recovered_401} retried",
            ),
            near_ideal(result),
            hit_ratio_at_least(result, 0.99),
        ]

    return [
        RunPlan(
            scenario="steady",
            title="Steady load, every token renewed many times",
            expectation="0 401s (not even retried ones), 0 lost calls, token requests per (worker, cell) "
            "within ideal −1/+2, hit ratio ≥ 0.99",
            duration=opts.length(45),
            checks=checks,
        )
    ]


def _fault_plan(
    opts: Options,
    *,
    scenario: str,
    title: str,
    expectation: str,
    providers_hit: Sequence[str],
    width: float,
    fault: dict[str, Any],
    extra_checks: Callable[[Ctx, FleetResult, dict[str, Any]], list[Check]] | None = None,
    failures_allowed: bool = False,
    duration: float = 35.0,
) -> RunPlan:
    def actions(ctx: Ctx) -> list[Action]:
        when = around_refresh(providers_hit, width, fallback=ctx.plan.duration / 2)
        return [(when, fault_action(ctx.emu, providers_hit, duration=width, label=scenario, **fault))]

    def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
        out = [
            *basic_checks(result, failures_allowed=failures_allowed),
            fault_bit(ctx, result, providers_hit),
        ]
        note = fault_note(result)
        if extra_checks is not None and note is not None:
            out.extend(extra_checks(ctx, result, note))
        return out

    return RunPlan(
        scenario=scenario,
        title=title,
        expectation=expectation,
        duration=opts.length(duration),
        lifetime_scale=0.0,  # fixed lifetimes, see set_lifetimes()
        policy=FAULT_POLICY,
        actions=actions,
        checks=checks,
    )


def latency_spike(opts: Options) -> list[RunPlan]:
    spike = 1.5

    def extra(ctx: Ctx, result: FleetResult, note: dict[str, Any]) -> list[Check]:
        wait = result.total.token_wait
        return [
            Check(
                "no caller waited for the slow refresh (token wait p99 < spike / 3)",
                wait.percentile(99) < spike / 3,
                f"token wait p99 {wait.percentile(99) * 1e3:.3f} ms, max {wait.max * 1e3:.1f} ms; "
                f"spike {spike} s",
            )
        ]

    return [
        _fault_plan(
            opts,
            scenario="latency-spike",
            title=f"Token endpoints answer {spike} s late around refresh time",
            expectation="0 401s, 0 lost calls: the still-valid token is served while the slow refresh runs; "
            "token wait p99 stays far below the spike",
            providers_hit=ALL_PROVIDERS,
            width=3.0,
            fault={"latency": spike},
            extra_checks=extra,
        )
    ]


def _retries_bounded(note: dict[str, Any], result: FleetResult, providers: Sequence[str]) -> Check:
    start, end = float(note["start"]), float(note["end"])
    policy = FAULT_POLICY
    ramp = math.ceil(math.log2(policy.backoff_cap / policy.backoff_base)) + 1
    expected = ramp + max(0.0, end - start) / (policy.backoff_cap / 2)
    bound = math.ceil(2 * expected) + 3
    stop = end + policy.backoff_cap + 1.0
    worst = 0
    hit = cells_hit(result, providers, start, stop)
    for cell in hit:
        worst = max(worst, len(requests_in(cell, start, stop)))
    total = sum(len(requests_in(c, start, stop)) for p in providers for c in result.cells(p))
    failed = sum(
        1 for p in providers if p in result.groups for t in result.groups[p].failed_at if start <= t <= stop
    )
    return Check(
        f"no storm: retries follow the backoff (≤ {bound} per cell), not the callers",
        worst <= bound,
        f"{len(hit)} cells were hit; the busiest sent {worst} token requests in the window; "
        f"{total} token requests in all, while {failed} calls failed in it",
    )


def burst_5xx(opts: Options) -> list[RunPlan]:
    width = 2.0

    def extra(ctx: Ctx, result: FleetResult, note: dict[str, Any]) -> list[Check]:
        return [_retries_bounded(note, result, ALL_PROVIDERS)]

    return [
        _fault_plan(
            opts,
            scenario="5xx-burst",
            title=f"Token endpoints answer 503 for {width:g} s around refresh time",
            expectation="0 401s, 0 lost calls (refreshes retry with backoff while the current token is "
            "served), retries bounded",
            providers_hit=ALL_PROVIDERS,
            width=width,
            fault={"status": 503},
            extra_checks=extra,
        )
    ]


def retry_after_429(opts: Options) -> list[RunPlan]:
    width, retry_after = 1.0, 1

    def extra(ctx: Ctx, result: FleetResult, note: dict[str, Any]) -> list[Check]:
        start, end = float(note["start"]), float(note["end"]) + retry_after + 1.0
        early = []
        hit = cells_hit(result, ALL_PROVIDERS, start, end)
        for cell in hit:
            times = requests_in(cell, start, end)
            gaps = [b - a for a, b in itertools.pairwise(times)]
            if gaps and min(gaps) < retry_after * 0.95:
                early.append(f"worker {cell['worker']} {cell['cell']}: retried after {min(gaps):.3f} s")
        return [
            Check(
                f"Retry-After honoured (≥ {retry_after} s between attempts)",
                not early,
                f"{len(hit)} cells were hit; " + ("; ".join(early[:4]) if early else "none retried early"),
            )
        ]

    return [
        _fault_plan(
            opts,
            scenario="429-retry-after",
            title=f"Token endpoints answer 429 with Retry-After: {retry_after} for {width:g} s "
            "at refresh time",
            expectation="0 401s, 0 lost calls; no cell retries sooner than Retry-After",
            providers_hit=ALL_PROVIDERS,
            width=width,
            fault={"status": 429, "retry_after": retry_after},
            extra_checks=extra,
        )
    ]


def short_outage(opts: Options) -> list[RunPlan]:
    policy = FAULT_POLICY
    safe = (1 - policy.ratio - policy.margin_ratio) * FAULT_LIFETIME
    width = round(safe - policy.backoff_cap - 0.5, 2)

    return [
        _fault_plan(
            opts,
            scenario="short-outage",
            title=f"Token endpoints drop every connection for {width:g} s (< (1−r)·L = "
            f"{(1 - policy.ratio) * FAULT_LIFETIME:g} s) at refresh time",
            expectation="0 failed calls, 0 401s: every refresh hit by the outage succeeds on a retry before "
            f"its token stops being served (outage {width:g} s + backoff cap {policy.backoff_cap:g} s "
            f"< (1 − r − margin)·L = {safe:g} s)",
            providers_hit=ALL_PROVIDERS,
            width=width,
            fault={"drop": True},
        )
    ]


def long_outage(opts: Options) -> list[RunPlan]:
    provider = "navro"
    width = FAULT_LIFETIME / 2
    policy = FAULT_POLICY

    def extra(ctx: Ctx, result: FleetResult, note: dict[str, Any]) -> list[Check]:
        start, end = float(note["start"]), float(note["end"])
        navro = result.groups.get(provider)
        others = {k: g for k, g in result.groups.items() if k != provider}
        latency = navro.refresh_latency.percentile(99) if navro is not None else 0.0
        slack = 0.5 + 2 * latency
        limit = end + policy.backoff_cap + slack
        failures = navro.failures if navro is not None else {}
        typed = all(kind.startswith("token:") for kind in failures)
        failed_after = [t for t in (navro.failed_at if navro else []) if t > limit]
        late = []
        for cell in cells_hit(result, [provider], start, end):
            first = next((t for t in cell.get("refreshed_at", []) if t >= end - 0.05), None)
            if first is None or first > limit:
                late.append(
                    f"worker {cell['worker']}: {'never' if first is None else f'{first - end:.2f} s'}"
                )
        other_lost = sum(g.calls - g.ok for g in others.values())
        calls_failed = navro.failed if navro is not None else 0
        return [
            Check(
                "some navro calls failed (the outage outlived tokens)",
                calls_failed > 0,
                f"{calls_failed} failed",
            ),
            Check(
                "failures are typed tokenpool errors",
                typed and bool(failures),
                ", ".join(f"{k}: {v}" for k, v in failures.items()) or "none",
            ),
            _retries_bounded(note, result, [provider]),
            Check(
                f"recovery within one backoff cap ({policy.backoff_cap:g} s + {slack:.2f} s slack)",
                not late and not failed_after,
                ("; ".join(late[:4]) + "; " if late else "")
                + f"{len(failed_after)} calls failed after {limit - end:.2f} s past the outage",
            ),
            Check("other providers unaffected", other_lost == 0, f"{other_lost} calls lost elsewhere"),
        ]

    plan = _fault_plan(
        opts,
        scenario="long-outage",
        title=f"Navro's token endpoint drops every connection for {width:g} s, longer than the "
        "token's remaining life",
        expectation="typed errors (no 401s) once navro tokens run out, retries bounded by the backoff "
        "(no storm), "
        "recovery within one backoff cap after the outage, other providers untouched",
        providers_hit=[provider],
        width=width,
        fault={"drop": True},
        extra_checks=extra,
        failures_allowed=True,
        duration=40.0,
    )
    return [plan]


def mass_revocation(opts: Options) -> list[RunPlan]:
    return [_revocation_plan(opts, TOKENPOOL, ALL_PROVIDERS, opts.tenants, asserted=True)]


def _revocation_plan(
    opts: Options,
    strategy: StrategySpec,
    providers: Sequence[str],
    tenants: int,
    *,
    asserted: bool,
    duration: float = 25.0,
    scenario: str = "mass-revocation",
) -> RunPlan:
    length = opts.length(duration)
    when = quiet_instant(length)

    actions = _revoke_everything(when)

    def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
        note = next((n for n in result.notes if n.get("kind") == "revocation"), None)
        out = basic_checks(result)
        if note is None:
            out.append(Check("revocation happened", False, "never revoked (run too short?)"))
            return out
        start = float(note["start"])
        # Until the new tokens' own renewals (≥ (r − jitter)·L later) every cell
        # must send exactly one token request, whenever its first call after the
        # revocation meets the 401.
        shortest = min(
            (ctx.lifetimes.get(p, FAULT_LIFETIME) for p in ctx.plan.providers), default=FAULT_LIFETIME
        )
        stop = start + 0.7 * shortest
        wrong = []
        delays = []
        cells = result.cells()
        for cell in cells:
            times = requests_in(cell, start, stop)
            if len(times) != 1:
                wrong.append(f"worker {cell['worker']} {cell['cell']}: {len(times)}")
            else:
                delays.append(times[0] - start)
        out.extend(
            [
                Check(
                    "revocation hit live tokens",
                    int(note["revoked"]) > 0,
                    f"{note['revoked']} live tokens revoked",
                ),
                Check(
                    "one refresh per cell",
                    not wrong,
                    f"{len(cells)} cells; "
                    + (
                        "; ".join(wrong[:5])
                        if wrong
                        else "each sent exactly one token request, "
                        f"{min(delays):.2f}–{max(delays):.2f} s after the revocation"
                    ),
                ),
                Check(
                    "every call succeeded after one retry",
                    result.total.recovered_401 > 0 and result.total.unauthorized == 0,
                    f"{result.total.recovered_401} calls retried once after a 401 and succeeded",
                ),
            ]
        )
        return out

    return RunPlan(
        scenario=scenario,
        title="Every issued token revoked mid-run",
        expectation="one refresh per cell, every call succeeds after at most one retry (0 final 401s)",
        strategy=strategy,
        providers=tuple(providers),
        tenants=tenants,
        duration=length,
        lifetime_scale=0.0,
        policy=FAULT_POLICY,
        actions=actions,
        checks=checks if asserted else (lambda ctx, result: []),
        asserted=asserted,
    )


def _all_replaced(reply: str) -> bool:
    """``"worker 1: replaced 3/3"`` → True; ``"… replaced 0/1 (…)"`` → False."""
    counts = reply.split("replaced ", 1)[-1].split(" ", 1)[0]
    done, _, total = counts.partition("/")
    return done.isdigit() and done == total


def navro_secret_reset(opts: Options) -> list[RunPlan]:
    provider = "navro"
    delay = 1.0

    def actions(ctx: Ctx) -> list[Action]:
        when = around_refresh([provider], 1.0, fallback=ctx.plan.duration / 2)
        state: dict[str, Any] = {}

        def rotate(controller: FleetController) -> None:
            state["secret"] = ctx.emu.rotate_secret(provider)
            controller.notes.append({"kind": "rotation", "start": round(controller.elapsed, 3)})

        def swap(controller: FleetController) -> None:
            # The new secret goes to every worker over its pipe; it is never logged or stored.
            ident = controller.broadcast(
                "replace_credentials", group=provider, client_secret=state.pop("secret")
            )
            controller.notes.append({"kind": "swap", "start": round(controller.elapsed, 3), "id": ident})

        def later(controller: FleetController) -> float:
            return when(controller) + delay

        return [(when, rotate), (later, swap)]

    def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
        out = basic_checks(result)
        swap = next((n for n in result.notes if n.get("kind") == "swap"), None)
        rotation = next((n for n in result.notes if n.get("kind") == "rotation"), None)
        if swap is None or rotation is None:
            out.append(Check("secret rotated and swapped", False, "did not happen (run too short?)"))
            return out
        replies = result.replies.get(str(swap["id"]), [])
        ok = [
            r
            for r in replies
            if "replaced" in r and r.split("replaced ")[-1].split("/")[0] == r.split("/")[-1]
        ]
        server = ctx.server["providers"][provider]
        rejected = int((server.get("token_failures") or {}).get("401", 0))
        issued_after = [t for t in ctx.events("token_issued", provider) if t >= float(swap["start"])]
        out.extend(
            [
                Check(
                    "every worker swapped the credentials in its running pool",
                    len(ok) == opts.workers,
                    "; ".join(replies) or "no replies",
                ),
                Check(
                    "tokens issued with the new secret",
                    len(issued_after) > 0,
                    f"{len(issued_after)} after the swap",
                ),
                Check(
                    "old secret rejected meanwhile (informational)",
                    True,
                    f"{rejected} token requests refused with 401 between the reset and the swap",
                ),
            ]
        )
        return out

    return [
        RunPlan(
            scenario="navro-secret-reset",
            title=f"Navro secret reset in the Hub; the new secret reaches the running pools "
            f"{delay:g} s later",
            expectation="0 failed calls, 0 401s: the current tokens stay valid while refreshes with the old "
            "secret are rejected, and pool.replace_provider(…with_credentials(client_secret=new)) "
            "swaps the credentials without a restart",
            duration=opts.length(35),
            lifetime_scale=0.0,
            policy=FAULT_POLICY,
            actions=actions,
            checks=checks,
        )
    ]


def zertiban_shrink(opts: Options) -> list[RunPlan]:
    provider = "zertiban"
    steps = (12, 6, 3)
    length = opts.length(45)

    def actions(ctx: Ctx) -> list[Action]:
        out: list[Action] = []
        for i, seconds in enumerate(steps[1:], start=1):

            def act(controller: FleetController, seconds: int = seconds) -> None:
                ctx.emu.set_lifetime(provider, expires_in=seconds)
                controller.notes.append(
                    {"kind": "lifetime", "start": round(controller.elapsed, 3), "expires_in": seconds}
                )

            out.append((length * i / len(steps), act))
        return out

    def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
        cells = result.cells(provider)
        missing = [
            f"worker {c['worker']} {c['cell']}: {c['lifetimes_seen']}"
            for c in cells
            if not {float(s) for s in steps[1:]} <= {float(x) for x in c["lifetimes_seen"]}
        ]
        return [
            *basic_checks(result),
            Check(
                "every cell used each new lifetime",
                not missing and bool(cells),
                f"{len(cells)} cells; " + ("; ".join(missing[:4]) if missing else f"all saw {list(steps)} s"),
            ),
            near_ideal(result, groups=[provider]),
            hit_ratio_at_least(result, 0.99),
        ]

    def lifetimes(emu: EmulatorProcess) -> dict[str, int]:
        out = fixed_lifetimes(emu, ALL_PROVIDERS, FAULT_LIFETIME)
        out[provider] = emu.set_lifetime(provider, expires_in=steps[0])
        return out

    plan = RunPlan(
        scenario="zertiban-shrink",
        title=f"Zertiban's expires_in shrinks between tokens: {' → '.join(f'{s} s' for s in steps)}",
        expectation="0 401s, 0 lost calls; each cell renews on the lifetime of the token it holds "
        "(token requests within ideal −1/+2 of the piecewise ideal)",
        duration=length,
        lifetime_scale=0.0,
        policy=FAULT_POLICY,
        actions=actions,
        checks=checks,
        lifetimes=lifetimes,
    )
    return [plan]


# =============================================================================================
# The fleet tier: one token per client for a whole fleet of workers (Redis)
# =============================================================================================

#: The runs of the fleet scenario: (scenario, store, revoke-on-issue).
FLEET_RUNS: tuple[tuple[str, bool, bool], ...] = (
    ("fleet-A-per-process", False, False),
    ("fleet-B-store", True, False),
    ("fleet-C-revoke-per-process", False, True),
    ("fleet-D-revoke-store", True, True),
)


def fleet_ideal(cells: Sequence[dict[str, Any]]) -> int:
    """The ideal token requests of one cell *for the whole fleet*: :func:`ideal_requests` over every worker.

    From the first token any worker's cell used (warm-up included) to the
    last worker's end of load, with the lifetimes of every token the fleet's
    cells used, at the cells' refresh ratio: ``⌈T / (r·L)⌉`` for a constant
    lifetime.
    """
    if not cells:
        return 0
    lifetimes = [(float(at), float(life)) for cell in cells for at, life in cell.get("lifetimes_at", [])]
    if not lifetimes:
        lifetimes = [(float(c["span"][0]), float(c["lifetime"])) for c in cells if c.get("lifetime")]
    start = min(float(c["span"][0]) for c in cells)
    end = max(float(c["span"][1]) for c in cells)
    return ideal_requests(lifetimes, start, end, float(cells[0].get("ratio", RefreshPolicy().ratio)))


def fleet_figures(ctx: Ctx, result: FleetResult) -> dict[str, Any]:
    """Per provider (one emulator client each): token requests at the provider vs the fleet's ideal.

    ``requests`` is what the emulator counted at the token endpoint for the
    provider (warm-up included, failed requests included); ``ideal`` the
    fleet-wide ideal (:func:`fleet_ideal`, summed over the provider's cells);
    ``workers_ideal`` the sum of every worker's own ideal (what per-process
    pools need); ``w_times_ideal`` W × ``ideal``.
    """
    providers: dict[str, dict[str, Any]] = {}
    server = ctx.server.get("providers", {})
    for group in ctx.plan.providers:
        rows = result.cells(group)
        names = sorted({str(c["cell"]) for c in rows})
        ideal = sum(fleet_ideal([c for c in rows if c["cell"] == name]) for name in names)
        stats = server.get(group, {})
        lifetimes = sorted({float(c["lifetime"]) for c in rows if c.get("lifetime")})
        providers[group] = {
            "requests": int(stats.get("token_requests", 0)),
            "issued": int(stats.get("tokens_issued", 0)),
            "revoked_on_issue": int(stats.get("revoked_on_issue", 0)),
            "resource_401": sum((stats.get("resource_401") or {}).values()),
            "ideal": ideal,
            "workers_ideal": sum(int(c["ideal"]) for c in rows),
            "w_times_ideal": ctx.workers * ideal,
            "pool_fetches": sum(int(c["token_requests"]) for c in rows),
            "cells": len(names),
            "lifetime": lifetimes[-1] if lifetimes else None,
            "store": result.store.get(group, {}),
        }
    total = result.total
    worst = max((p["requests"] - p["ideal"] for p in providers.values()), default=0)
    store_totals: dict[str, int] = {}
    for figures in providers.values():
        for outcome, n in figures["store"].items():
            store_totals[outcome] = store_totals.get(outcome, 0) + int(n)
    line = "token requests at the provider per client (fleet ideal): " + ", ".join(
        f"{g} {p['requests']} ({p['ideal']})" for g, p in providers.items()
    )
    if ctx.plan.store:
        line += "; store: " + (", ".join(f"{k} {v}" for k, v in sorted(store_totals.items())) or "no events")
    return {
        "workers": ctx.workers,
        "store": ctx.plan.store,
        "revoke_on_issue": ctx.plan.prepare is not None,
        "providers": providers,
        "requests": sum(p["requests"] for p in providers.values()),
        "ideal": sum(p["ideal"] for p in providers.values()),
        "worst_over_ideal": worst,
        "store_outcomes": store_totals,
        "redis_commands": ctx.redis_commands,
        "redis_commands_per_s": None
        if ctx.redis_commands is None or result.duration <= 0
        else round(ctx.redis_commands / result.duration, 1),
        "token_wait": total.token_wait.summary(),
        "think_time_s": ctx.plan.think_time,
        "calls_per_s": round(total.calls / result.duration, 1) if result.duration > 0 else 0.0,
        "line": line,
    }


def _fleet_bound_check(figures: dict[str, Any], *, above: int) -> Check:
    providers = figures["providers"]
    over = [
        f"{g}: {p['requests']} vs ideal {p['ideal']}"
        for g, p in providers.items()
        if p["requests"] > p["ideal"] + above * max(1, p["cells"])
    ]
    return Check(
        f"token requests per client for the whole fleet within ideal + {above}",
        not over and bool(providers) and all(p["requests"] > 0 for p in providers.values()),
        "; ".join(over)
        if over
        else ", ".join(f"{g} {p['requests']}/{p['ideal']}" for g, p in providers.items())
        + " (at the provider / fleet ideal)",
    )


def _per_process_check(figures: dict[str, Any], *, below: int = 1, above: int = 2) -> Check:
    """Per-process pools: the fleet's requests are the sum of every worker's own ideal (≈ W × ideal)."""
    providers = figures["providers"]
    workers = int(figures["workers"])
    off = []
    for g, p in providers.items():
        cells = workers * max(1, p["cells"])
        low, high = p["workers_ideal"] - below * cells, p["workers_ideal"] + above * cells
        if not low <= p["requests"] <= high:
            off.append(f"{g}: {p['requests']} not in [{low}, {high}]")
    return Check(
        f"token requests per client ≈ W × ideal (the sum of the workers' ideals −{below}/+{above} each)",
        not off and bool(providers),
        "; ".join(off)
        if off
        else ", ".join(
            f"{g} {p['requests']} (Σ ideal {p['workers_ideal']}, W × ideal {p['w_times_ideal']})"
            for g, p in providers.items()
        ),
    )


def _store_used_check(figures: dict[str, Any]) -> Check:
    unused = [
        g
        for g, p in figures["providers"].items()
        if not (p["store"].get("lease_won", 0) > 0 and p["store"].get("hit", 0) > 0)
    ]
    totals = figures["store_outcomes"]
    return Check(
        "the store was used (every provider: leases won and shared tokens adopted)",
        not unused and bool(figures["providers"]),
        (f"not used for {', '.join(unused)}; " if unused else "")
        + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "no store events")
        + f"; Redis commands {figures['redis_commands']}",
    )


def _revoke_active_check(figures: dict[str, Any]) -> Check:
    revoked = {g: p["revoked_on_issue"] for g, p in figures["providers"].items()}
    return Check(
        "revoke-on-issue was active (tokens revoked when a newer one was issued)",
        bool(revoked) and all(n > 0 for n in revoked.values()),
        ", ".join(f"{g} {n}" for g, n in revoked.items()),
    )


def _measured(name: str, detail: str) -> Check:
    return Check(f"{name} (informational)", True, detail)


def fleet_pacing(opts: Options, workers: int, providers: Sequence[str]) -> float:
    """The pause after each call so that the fleet offers ``--fleet-rate`` calls/s in all.

    Paced so that W processes do not saturate the machine (a starved event loop makes every
    Redis round trip late, which is the store's fault path, not what the steady runs are about).
    """
    tasks = workers * len(providers) * opts.tasks
    return tasks / opts.fleet_rate if opts.fleet_rate > 0 else 0.0


def fleet(opts: Options) -> list[RunPlan]:
    """W worker processes × every provider, without and with a shared Redis store, then the same against
    providers that revoke a client's previous tokens when they issue a new one."""
    length = opts.length(30)
    workers = opts.fleet_workers
    providers = ALL_PROVIDERS
    think = fleet_pacing(opts, workers, providers)

    def revoke_everywhere(emu: EmulatorProcess) -> None:
        for provider in providers:
            emu.set_revoke_on_issue(provider)

    def checks_for(store: bool, revoke: bool) -> Callable[[Ctx, FleetResult], list[Check]]:
        def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
            figures = fleet_figures(ctx, result)
            total = result.total
            calls = (
                f"{total.calls:,} calls, {total.unauthorized} ended with 401, {total.recovered_401} "
                f"retried after a 401, {total.failed} failed otherwise ({result.lost_calls} lost in all)"
                + _kinds(result)
            )
            out: list[Check] = []
            if not revoke:
                out.extend(basic_checks(result))
                out.append(Check("no 401 even retried", total.recovered_401 == 0, calls))
                out.append(hit_ratio_at_least(result, 0.99))
                if store:
                    out.append(_fleet_bound_check(figures, above=1))
                    out.append(_store_used_check(figures))
                else:
                    out.append(near_ideal(result))
                    out.append(_per_process_check(figures))
            elif store:
                out.extend(basic_checks(result))
                out.append(_fleet_bound_check(figures, above=1))
                out.append(_store_used_check(figures))
                out.append(_revoke_active_check(figures))
                out.append(_measured("calls", calls))
            else:
                # Failures are what this run measures: only that it ran is judged.
                out.extend(c for c in basic_checks(result, failures_allowed=True) if c.name != "zero 401s")
                out.append(_revoke_active_check(figures))
                out.append(_measured("calls", calls))
                out.append(
                    _measured(
                        "token requests at the provider",
                        ", ".join(
                            f"{g} {p['requests']} (fleet ideal {p['ideal']}, W × ideal {p['w_times_ideal']})"
                            for g, p in figures["providers"].items()
                        ),
                    )
                )
            return out

        return checks

    texts = {
        (False, False): (
            f"{workers} workers, per-process pools (today's behaviour)",
            "0 401s (not even retried ones), 0 lost calls, hit ratio ≥ 0.99; token requests per (worker, "
            "cell) within ideal −1/+2, so per client for the fleet ≈ W × ideal",
        ),
        (True, False): (
            f"{workers} workers, every pool with store=RedisStore(one redis-server)",
            "0 401s (not even retried ones), 0 lost calls, hit ratio ≥ 0.99; token requests per client for "
            "the whole fleet (counted at the provider) within ideal + 1, ideal = ⌈T / (r·L)⌉ over the "
            "fleet's span; the store used for every provider",
        ),
        (False, True): (
            f"{workers} workers, per-process pools, providers revoke a client's previous tokens on issue",
            "measured: every worker's refresh revokes the other workers' tokens (401s, failed calls and "
            "token requests reported, not judged); revoke-on-issue active",
        ),
        (True, True): (
            f"{workers} workers with the store, providers revoke a client's previous tokens on issue",
            "0 failed calls (no 401 reaches a caller; retried 401s reported), token requests per client for "
            "the whole fleet within ideal + 1; the store used; revoke-on-issue active",
        ),
    }
    plans = []
    for scenario, store, revoke in FLEET_RUNS:
        title, expectation = texts[(store, revoke)]
        plans.append(
            RunPlan(
                scenario=scenario,
                title=title,
                expectation=expectation,
                providers=providers,
                # One cell per emulator client, so "per client" is per cell; and Zertiban tenants
                # share one client, so with revoke-on-issue they would revoke each other's tokens.
                tenants=1,
                duration=length,
                checks=checks_for(store, revoke),
                asserted=store or not revoke,
                group="fleet",
                workers=workers,
                store=store,
                prepare=revoke_everywhere if revoke else None,
                summary=fleet_figures,
                think_time=think,
            )
        )
    return plans


# =============================================================================================
# The fleet tier under faults: Redis killed, a lease holder killed, Redis slow, mass revocation
# =============================================================================================

#: Lifetime of the fleet-faults runs that need every provider to renew during a fault (s):
#: renewals every ~r·L = 4.8 s, so a 5 s outage meets each provider's.
FLEET_FAULT_LIFETIME = 6
#: The store's default deadline per Redis round trip (``RedisStore(operation_timeout=…)``).
STORE_OPERATION_TIMEOUT = 0.05
#: The default poll interval of a process waiting for another's lease.
STORE_POLL_INTERVAL = 0.05
#: The key prefix every pool uses (``RedisStore(key_prefix=…)`` default).
STORE_KEY_PREFIX = "tokenpool"
#: Slack for scheduling on a loaded machine, added to a bound on a measured time (s).
SCHEDULING_SLACK = 0.1

#: The runs of the fleet-faults scenario, in order.
FLEET_FAULT_RUNS = (
    "fleet-faults-redis-killed",
    "fleet-faults-lease-holder-killed",
    "fleet-faults-redis-slow",
    "fleet-faults-mass-revocation",
)


def lease_owner_pid(owner: str | None) -> int | None:
    """The process id at the head of a lease owner string ``"<pid>-<random hex>"`` (``None``: none there)."""
    if not owner:
        return None
    head, sep, tail = owner.partition("-")
    if not sep or not tail or not head.isascii() or not head.isdigit():
        return None
    pid = int(head)
    return pid if pid > 0 else None


def lease_key(spec: ProviderSpec, prefix: str = STORE_KEY_PREFIX) -> str | None:
    """The Redis key of *spec*'s refresh lease, as the workers' stores name it (``None``: unknown)."""
    try:
        from tokenpool.fleet import RedisStore

        # Only the key prefix matters for the names; the URL is never connected to.
        store = RedisStore("redis://127.0.0.1:6379/0", key_prefix=prefix)
        return store.key_names(build_provider(spec))["lease"]
    except Exception:
        return None


def provider_requests(ctx: Ctx, provider: str, start: float, end: float) -> list[float]:
    """Offsets of the token requests the emulator received for *provider* in [start, end]."""
    return [t for t in ctx.events("token_request", provider) if start <= t <= end]


def _store_sum(result: FleetResult, *outcomes: str, provider: str | None = None) -> int:
    return sum(
        int(counts.get(outcome, 0))
        for name, counts in result.store.items()
        if provider is None or name == provider
        for outcome in outcomes
    )


def _workers_recovered(result: FleetResult) -> Check:
    """Every surviving worker counted ``recovered`` at least once: it went back to the store."""
    back = [w.index for w in result.workers if sum(c.get("recovered", 0) for c in w.store.values()) > 0]
    stuck = [w.index for w in result.workers if w.index not in back]
    return Check(
        "every worker went back to the store (recovered ≥ 1 in each)",
        bool(result.workers) and not stuck,
        f"{len(back)}/{len(result.workers)} workers recovered"
        + (f"; not: {stuck}" if stuck else "")
        + f"; recovered {_store_sum(result, 'recovered')} in all",
    )


def _store_faults_met(result: FleetResult, providers: Sequence[str]) -> Check:
    """Store faults were seen (errors) and every provider's fetches went around Redis (fallback/deferred)."""
    per = {p: _store_sum(result, "fallback", "deferred", provider=p) for p in providers}
    errors = _store_sum(result, "error")
    missed = [p for p, n in per.items() if n == 0]
    return Check(
        "store faults met and gone around: errors ≥ 1, and fallback (or deferred) ≥ 1 for every provider",
        errors > 0 and not missed,
        f"errors {errors}; fallback+deferred per provider: " + ", ".join(f"{p} {n}" for p, n in per.items()),
    )


def _note(result: FleetResult, kind: str) -> dict[str, Any] | None:
    return next((n for n in result.notes if n.get("kind") == kind), None)


def _errors_of_actions(result: FleetResult) -> Check:
    errors = [f"{n.get('label', n['kind'])}: {n['error']}" for n in result.notes if n.get("error")]
    return Check("the fault actions ran", not errors, "; ".join(errors) or "every action ran")


def fault_figures(ctx: Ctx, result: FleetResult) -> dict[str, Any]:
    """The fleet figures, plus the fault runs' own: killed workers, fault notes, store totals."""
    figures = fleet_figures(ctx, result)
    figures["killed_workers"] = result.killed_workers
    figures["faults"] = [n for n in result.notes if n.get("kind") in ("fault", "revocation", "lease-kill")]
    wait = result.total.token_wait
    figures["token_wait_max_ms"] = round(wait.max * 1e3, 3)
    if result.killed_workers:
        figures["line"] += "; killed by the harness: " + ", ".join(
            f"worker {k['worker']} (pid {k['pid']}) at {k['at']:.2f} s" for k in result.killed_workers
        )
    return figures


def _fault_fleet_plan(
    opts: Options,
    *,
    scenario: str,
    title: str,
    expectation: str,
    duration: float,
    lifetime: int,
    actions: Callable[[Ctx], list[Action]],
    checks: Callable[[Ctx, FleetResult], list[Check]],
    store_options: dict[str, Any],
    proxy: bool = False,
) -> RunPlan:
    workers = opts.fleet_workers
    return RunPlan(
        scenario=scenario,
        title=title,
        expectation=expectation,
        providers=ALL_PROVIDERS,
        tenants=1,
        duration=opts.length(duration),
        lifetimes=lambda emu: fixed_lifetimes(emu, ALL_PROVIDERS, lifetime),
        lifetime_scale=0.0,
        policy=FAULT_POLICY,
        actions=actions,
        checks=checks,
        group="fleet-faults",
        workers=workers,
        store=True,
        store_options=tuple(store_options.items()),
        store_proxy=proxy,
        summary=fault_figures,
        think_time=fleet_pacing(opts, workers, ALL_PROVIDERS),
    )


def _redis_killed(opts: Options) -> RunPlan:
    length = opts.length(30)
    lifetime = FLEET_FAULT_LIFETIME
    # No window to sit out: the first fetch after the restart uses the store again.
    retry = 0.0
    kill_at = round(0.3 * length, 2)
    outage = round(min(5.0, 0.2 * length), 2)
    policy = FAULT_POLICY
    cycle = policy.ratio * lifetime

    def actions(ctx: Ctx) -> list[Action]:
        note: dict[str, Any] = {"kind": "fault", "label": "redis-server SIGKILLed", "providers": []}

        def kill(controller: FleetController) -> None:
            note["start"] = note["end"] = round(controller.elapsed, 3)
            controller.notes.append(note)
            try:
                assert ctx.redis is not None
                ctx.redis.kill()
            except (AssertionError, OSError, RuntimeError) as exc:
                note["error"] = f"kill: {type(exc).__name__}: {exc}"

        def restart(controller: FleetController) -> None:
            began = controller.elapsed
            try:
                assert ctx.redis is not None
                ctx.redis.restart()
            except (AssertionError, OSError, RuntimeError) as exc:
                note["error"] = f"restart: {type(exc).__name__}: {exc}"
            note["end"] = round(controller.elapsed, 3)
            note["restart_took_s"] = round(controller.elapsed - began, 3)
            note["port"] = None if ctx.redis is None else ctx.redis.port

        def snapshot(controller: FleetController) -> None:
            # Shared tokens in the restarted (empty) server: published after the restart.
            try:
                assert ctx.redis is not None
                keys = ctx.redis.keys(f"{STORE_KEY_PREFIX}:*:token")
            except (AssertionError, OSError, RuntimeError) as exc:
                keys = []
                note["error"] = f"snapshot: {type(exc).__name__}: {exc}"
            # "at", not "start": the plots draw a line at every note with a start.
            controller.notes.append(
                {"kind": "redis-keys", "at": round(controller.elapsed, 3), "tokens": len(keys)}
            )

        return [(kill_at, kill), (kill_at + outage, restart), (max(kill_at + outage, length - 0.5), snapshot)]

    def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
        out = basic_checks(result)
        note = fault_note(result)
        keys = _note(result, "redis-keys")
        if note is None or "restart_took_s" not in note:
            out.append(Check("redis-server killed and restarted", False, "did not happen (run too short?)"))
            return out
        start, end = float(note["start"]), float(note["end"])
        out.append(_errors_of_actions(result))
        out.append(
            Check(
                "redis-server killed and restarted on the same port",
                "error" not in note and ctx.redis is not None and ctx.redis.port == note.get("port"),
                f"SIGKILL at {start:.2f} s, back at {end:.2f} s on port {note.get('port')} "
                f"(restart took {note['restart_took_s']:.2f} s)",
            )
        )
        out.append(_store_faults_met(result, ctx.plan.providers))
        out.append(_workers_recovered(result))
        providers = list(ctx.plan.providers)
        tokens = int(keys["tokens"]) if keys is not None else 0
        out.append(
            Check(
                "tokens shared again after the restart (one per client in the restarted, empty Redis)",
                tokens >= len(providers),
                f"{tokens} shared tokens in Redis at {keys['at'] if keys else '?'} s, "
                f"{len(providers)} clients",
            )
        )
        # One renewal cycle after Redis is back, the fleet is back to one token
        # request per client and renewal.
        settle = end + retry + cycle + policy.jitter * lifetime + 0.5
        last = result.duration
        during = {p: len(provider_requests(ctx, p, start, end + retry)) for p in providers}
        if last - settle >= 1.0:
            ideal = ideal_requests([(settle, float(lifetime))], settle, last, policy.ratio)
            after = {p: len(provider_requests(ctx, p, settle, last)) for p in providers}
            over = [f"{p} {n}" for p, n in after.items() if n > ideal + 1]
            out.append(
                Check(
                    f"back to one token per client: token requests at the provider per client ≤ ideal + 1 "
                    f"from {settle:.1f} s to the end",
                    not over,
                    f"ideal {ideal} over {last - settle:.1f} s (W × ideal {ctx.workers * ideal}); "
                    + ", ".join(f"{p} {n}" for p, n in after.items()),
                )
            )
        else:
            out.append(
                Check(
                    "back to one token per client after the restart",
                    False,
                    f"the run ends {last - settle:.1f} s after the fleet settles: too short",
                )
            )
        out.append(
            _measured(
                "token requests at the provider per client from the kill to the restart",
                ", ".join(f"{p} {n}" for p, n in during.items()) + f" (W = {ctx.workers})",
            )
        )
        return out

    return _fault_fleet_plan(
        opts,
        scenario="fleet-faults-redis-killed",
        title=f"redis-server SIGKILLed {kill_at:g} s into the load, restarted on the same port "
        f"{outage:g} s later",
        expectation="0 failed calls, 0 final 401s; store errors and fallback during the outage; every worker "
        "back on the store afterwards (recovered), every client's token shared again in the restarted "
        "Redis, and token requests per client back to ≤ ideal + 1 one renewal cycle after the store is "
        "retried",
        duration=30,
        lifetime=lifetime,
        actions=actions,
        checks=checks,
        store_options={},
    )


def _lease_holder_killed(opts: Options) -> RunPlan:
    provider = "generic"
    length = opts.length(25)
    policy = FAULT_POLICY
    lease_ttl = policy.request_timeout  # the documented floor: at least the request timeout
    latency = policy.request_timeout + 1.0
    slow_for = 1.0  # only the first token request (the lease holder's) meets the latency
    search = 5.0  # how long to look for the lease holder before giving up
    when = quiet_instant(length, [provider])

    def actions(ctx: Ctx) -> list[Action]:
        spec = next((s for s in ctx.specs if s.group == provider), None)
        key = None if spec is None else lease_key(spec)
        state: dict[str, Any] = {}

        def revoke(controller: FleetController) -> None:
            # For the fallback when the owner carries no pid: each worker's lease_won so far.
            state["baseline"] = controller.broadcast("store_counts")
            ctx.emu.fault(provider, latency=latency, duration=slow_for)
            revoked = ctx.emu.revoke_tokens(provider)
            state["start"] = controller.elapsed
            controller.notes.append(
                {
                    "kind": "revocation",
                    "label": f"{provider} tokens revoked, its token endpoint {latency:g} s slow",
                    "providers": [provider],
                    "start": round(state["start"], 3),
                    "revoked": revoked,
                }
            )
            controller.after(0.0, look)

        def give_up(controller: FleetController, why: str) -> None:
            controller.notes.append(
                {
                    "kind": "lease-kill",
                    "label": "lease holder",
                    "start": round(controller.elapsed, 3),
                    "error": why,
                }
            )

        def look(controller: FleetController) -> None:
            if key is None:
                give_up(controller, f"cannot name {provider}'s lease key (tokenpool.fleet._codec.keys_for)")
                return
            if controller.elapsed - state["start"] > search:
                give_up(controller, f"no lease holder found within {search:g} s")
                return
            try:
                assert ctx.redis is not None
                leases = ctx.redis.keys(f"{STORE_KEY_PREFIX}:*:lease")
                found = key if key in leases else None
                owner = None if found is None else ctx.redis.get(found)
                pttl = -2 if found is None else ctx.redis.pttl(found)
                in_flight = int(
                    ctx.emu.stats(events=False)["providers"][provider]["token_requests_in_flight"]
                )
            except (AssertionError, OSError, RuntimeError) as exc:
                give_up(controller, f"{type(exc).__name__}: {exc}")
                return
            if found is None or owner is None or pttl <= 0 or in_flight < 1:
                controller.after(0.02, look)
                return
            pid = lease_owner_pid(owner)
            worker = None if pid is None else controller.worker_of(pid)
            found_at = controller.elapsed
            detail = {
                "lease_found_at": round(found_at, 3),
                "lease_expires_at": round(found_at + pttl / 1000, 3),
                "in_flight": in_flight,
                "owner_pid": pid,
            }
            if worker is not None:
                kill(controller, worker, "the lease owner's pid", detail)
                return
            # The owner string has no pid of ours: ask every worker for its lease_won instead.
            state["detail"] = detail
            state["query"] = controller.broadcast("store_counts")
            controller.after(0.3, by_counts)

        def by_counts(controller: FleetController) -> None:
            before = _lease_won(controller.replies.get(state["baseline"], []), provider)
            after = _lease_won(controller.replies.get(state["query"], []), provider)
            won = [w for w, n in after.items() if n > before.get(w, 0)]
            if len(won) != 1:
                give_up(controller, f"lease owner has no pid and {len(won)} workers won a {provider} lease")
                return
            kill(controller, won[0], "the worker whose lease_won grew", state["detail"])

        def kill(controller: FleetController, worker: int, method: str, detail: dict[str, Any]) -> None:
            killed = controller.kill_worker(
                worker, f"held the {provider} lease with its token request in flight (by design)"
            )
            controller.notes.append(
                {
                    "kind": "lease-kill",
                    "label": f"{provider} lease holder SIGKILLed",
                    "start": round(controller.elapsed, 3),
                    "worker": worker,
                    "pid": controller.pids.get(worker),
                    "found_by": method,
                    **detail,
                    **({} if killed else {"error": f"worker {worker} was not alive"}),
                }
            )

        return [(when, revoke)]

    def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
        out = basic_checks(result)
        revocation = _note(result, "revocation")
        note = _note(result, "lease-kill")
        if revocation is None or note is None:
            out.append(Check("lease holder killed", False, "did not happen (run too short?)"))
            return out
        out.append(_errors_of_actions(result))
        killed = result.killed_workers
        kill_at = float(note["start"])
        out.append(
            Check(
                "the lease holder was found in Redis and SIGKILLed mid-request",
                "error" not in note and len(killed) == 1 and killed[0]["worker"] == note.get("worker"),
                f"lease of {provider} held by pid {note.get('owner_pid')} (worker {note.get('worker')}, "
                f"found by {note.get('found_by')}), {note.get('in_flight')} token request(s) in flight "
                f"at the emulator; killed at {kill_at:.2f} s; killed workers {[k['worker'] for k in killed]}"
                if "error" not in note
                else str(note["error"]),
            )
        )
        if "error" in note:
            return out
        expires = float(note["lease_expires_at"])
        shortest = min(ctx.lifetimes.get(p, FAULT_LIFETIME) for p in ctx.plan.providers)
        stop = float(revocation["start"]) + 0.7 * shortest
        after = provider_requests(ctx, provider, kill_at, stop)
        before = provider_requests(ctx, provider, float(revocation["start"]), kill_at)
        limit = expires + STORE_POLL_INTERVAL + 0.5
        out.append(
            Check(
                f"another process fetched within the lease TTL ({lease_ttl:g} s): the first token request "
                f"after the kill ≤ lease expiry + poll interval + 0.5 s",
                bool(after) and after[0] <= limit,
                (
                    f"first request {after[0] - kill_at:.2f} s after the kill, "
                    f"{after[0] - expires:+.2f} s from the lease's expiry"
                    if after
                    else "no token request after the kill"
                )
                + f" (lease expired {expires - kill_at:.2f} s after the kill)",
            )
        )
        out.append(
            Check(
                f"one token request for the whole fleet after the holder died (until {stop:.1f} s)",
                len(after) == 1,
                f"{len(after)} after the kill, {len(before)} between the revocation and the kill "
                "(the holder's)",
            )
        )
        cells = result.cells(provider)
        wrong = [
            f"worker {c['worker']}: {len(requests_in(c, float(revocation['start']), stop))}"
            for c in cells
            if len(requests_in(c, float(revocation["start"]), stop)) != 1
        ]
        out.append(
            Check(
                "every surviving worker got exactly one new token (adopted, or the takeover's own fetch)",
                bool(cells) and not wrong,
                f"{len(cells)} cells; " + ("; ".join(wrong[:5]) if wrong else "one each"),
            )
        )
        group = result.groups.get(provider)
        out.append(
            _measured(
                f"{provider} callers' wait through the dead holder's lease",
                "n/a"
                if group is None
                else f"token wait max {group.token_wait.max:.2f} s, "
                f"p99 {group.token_wait.percentile(99) * 1e3:.1f} ms; "
                f"{group.recovered_401} calls retried after the 401",
            )
        )
        return out

    return _fault_fleet_plan(
        opts,
        scenario="fleet-faults-lease-holder-killed",
        title=f"{provider}'s tokens revoked with its token endpoint {latency:g} s slow; the worker holding "
        "the refresh lease (pid read from the lease in Redis) SIGKILLed while its request is in flight",
        expectation=f"another process takes the lease over once it expires (lease_ttl {lease_ttl:g} s) and "
        "fetches: exactly one token request for the fleet after the kill, every surviving worker gets one "
        "new token, 0 failed calls and 0 final 401s among the surviving workers (the killed worker's "
        "results are missing by design)",
        duration=25,
        lifetime=FAULT_LIFETIME,
        actions=actions,
        checks=checks,
        store_options={"lease_ttl": lease_ttl},
    )


def _lease_won(replies: Sequence[str], provider: str) -> dict[int, int]:
    """``{worker: lease_won}`` from ``"worker 3: {json}"`` replies to ``store_counts``."""
    import json

    out: dict[int, int] = {}
    for reply in replies:
        head, _, body = reply.partition(": ")
        try:
            worker = int(head.removeprefix("worker "))
            counts = json.loads(body)
        except ValueError:
            continue
        if isinstance(counts, dict):
            out[worker] = int((counts.get(provider) or {}).get("lease_won", 0))
    return out


def _redis_slow(opts: Options) -> RunPlan:
    length = opts.length(30)
    lifetime = FLEET_FAULT_LIFETIME
    deadline = STORE_OPERATION_TIMEOUT
    delay = 0.2  # per chunk, each way: a round trip takes ≥ 0.4 s, 8× the deadline
    slow_at = round(0.25 * length, 2)
    slow_for = float(lifetime)  # every provider renews at least once while it is slow
    stall_for = round(min(4.0, 0.15 * length), 2)

    def actions(ctx: Ctx) -> list[Action]:
        slow: dict[str, Any] = {
            "kind": "fault",
            "label": f"Redis +{delay * 1e3:.0f} ms per chunk",
            "providers": [],
        }
        stall: dict[str, Any] = {"kind": "fault", "label": "Redis stalled", "providers": []}

        def start_slow(controller: FleetController) -> None:
            slow["start"] = slow["end"] = round(controller.elapsed, 3)
            controller.notes.append(slow)
            if ctx.proxy is None:
                slow["error"] = "no proxy"
                return
            ctx.proxy.set_latency(delay)

        def start_stall(controller: FleetController) -> None:
            slow["end"] = stall["start"] = stall["end"] = round(controller.elapsed, 3)
            controller.notes.append(stall)
            if ctx.proxy is not None:
                ctx.proxy.set_latency(0.0)
                ctx.proxy.stall()

        def resume(controller: FleetController) -> None:
            stall["end"] = round(controller.elapsed, 3)
            if ctx.proxy is not None:
                ctx.proxy.resume()
                stall["proxy"] = {
                    "connections": ctx.proxy.connections,
                    "delayed_chunks": ctx.proxy.delayed,
                    "held_chunks": ctx.proxy.held,
                }

        return [
            (slow_at, start_slow),
            (slow_at + slow_for, start_stall),
            (slow_at + slow_for + stall_for, resume),
        ]

    def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
        out = basic_checks(result)
        stall = next((n for n in result.notes if n.get("label") == "Redis stalled"), None)
        if stall is None or "proxy" not in stall:
            out.append(Check("Redis slowed and stalled", False, "did not happen (run too short?)"))
            return out
        out.append(_errors_of_actions(result))
        proxy = stall["proxy"]
        out.append(
            Check(
                "Redis was slowed, then stalled, through the proxy",
                proxy["delayed_chunks"] > 0 and proxy["held_chunks"] > 0,
                f"{proxy['delayed_chunks']} chunks delayed by {delay * 1e3:.0f} ms, {proxy['held_chunks']} "
                f"held by the stall, over {proxy['connections']} connections",
            )
        )
        out.append(_store_faults_met(result, ctx.plan.providers))
        wait = result.total.token_wait
        bound = deadline + SCHEDULING_SLACK
        out.append(
            Check(
                f"no caller waited on the slow store: token wait max ≤ operation_timeout "
                f"({deadline * 1e3:.0f} ms) + {SCHEDULING_SLACK * 1e3:.0f} ms scheduling slack",
                wait.max <= bound,
                f"token wait max {wait.max * 1e3:.1f} ms, p99 {wait.percentile(99) * 1e3:.3f} ms over "
                f"{wait.count:,} calls (renewals run ahead of expiry: callers should never meet the store)",
            )
        )
        out.append(
            Check(
                f"token wait p99 ≤ operation_timeout ({deadline * 1e3:.0f} ms)",
                wait.percentile(99) <= deadline,
                f"p99 {wait.percentile(99) * 1e3:.3f} ms",
            )
        )
        out.append(_workers_recovered(result))
        out.append(
            _measured(
                "token request (refresh) latency max per provider, store time included",
                ", ".join(f"{g} {r.refresh_latency.max * 1e3:.0f} ms" for g, r in result.groups.items()),
            )
        )
        return out

    return _fault_fleet_plan(
        opts,
        scenario="fleet-faults-redis-slow",
        title=f"Redis behind a proxy: +{delay * 1e3:.0f} ms per chunk for {slow_for:g} s (above the "
        f"{deadline * 1e3:.0f} ms deadline), then stalled for {stall_for:g} s",
        expectation=f"0 failed calls, 0 final 401s; store errors and fallback for every provider; token wait "
        f"max ≤ operation_timeout + {SCHEDULING_SLACK * 1e3:.0f} ms slack and p99 ≤ operation_timeout (no "
        "caller waits on the slow store); every worker back on the store after the stall",
        duration=30,
        lifetime=lifetime,
        actions=actions,
        checks=checks,
        store_options={},
        proxy=True,
    )


def _mass_revocation_store(opts: Options) -> RunPlan:
    length = opts.length(25)
    when = quiet_instant(length)

    actions = _revoke_everything(when)

    def checks(ctx: Ctx, result: FleetResult) -> list[Check]:
        out = basic_checks(result)
        note = _note(result, "revocation")
        if note is None:
            out.append(Check("revocation happened", False, "never revoked (run too short?)"))
            return out
        start = float(note["start"])
        shortest = min(ctx.lifetimes.get(p, FAULT_LIFETIME) for p in ctx.plan.providers)
        # Until the new tokens' own renewals (≥ (r − jitter)·L later).
        stop = start + 0.7 * shortest
        per = {p: len(provider_requests(ctx, p, start, stop)) for p in ctx.plan.providers}
        wrong = [f"{p} {n}" for p, n in per.items() if n != 1]
        cells = result.cells()
        # One each; two where a scheduled renewal was in flight when the 401 came: the cell
        # then asks once more, after the 401 (its answer may predate the revocation), and
        # through the store that second fetch adopts the fleet's token (no token request:
        # the check above counts those at the provider).
        taken = {f"worker {c['worker']} {c['cell']}": len(requests_in(c, start, stop)) for c in cells}
        bad_cells = [f"{cell}: {n}" for cell, n in taken.items() if n not in (1, 2)]
        twice = sorted(cell for cell, n in taken.items() if n == 2)
        fenced = {p: _store_sum(result, "fenced", provider=p) for p in ctx.plan.providers}
        out.extend(
            [
                Check(
                    "revocation hit live tokens",
                    int(note["revoked"]) > 0,
                    f"{note['revoked']} live tokens revoked at {start:.2f} s",
                ),
                Check(
                    f"exactly one token request per client for the whole fleet after the revocation "
                    f"(at the provider, until {stop:.1f} s)",
                    not wrong,
                    ", ".join(f"{p} {n}" for p, n in per.items()) + f" (W = {ctx.workers})",
                ),
                Check(
                    "every (worker, cell) took one new token (fetched or adopted), or two when a renewal "
                    "was in flight at the 401",
                    bool(cells) and not bad_cells,
                    f"{len(cells)} cells; "
                    + (
                        "; ".join(bad_cells[:5])
                        if bad_cells
                        else f"one each, two in {len(twice)}"
                        + (f" ({', '.join(twice[:5])})" if twice else "")
                    ),
                ),
                Check(
                    "every call succeeded after at most one retry",
                    result.total.recovered_401 > 0 and result.total.unauthorized == 0,
                    f"{result.total.recovered_401} calls retried once after a 401 and succeeded",
                ),
                _measured(
                    "revoked shared tokens fenced (deleted from Redis after a 401)",
                    ", ".join(f"{p} {n}" for p, n in fenced.items()),
                ),
            ]
        )
        return out

    return _fault_fleet_plan(
        opts,
        scenario="fleet-faults-mass-revocation",
        title="Every issued token revoked mid-run, every pool with the store",
        expectation="exactly one token request per client for the whole fleet caused by the revocation "
        "(counted at the provider), one new token per (worker, cell) (two where a renewal was in "
        "flight at the 401, the second adopted), 0 failed calls, 0 final 401s",
        duration=25,
        lifetime=FAULT_LIFETIME,
        actions=actions,
        checks=checks,
        store_options={},
    )


def fleet_faults(opts: Options) -> list[RunPlan]:
    """W worker processes × every provider, every pool with the store, one fault per run:
    Redis killed and restarted, the lease holder killed mid-request, Redis slow then stalled,
    every token revoked."""
    return [
        _redis_killed(opts),
        _lease_holder_killed(opts),
        _redis_slow(opts),
        _mass_revocation_store(opts),
    ]


# =============================================================================================
# Peers
# =============================================================================================

PEER_SCALE = 0.05
PEERS: tuple[tuple[str, str, float], ...] = (
    ("authlib", "benchmarks.peers:AuthlibStrategy", 60.0),
    ("httpx-auth", "benchmarks.peers:HttpxAuthStrategy", 30.0),
    ("naive-lock", "benchmarks.peers:NaiveLockStrategy", 30.0),
)
PEER_PROVIDERS = ("generic", "zertiban", "navro")


def _strategies(scaled: bool) -> list[StrategySpec]:
    out = [StrategySpec(label="tokenpool")]
    for label, path, leeway in PEERS:
        if scaled:
            out.append(StrategySpec(path=path, label=label, options=(("leeway", leeway * PEER_SCALE),)))
        else:
            out.append(StrategySpec(path=path, label=f"{label} (literal defaults)", options=()))
    return out


def peers(opts: Options) -> list[RunPlan]:
    """tokenpool beside authlib, httpx-auth and a naive lock: steady, revocation, literal defaults."""
    plans: list[RunPlan] = []
    length = opts.length(30)
    for strategy in _strategies(scaled=True):
        plans.append(
            RunPlan(
                scenario="peers-steady",
                title="Steady load, peers beside tokenpool (leeways compressed like the lifetimes)",
                expectation="measured; tokenpool: 0 401s, 0 lost calls",
                strategy=strategy,
                providers=PEER_PROVIDERS,
                tenants=1,
                duration=length,
                lifetime_scale=PEER_SCALE,
                checks=(lambda ctx, result: basic_checks(result))
                if strategy.label == "tokenpool"
                else (lambda c, r: []),
                asserted=strategy.label == "tokenpool",
                group="peers",
            )
        )
    for strategy in _strategies(scaled=True):
        plan = _revocation_plan(
            opts,
            strategy,
            PEER_PROVIDERS,
            1,
            asserted=strategy.label == "tokenpool",
            duration=30.0,
            scenario="peers-revocation",
        )
        plan.lifetime_scale = PEER_SCALE
        plan.policy = None
        plan.group = "peers"
        plan.title = "Every issued token revoked mid-run, peers beside tokenpool"
        plans.append(plan)
    for strategy in _strategies(scaled=False)[1:]:
        plans.append(
            RunPlan(
                scenario="peers-literal-defaults",
                title="Peers with their literal default leeways on the compressed lifetimes "
                "(as with real tokens shorter than the leeway)",
                expectation="measured",
                strategy=strategy,
                providers=PEER_PROVIDERS,
                tenants=1,
                duration=length,
                lifetime_scale=PEER_SCALE,
                asserted=False,
                group="peers",
            )
        )
    return plans


SCENARIOS: dict[str, Callable[[Options], list[RunPlan]]] = {
    "steady": steady,
    "latency-spike": latency_spike,
    "5xx-burst": burst_5xx,
    "429-retry-after": retry_after_429,
    "short-outage": short_outage,
    "long-outage": long_outage,
    "mass-revocation": mass_revocation,
    "navro-secret-reset": navro_secret_reset,
    "zertiban-shrink": zertiban_shrink,
    "fleet": fleet,
    "fleet-faults": fleet_faults,
    "peers": peers,
}


def plans_for(names: Sequence[str], opts: Options) -> list[RunPlan]:
    plans: list[RunPlan] = []
    for name in names:
        plans.extend(SCENARIOS[name](opts))
    for plan in plans:
        if plan.group not in ("peers", "fleet", "fleet-faults"):
            plan.tenants = opts.tenants
    return plans


def set_lifetimes(emu: EmulatorProcess, plan: RunPlan) -> dict[str, int]:
    """Configure the emulator's lifetimes for *plan* (after a reset) and return them."""
    if plan.lifetimes is not None:
        return plan.lifetimes(emu)
    if plan.lifetime_scale > 0:
        emu.set_lifetime_scale(plan.lifetime_scale)
        if plan.group == "peers":
            return {p: int(emu.stats(events=False)["providers"][p]["expires_in"]) for p in plan.providers}
        return steady_lifetimes(emu, plan.providers, plan.duration)
    return fixed_lifetimes(emu, plan.providers, FAULT_LIFETIME)
