"""The default demo's faults: every token revoked, then every token endpoint down, timed to the lifetimes.

At 40 % of the run the emulator revokes every token it issued: its APIs then
answer 401 to them, and each cell's first call after that meets the 401, drops
the token, fetches one new token and replays the call once.  That aligns every
cell: the new tokens are all due for renewal ``(r − j)·L`` to ``r·L`` later,
so the outage that follows is placed over that window, and is short enough
that every renewal it meets can fail, back off and succeed after it ends
before the current token stops being served (``(1 − margin)·L`` after it was
sent): no caller waits and no call fails.  A run whose lifetimes cannot give
that guarantee gets no outage, and says why.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._timing import RefreshPolicy
from ._controller import Action, FleetController
from ._results import FleetResult

if TYPE_CHECKING:
    from ..testing import EmulatorProcess

#: Nothing public: the demo uses these.
__all__: list[str] = []

#: The demo's refresh policy: tokenpool's defaults, with the backoff's time constants (0.5 s first
#: retry, 30 s cap) compressed like the lifetimes, so that a retry follows the outage within 0.5 s.
DEMO_POLICY = RefreshPolicy(backoff_base=0.05, backoff_cap=0.5)
#: When the revocation comes, as a fraction of the run.
REVOKE_AT = 0.4
#: The outage starts this long before the earliest renewal of the replaced tokens.
LEAD = 0.3
#: Allowance for the token request that ends a renewal after the outage, on a busy machine.
SLACK = 0.7
MIN_OUTAGE = 0.5
MAX_OUTAGE = 2.0
#: The status every token endpoint answers during the outage.
OUTAGE_STATUS = 503


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """When the faults come: the revocation at ``revoke_at`` s, the outage ``outage_after`` s later."""

    revoke_at: float
    outage_after: float | None
    outage_for: float
    #: Why there is no outage (``None``: there is one).
    no_outage: str | None = None


def _outage_window(lifetime: float, policy: RefreshPolicy) -> tuple[float, float]:
    """(start, length) of the outage after a revocation, for tokens of *lifetime* seconds."""
    earliest = policy.refresh_delay(lifetime, 1.0)
    usable = lifetime - policy.margin(lifetime)
    start = max(0.0, earliest - LEAD)
    return start, min(MAX_OUTAGE, usable - policy.backoff_cap - SLACK - start)


def plan_faults(duration: float, lifetimes: Mapping[str, float], policy: RefreshPolicy) -> FaultPlan:
    """The faults of a run of *duration* seconds whose shortest token lives ``min(lifetimes)``."""
    revoke_at = round(REVOKE_AT * duration, 1)
    shortest = min(lifetimes.values(), default=0.0)
    start, length = _outage_window(shortest, policy)
    if length < MIN_OUTAGE:
        need = next(
            (n for n in range(1, 3600) if _outage_window(float(n), policy)[1] >= MIN_OUTAGE), math.inf
        )
        reason = (
            f"the shortest lifetime ({shortest:g} s) leaves no room for an outage every renewal can "
            f"ride out (that takes {need:g} s tokens; without --lifetime-scale or --max-lifetime, "
            f"--duration {math.ceil(need / REVOKE_AT):g} or more gives them)"
        )
        return FaultPlan(revoke_at, None, 0.0, reason)
    if revoke_at + start + length > duration - 0.5:
        reason = (
            f"the run ends before the replaced tokens' renewals (~{revoke_at + start + LEAD:.1f} s), "
            "where the outage would go"
        )
        return FaultPlan(revoke_at, None, 0.0, reason)
    return FaultPlan(revoke_at, round(start, 2), round(length, 2))


def fault_actions(
    plan: FaultPlan,
    emu: EmulatorProcess,
    providers: Sequence[str],
    note: Callable[[str], None],
) -> list[Action]:
    """The run's actions for *plan*: they act on *emu*, leave notes in the result, *note* each event."""

    def guarded(what: str, controller: FleetController, act: Callable[[], dict[str, Any]]) -> None:
        at = round(controller.elapsed, 2)
        try:
            controller.notes.append({"at": at, **act()})
        except Exception as exc:  # the emulator refused: the run goes on, the summary says so
            controller.notes.append({"kind": "fault_error", "at": at, "what": what, "error": repr(exc)})
            note(f"{at:5.1f} s  could not {what}: {exc}")

    def outage(controller: FleetController, end: float) -> None:
        # Anchored to its planned end (from the instant of the revocation): a fault the busy
        # emulator registers late is shorter, never later, so every renewal it meets still has
        # its backoff and one token request before its token stops being served.
        def act() -> dict[str, Any]:
            start = controller.elapsed
            for provider in providers:
                left = end - controller.elapsed
                if left >= 0.05:
                    emu.fault(provider, status=OUTAGE_STATUS, duration=round(left, 3))
            note(
                f"{start:5.1f} s  every token endpoint answers {OUTAGE_STATUS} until {end:.1f} s "
                "(renewals retry; the current tokens are served meanwhile)"
            )
            controller.at(end, lambda c: note(f"{c.elapsed:5.1f} s  token endpoints up again"))
            return {
                "kind": "outage",
                "start": round(start, 3),
                "end": round(end, 3),
                "status": OUTAGE_STATUS,
                # How long the emulator took to take every token endpoint down.
                "registered_in": round(controller.elapsed - start, 3),
            }

        guarded(f"start the outage ({OUTAGE_STATUS})", controller, act)

    def revoke(controller: FleetController) -> None:
        revoked_at = controller.elapsed

        def act() -> dict[str, Any]:
            revoked = emu.revoke_tokens()
            note(
                f"{revoked_at:5.1f} s  revoked every token at the emulator ({revoked} live): "
                "each cell's next call meets a 401, gets a new token and is replayed once"
            )
            if plan.outage_after is not None:
                end = revoked_at + plan.outage_after + plan.outage_for
                controller.at(revoked_at + plan.outage_after, lambda c: outage(c, end))
            return {"kind": "revocation", "revoked": revoked}

        guarded("revoke the tokens", controller, act)

    return [(plan.revoke_at, revoke)]


def fault_effects(
    result: FleetResult, server: Mapping[str, Any], policy: RefreshPolicy = DEMO_POLICY
) -> dict[str, Any]:
    """What the faults did, from the workers' figures (and the emulator's, when it answered)."""
    total = result.total
    cells = result.cells()
    events: Counter[str] = Counter()
    for worker in result.workers:
        events.update(worker.events)
    effects: dict[str, Any] = {"errors": [n for n in result.notes if n.get("kind") == "fault_error"]}
    revocation = next((n for n in result.notes if n.get("kind") == "revocation"), None)
    if revocation is not None:
        effects["revocation"] = {
            "at": revocation["at"],
            "revoked": int(revocation.get("revoked", 0)),
            "unauthorized_responses": len(total.unauthorized_at),
            "replayed": total.recovered_401,
            "replaced": sum(int(c.get("replaced") or 0) for c in cells),
            "cells": len(cells),
        }
    outage = next((n for n in result.notes if n.get("kind") == "outage"), None)
    if outage is not None:
        start, end = float(outage["start"]), float(outage["end"])
        hit = [c for c in cells if any(start <= t <= end for t in c.get("requests_at", []))]
        delays = []
        # How long before it would have stopped being served each hit cell's token was replaced.
        spare = []
        for cell in hit:
            first = next((t for t in cell.get("refreshed_at", []) if t >= start), None)
            delays.append(math.inf if first is None else max(0.0, first - end))
            held = [(sent, life) for sent, life in cell.get("lifetimes_at", []) if sent < start]
            if first is not None and held:
                sent, life = max(held)
                spare.append(sent + life - policy.margin(life) - first)
        answered = sum(
            int((p.get("token_failures") or {}).get(str(outage["status"]), 0))
            for p in (server.get("providers") or {}).values()
        )
        effects["outage"] = {
            "start": start,
            "end": end,
            "status": outage["status"],
            "failed_token_requests": sum(
                max(0, int(c["token_requests"]) - int(c.get("tokens") or 0)) for c in cells
            ),
            "emulator_refused": answered if server else None,
            "retried_while_served": events["token.refresh.retry"],
            "failed_without_token": events["token.refresh.failed"],
            "cells_hit": len(hit),
            "renewed_after_s": None if not delays else round(max(delays), 3),
            "least_spare_s": None if not spare else round(min(spare), 3),
            "calls_failed": sum(1 for t in total.failed_at if start <= t <= end + 2.0),
        }
    return effects
