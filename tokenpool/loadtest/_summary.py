"""The demo's summary as text: a table that fits the width, what the faults did, a legend, the verdict.

Pure: :func:`render_summary` turns a report (:func:`build_report`'s JSON plus
the demo's own keys) into lines of at most ``text.width`` columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._text import Text, plural

__all__ = ["render_summary"]

Row = dict[str, str]

#: Column key → header.  Every column but the first is right-aligned.
HEADERS = {
    "provider": "provider",
    "lifetime": "lifetime",
    "cells": "cells",
    "calls": "calls",
    "rate": "calls/s",
    "401s": "401s",
    "replayed": "replayed",
    "failed": "failed",
    "tokens": "tokens",
    "ideal": "ideal",
    "retried": "retried",
    "hit": "hit ratio",
    "p99": "wait p99",
    "max": "wait max",
    "latency": "latency",
}
_TIMES = ("p99", "max", "latency")
#: Tables from the widest down; the first that fits is used, else one block per provider.
LAYOUTS: tuple[tuple[str, ...], ...] = (
    tuple(HEADERS),
    (
        "provider",
        "lifetime",
        "cells",
        "calls",
        "rate",
        "401s",
        "replayed",
        "failed",
        "tokens",
        "ideal",
        *_TIMES,
    ),
    ("provider", "lifetime", "calls", "401s", "replayed", "failed", "tokens", "ideal", "max"),
)
#: What each column means, for the legend (only the columns shown are explained).
LEGEND = {
    "cells": "cells: token cells per worker (one per Zertiban tenant; one for the others)",
    "401s": "401s: calls whose final answer was 401, i.e. reached the caller",
    "replayed": "replayed: calls that met a 401 (a revoked token) and succeeded when the pool "
    "replayed them once with a new token (none of these reached the caller)",
    "failed": "failed: calls that ended without a 2xx for any other reason",
    "tokens": "tokens: tokens each cell fetched in each worker, the first one included (fewest–most)",
    "ideal": "ideal: the fewest tokens a cell needs without faults, ⌈T / (r·L)⌉ for the T seconds "
    "its pool was open, lifetime L and r the renewal ratio",
    "retried": "retried: token requests that failed (the outage's answers) and were retried",
    "hit": "hit ratio: calls that were handed a token at once, of all calls",
    "wait": "token wait (wait p99, wait max): time a call spent in `await pool.token(name)` before "
    "it was sent, after warm-up (warm-up: before the worker held the cell's first token; the "
    "pools fetch it before the load starts, so every call counts)",
    "latency": "latency: median duration of the API call itself",
}


_EXPLAINED = ("cells", "401s", "replayed", "failed", "tokens", "ideal", "retried", "hit")


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f} ms"
    if value >= 1:
        return f"{value:.1f} ms"
    return f"{value:.3f} ms"


def _span(values: list[int] | None) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}–{high}"


def _row(name: str, g: dict[str, Any], workers: int) -> Row:
    hit = g.get("hit_ratio")
    wait = g["token_wait_after_warm_up"]
    lifetime = g.get("lifetime_s")
    return {
        "provider": name,
        "lifetime": "" if lifetime is None else f"{lifetime:g} s",
        "cells": "" if name == "total" else str(g["cells"] // max(1, workers)),
        "calls": f"{g['calls']:,}",
        "rate": f"{g['calls_per_s']:,.0f}",
        "401s": f"{g['unauthorized']:,}",
        "replayed": f"{g['recovered_401']:,}",
        "failed": f"{g['failed']:,}",
        "tokens": _span(g.get("tokens_per_cell")) if name != "total" else "",
        "ideal": _span(g.get("ideal_per_cell")) if name != "total" else "",
        "retried": f"{g.get('retried_token_requests', 0):,}",
        "hit": "-" if hit is None else f"{hit:.4f}",
        "p99": _ms(wait["p99_ms"]),
        "max": _ms(wait["max_ms"]),
        "latency": _ms(g["latency"]["p50_ms"]),
    }


def _table(keys: tuple[str, ...], rows: list[Row]) -> list[str]:
    widths = [max(len(HEADERS[k]), *(len(r[k]) for r in rows)) for k in keys]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    body = [line([r[k] for k in keys]) for r in rows]
    return [line([HEADERS[k] for k in keys]), rule, *body[:-1], rule, body[-1]]


def _blocks(rows: list[Row], text: Text) -> list[str]:
    lines: list[str] = []
    for r in rows:
        items = [f"{k} {r[k]}" for k in ("lifetime", "calls", "401s", "replayed", "failed") if r[k]]
        if r["tokens"]:
            items.append(f"tokens {r['tokens']} (ideal {r['ideal']})")
        items.append(f"wait max {r['max']}")
        lines += text.wrap(", ".join(items), first=f"{r['provider']}: ", indent="  ")
    return lines


def _faults(report: dict[str, Any], say: Callable[[str], None]) -> None:
    t = report["total"]
    if report.get("calm"):
        say("No faults were injected (--calm).")
        return
    effects = report.get("faults") or {}
    rev = effects.get("revocation")
    if rev is not None:
        say(
            f"At {rev['at']:.1f} s the emulator revoked every token ({rev['revoked']:,} live). "
            f"{plural(rev['replayed'], 'call')} met a revoked token (401) and "
            f"{'was' if rev['replayed'] == 1 else 'were'} replayed once with a new one; the pool "
            f"fetched {plural(rev['replaced'], 'new token')} for {plural(rev['cells'], 'cell')}."
        )
    out = effects.get("outage")
    if out is not None:
        renewed = out.get("renewed_after_s")
        who = "it" if out["cells_hit"] == 1 else "all"
        spare = out.get("least_spare_s")
        after = (
            ""
            if renewed is None
            else f"; {who} renewed at most {renewed:.2f} s after it ended"
            + ("" if spare is None else f", at least {spare:.2f} s before the old token would have run out")
            if renewed != float("inf")
            else "; not every one of them renewed before the run ended"
        )
        lost = out["failed_without_token"]
        say(
            f"At {out['start']:.1f} s every token endpoint answered {out['status']} for "
            f"{out['end'] - out['start']:.1f} s: {plural(out['failed_token_requests'], 'token request')} "
            f"failed and {'was' if out['failed_token_requests'] == 1 else 'were'} retried while the cells "
            f"served their current tokens ({plural(out['cells_hit'], 'cell')} renewing during the outage"
            f"{after})" + (f"; {lost:,} failed after a token had run out" if lost else "") + "."
        )
    elif report.get("no_outage"):
        say(f"No outage in this run: {report['no_outage']}.")
    for error in effects.get("errors", []):
        say(f"At {error['at']:.1f} s the demo could not {error['what']}: {error['error']}.")
    if (rev is not None or out is not None) and not report.get("interrupted"):
        reached = t["unauthorized"] + t["failed"]
        say(
            "Not one of them reached a caller: 0 calls ended with 401 or failed."
            if reached == 0
            else f"{plural(t['unauthorized'], 'call')} ended with 401 and {plural(t['failed'], 'call')} "
            "failed: see below."
        )


def _verdict(report: dict[str, Any]) -> str:
    t = report["total"]
    bound = _ms(report["token_wait_bound_ms"])
    if report.get("interrupted"):
        return "INTERRUPTED: partial results of the calls made before Ctrl-C (the emulator stops too)."
    if not report["passed"]:
        return "FAIL: " + "; ".join(report["problems"]) + "."
    fewest = min(
        (
            g["min_renewals_per_cell"]
            for g in report["providers"].values()
            if g["min_renewals_per_cell"] is not None
        ),
        default=0,
    )
    return (
        f"PASS: {t['calls']:,} calls, 0 ended with 401, 0 failed; every provider was called and every "
        f"token renewed ahead of expiry in every worker (each cell at least {plural(fewest, 'time')}); "
        f"no call waited more than {bound} for its token after warm-up "
        f"(max {_ms(t['token_wait_after_warm_up']['max_ms'])})."
    )


def render_summary(report: dict[str, Any], text: Text) -> list[str]:
    """The summary of *report* as lines of at most ``text.width`` columns (converted for the stream)."""
    lines: list[str] = []

    def say(paragraph: str, indent: str = "") -> None:
        lines.extend(text.wrap(paragraph, indent=indent))

    s = report["settings"]
    workers = int(s["workers"])
    lines.append("")
    say(
        f"tokenpool demo — {workers} workers × {s['tasks_per_provider']} tasks per provider, "
        f"{report['duration_s']:.1f} s of load, HTTP/{'2' if s['http2'] else '1.1'}"
        f"{' over TLS' if s['tls'] else ' (plain)'}, ≤ {s['max_in_flight_per_worker']} requests in "
        f"flight per worker; tokens renewed at r = {s['refresh_ratio']:g} of their lifetime"
        + (f", failed token requests retried after {report['backoff']}" if report.get("backoff") else "")
    )
    lines.append("")
    rows = [_row(name, g, workers) for name, g in report["providers"].items()]
    rows.append(_row("total", {**report["total"], "lifetime_s": None}, workers))
    shown: tuple[str, ...] = ()
    for keys in LAYOUTS:
        table = _table(keys, rows)
        if max(len(line) for line in table) <= text.width:
            lines += table
            shown = keys
            break
    else:
        lines += _blocks(rows, text)
        shown = ("lifetime", "401s", "replayed", "failed", "tokens", "ideal", "max")
    lines.append("")
    t = report["total"]
    emulated = [g["emulator"] for g in report["providers"].values()]
    retried = sum(int(g.get("retried_token_requests") or 0) for g in report["providers"].values())
    say(
        f"Token requests: {t['token_requests']:,} in all, {t.get('tokens', 0):,} of them answered with a "
        f"token" + (f" and {retried:,} failed and retried" if retried else "") + "."
    )
    if not report.get("interrupted") and all(e["resource_calls"] is not None for e in emulated):
        refused = sum(sum((e["token_failures"] or {}).values()) for e in emulated)
        calls = sum(int(e["resource_calls"]) for e in emulated)
        requests = sum(int(e["token_requests"] or 0) for e in emulated)
        replays = t["recovered_401"]
        agree = calls == t["calls"] + replays and requests == t["token_requests"]
        say(
            f"The emulator's own counters{' agree' if agree else ''}: {plural(calls, 'API request')}"
            + (f" (the {t['calls']:,} calls and {replays:,} replays)" if agree and replays else "")
            + ", "
            f"{sum(int(e['resource_401']) for e in emulated):,} answered 401 (revoked, expired or "
            f"unknown token, by its own clock), {plural(requests, 'token request')}"
            + (f" ({refused:,} refused)" if refused else "")
            + "."
        )
    _faults(report, say)
    lines.append("")
    terms: list[str] = [key for key in _EXPLAINED if key in shown]
    if "p99" in shown or "max" in shown:
        terms.append("wait")
    if "latency" in shown:
        terms.append("latency")
    for key in terms:
        say(LEGEND[key], indent="    ")
    over = report.get("oversubscribed")
    if over:
        lines.append("")
        processes = plural(workers, "worker process", "worker processes")
        say(
            f"Note: {processes} on {plural(over['cpus'], 'CPU')}: "
            "waits and latencies include time spent queued for a CPU.",
            indent="    ",
        )
    lines.append("")
    say(_verdict(report), indent="    ")
    return lines
