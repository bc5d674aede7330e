"""The harness's outputs: one JSON document, a Markdown report and PNG plots."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["machine", "timeline", "write_json", "write_markdown", "write_plots"]

BIN = 0.5  # seconds per timeline bin


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in (
        "httpx",
        "httpcore",
        "anyio",
        "h2",
        "hypercorn",
        "redis",
        "authlib",
        "httpx-auth",
        "matplotlib",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_at_start": None if load is None else [round(x, 2) for x in load],
        "versions": versions,
    }


#: The timeline starts this long before the load, to show the warm-up's token requests.
LEAD = 5.0


def timeline(events: Sequence[dict[str, Any]], offset: float, duration: float) -> dict[str, Any]:
    """Emulator events binned per provider: token requests, 401s, token failures.

    Bin ``i`` covers ``[start + i·bin_s, start + (i+1)·bin_s)`` seconds from the start of the load.
    """
    bins = max(1, math.ceil((duration + LEAD + 5.0) / BIN))
    out: dict[str, dict[str, list[int]]] = {"token_request": {}, "resource_401": {}, "token_failure": {}}
    for event in events:
        kind = event["kind"]
        if kind not in out:
            continue
        t = float(event["t"]) + offset
        index = math.floor((t + LEAD) / BIN)
        if not 0 <= index < bins:
            continue
        series = out[kind].setdefault(event["provider"], [0] * bins)
        series[index] += 1
    return {"bin_s": BIN, "start_s": -LEAD, **out}


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    if value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _ratio(value: float, base: float) -> str:
    if base <= 0:
        return "–"
    return f"{value / base:.2f}×"


def write_markdown(path: Path, document: dict[str, Any]) -> str:
    runs = document["runs"]
    lines: list[str] = []
    m = document["machine"]
    lines.append("# tokenpool benchmark harness")
    lines.append("")
    lines.append(
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, {m['platform']}; "
        "load average at start "
        f"{m['load_average_at_start']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + "."
    )
    o = document["options"]
    lines.append("")
    lines.append(
        f"Every run: {o['workers']} worker processes × {o['tasks']} concurrent tasks per provider, "
        f"HTTP/{'2' if o['http2'] else '1.1'}"
        f"{' over TLS (NTX MX over mutual TLS)' if o['tls'] else ' plain'}, "
        f"at most {o['max_in_flight']} requests in flight per worker (a FIFO semaphore in front of the "
        "transport, taken before the token lookup; without it httpcore's pool, not the auth layer, is the "
        "bottleneck: it rescans every queued request on every event). The emulator rejects expired, "
        "revoked and unknown tokens by its own clock. "
        "Latencies are loopback figures on a shared machine: compare them within a run, not across machines."
    )
    if any(r["group"] in ("fleet", "fleet-faults") for r in runs):
        lines.append("")
        lines.append(
            f"The fleet runs use {o.get('fleet_workers', o['workers'])} worker processes (`--fleet-workers`) "
            "and one Zertiban tenant, so that every cell is one emulator client; "
            + (
                f"their tasks pause after each call so that the fleet offers about {o['fleet_rate']:g} "
                "calls/s (`--fleet-rate`)."
                if o.get("fleet_rate")
                else "their tasks call as fast as they can (`--fleet-rate 0`)."
            )
        )
    lines.append("")
    tokenpool_runs = [r for r in runs if r["group"] not in ("peers", "fleet", "fleet-faults")]
    if tokenpool_runs:
        lines.append("## Scenarios")
        lines.append("")
        lines.append(
            "| scenario | verdict | lifetimes (s) | calls | calls/s | 401 final | 401 retried | failed | "
            "token req | ideal | hit ratio | token wait p50 / p99 / max (ms) | latency p50 / p99 (ms) |"
        )
        lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for run in tokenpool_runs:
            t = run["result"]["total"]
            hit = "–" if t["hit_ratio"] is None else f"{t['hit_ratio']:.4f}"
            lifetimes = sorted(set(run["lifetimes"].values()))
            lines.append(
                f"| {run['scenario']} | {'PASS' if run['passed'] else '**FAIL**'} | "
                f"{'/'.join(str(x) for x in lifetimes)} | {t['calls']:,} | {t['calls_per_s']:,.0f} | "
                f"{t['unauthorized']} | {t['recovered_401']} | {t['failed']} | {t['token_requests']} | "
                f"{t['ideal_token_requests']} | {hit} | {_ms(t['token_wait']['p50_ms'])} / "
                f"{_ms(t['token_wait']['p99_ms'])} / {_ms(t['token_wait']['max_ms'])} | "
                f"{_ms(t['latency']['p50_ms'])} / {_ms(t['latency']['p99_ms'])} |"
            )
        resends = sum(r["result"]["total"].get("goaway_resends", 0) for r in runs)
        if resends:
            lines.append("")
            lines.append(
                f"{resends} calls in all runs were sent a second time after the emulator's graceful HTTP/2 "
                "GOAWAY (hypercorn closes a connection after 1,000 requests; streams above `last_stream_id` "
                "were never processed, RFC 9113 §6.8, and httpcore fails them instead of re-sending). These "
                "are transport events, not token failures; the calls are counted once."
            )
        lines.append("")
        lines.append("### Expectations")
        lines.append("")
        lines.extend(expectations(tokenpool_runs))
    fleet_runs = [r for r in runs if r["group"] == "fleet"]
    if fleet_runs:
        lines.extend(_fleet_section(fleet_runs))
    fault_runs = [r for r in runs if r["group"] == "fleet-faults"]
    if fault_runs:
        lines.extend(_fleet_faults_section(fault_runs))
    peer_runs = [r for r in runs if r["group"] == "peers"]
    if peer_runs:
        lines.append("## Peers")
        lines.append("")
        lines.append(
            "Same processes, tasks, in-flight bound and emulator; providers the peers can speak: generic "
            "(RFC 6749), Zertiban and Navro (HTTP Basic + form). NTX Pay MX/PIX and Pay-me take JSON token "
            "requests (NTX MX also a forwarded certificate header), which none of the peers can send without "
            "hand-written request code: they are not run, rather than faked. Lifetimes compressed ×"
            f"{document.get('peer_scale', 0.05)}; in `peers-steady` and `peers-revocation` each peer's "
            "leeway is compressed by the same factor (authlib 60 s → 3 s, httpx-auth and the naive lock "
            "30 s → 1.5 s), "
            "which is how their defaults behave on real 300 s tokens; `peers-literal-defaults` keeps the "
            "literal defaults on the compressed tokens, which is how they behave on real tokens shorter than "
            "the leeway. authlib fetches its first token once per worker before the load, as its docs show. "
            "Auth overhead = time from the call's start to the resource request reaching the transport "
            "(token lookup or fetch, locks, auth flow, request building). Ratios are against the tokenpool "
            "run of the same scenario (`peers-literal-defaults` against `peers-steady`'s); token requests "
            "as a rate per second of load, so runs of different lengths compare."
        )
        lines.append("")
        lines.append(
            "| run | strategy | calls | calls/s | 401s | retried 401s | failed | token req | ideal | "
            "auth overhead p50 / mean / p99 (ms) | token req/s vs tokenpool | calls/s vs tokenpool | "
            "overhead (mean) vs tokenpool |"
        )
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
        base: dict[str, dict[str, Any]] = {}
        for run in peer_runs:
            if run["strategy"] == "tokenpool":
                base[run["scenario"]] = run["result"]
        for run in peer_runs:
            t = run["result"]["total"]
            # Runs without a tokenpool run of their own (literal defaults) compare with peers-steady's.
            ref_result = base.get(run["scenario"]) or base.get("peers-steady")
            o_ = t["auth_overhead"]
            if ref_result is not None:
                ref = ref_result["total"]
                ratios = (
                    _ratio(
                        t["token_requests"] / max(float(run["result"]["duration_s"]), 1e-9),
                        ref["token_requests"] / max(float(ref_result["duration_s"]), 1e-9),
                    ),
                    _ratio(t["calls_per_s"], ref["calls_per_s"]),
                    _ratio(o_["mean_ms"], ref["auth_overhead"]["mean_ms"]),
                )
            else:
                ratios = ("–", "–", "–")
            lines.append(
                f"| {run['scenario']} | {run['strategy']} | {t['calls']:,} | {t['calls_per_s']:,.0f} | "
                f"{t['unauthorized']} | {t['recovered_401']} | {t['failed']} | {t['token_requests']:,} | "
                f"{t['ideal_token_requests']} | "
                f"{_ms(o_['p50_ms'])} / {_ms(o_['mean_ms'])} / {_ms(o_['p99_ms'])} | "
                f"{ratios[0]} | {ratios[1]} | {ratios[2]} |"
            )
        lines.append("")
        for run in peer_runs:
            if run["checks"]:
                failed = [c for c in run["checks"] if not c["passed"]]
                if failed:
                    lines.append(
                        f"- **FAIL** {run['scenario']}/{run['strategy']}: "
                        + "; ".join(f"{c['name']}: {c['detail']}" for c in failed)
                    )
        lines.append("")
    verdict = "PASS" if document["passed"] else "FAIL"
    lines.append(f"Overall: **{verdict}** ({document['summary']}).")
    if document.get("plots"):
        lines.append("")
        lines.append("Plots: " + ", ".join(f"`{p}`" for p in document["plots"]) + ".")
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return text


def _verdict(run: dict[str, Any]) -> str:
    if not run["asserted"]:
        failed = [c for c in run["checks"] if not c["passed"]]
        return "measured" + (" (**check failed**)" if failed else "")
    return "PASS" if run["passed"] else "**FAIL**"


def _hit_ratio(run: dict[str, Any]) -> str:
    ratio = run["result"]["total"]["hit_ratio"]
    return "–" if ratio is None else f"{ratio:.4f}"


def _store_outcomes(outcomes: dict[str, int] | None) -> str:
    if not outcomes:
        return "–"
    return ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))


def _fleet_section(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The fleet tier side by side: per-process pools vs a shared Redis store, normal and revoke-on-issue."""
    lines = ["## Fleet tier (Redis)", ""]
    lines.append(
        "W worker processes, each with its own `TokenPool` over every provider; in the store runs every "
        "pool has `store=RedisStore(url)` on one local redis-server (emptied before each run). Token "
        "requests are counted **at the provider** (the emulator's token endpoint, warm-up and failed "
        "requests included), per client. The fleet ideal per client is ⌈T / (r·L)⌉ with T from the first "
        "token any worker used to the end of the load (`ideal_requests` over every worker's cells); "
        "W × ideal is what W independent pools need. In the revoke-on-issue runs every provider revokes a "
        "client's earlier live tokens when it issues a new one. 401 final = calls that ended with 401; "
        "401 retried = calls that met a 401, were replayed once and succeeded; failed = calls that did "
        "not succeed (401s included). Token wait is the time in `await pool.token(name)` per call: the "
        "hit path."
    )
    lines.append("")
    lines.append(
        "| run | verdict | W | store | revoke on issue | calls | calls/s | 401 final | 401 retried | "
        "failed | token requests (all clients) | fleet ideal | W × ideal | worst client vs ideal | "
        "token wait p50 / p99 (ms) | store outcomes | Redis commands/s |"
    )
    lines.append("|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for run in runs:
        t = run["result"]["total"]
        f = run.get("fleet") or {}
        workers = f.get("workers", run.get("workers") or 0)
        ideal = int(f.get("ideal", 0))
        worst = f.get("worst_over_ideal")
        rate = f.get("redis_commands_per_s")
        lines.append(
            f"| {run['scenario']} | {_verdict(run)} | {workers} | {'yes' if run.get('store') else 'no'} | "
            f"{'yes' if f.get('revoke_on_issue') else 'no'} | {t['calls']:,} | {t['calls_per_s']:,.0f} | "
            f"{t['unauthorized']:,} | "
            f"{t['recovered_401']:,} | {run['result']['lost_calls']:,} | {int(f.get('requests', 0)):,} | "
            f"{ideal:,} | {int(workers) * ideal:,} | {'–' if worst is None else f'{int(worst):+d}'} | "
            f"{_ms(t['token_wait']['p50_ms'])} / {_ms(t['token_wait']['p99_ms'])} | "
            f"{_store_outcomes(f.get('store_outcomes')) if run.get('store') else '–'} | "
            f"{'–' if rate is None else f'{rate:,.0f}'} |"
        )
    lines.append("")
    providers: list[str] = []
    for run in runs:
        for name in (run.get("fleet") or {}).get("providers", {}):
            if name not in providers:
                providers.append(name)
    if providers:
        lines.append(
            "Token requests at the provider per client, and the fleet ideal of that run "
            "(`requests / ideal`; W × ideal in brackets):"
        )
        lines.append("")
        lines.append("| client | lifetime (s) | " + " | ".join(r["scenario"] for r in runs) + " |")
        lines.append("|---|---:|" + "---:|" * len(runs))
        for name in providers:
            cells = []
            lifetime = None
            for run in runs:
                p = (run.get("fleet") or {}).get("providers", {}).get(name)
                if p is None:
                    cells.append("–")
                    continue
                lifetime = p.get("lifetime") or lifetime
                cells.append(f"{p['requests']:,} / {p['ideal']} ({p['w_times_ideal']:,})")
            life = "–" if lifetime is None else f"{float(lifetime):g}"
            lines.append(f"| {name} | {life} | " + " | ".join(cells) + " |")
        lines.append("")
    by_scenario = {r["scenario"]: r for r in runs}
    without, with_store = by_scenario.get("fleet-A-per-process"), by_scenario.get("fleet-B-store")
    if without is not None and with_store is not None:
        a, b = without["result"]["total"]["token_wait"], with_store["result"]["total"]["token_wait"]
        lines.append(
            f"Hit path with a store: token wait p50 {_ms(a['p50_ms'])} ms without vs {_ms(b['p50_ms'])} ms "
            f"with ({_ratio(b['p50_ms'], a['p50_ms'])}), p99 {_ms(a['p99_ms'])} vs {_ms(b['p99_ms'])} ms "
            f"({_ratio(b['p99_ms'], a['p99_ms'])}); two runs on a shared machine, so only a large "
            "difference means something. Hit ratio "
            + " vs ".join(_hit_ratio(r) for r in (without, with_store))
            + "."
        )
        lines.append("")
    lines.append("### Fleet expectations")
    lines.append("")
    lines.extend(expectations(runs))
    return lines


def _fault_label(run: dict[str, Any]) -> str:
    """What was done to the run, from its notes: ``redis-server SIGKILLed 9.0–14.1 s``…"""
    parts = []
    for note in run["result"].get("notes", []):
        kind = note.get("kind")
        if kind == "fault" and "start" in note:
            parts.append(
                f"{note.get('label', 'fault')} {float(note['start']):.1f}–{float(note['end']):.1f} s"
            )
        elif kind in ("revocation", "lease-kill") and "start" in note:
            parts.append(f"{note.get('label', kind)} at {float(note['start']):.1f} s")
    return "; ".join(parts) or "–"


def _fleet_faults_section(runs: Sequence[dict[str, Any]]) -> list[str]:
    """One fault per run, W workers with the store; the checks are counts and bounds."""
    lines = ["## Fleet tier under faults (Redis)", ""]
    lines.append(
        "W worker processes × every provider, every pool with `store=RedisStore(url)` on the harness's "
        "redis-server, lifetimes compressed; one fault per run: the redis-server SIGKILLed and restarted on "
        "the same port; the worker holding a refresh lease (its pid read from the lease's owner in Redis) "
        "SIGKILLed with its token request in flight; Redis slowed, then stalled, by a loopback proxy between "
        "the workers and the server (`benchmarks/redis_proxy.py`); every token revoked at the provider. "
        "Token requests are counted at the provider (the emulator's token endpoint), per client. A worker "
        "killed by the harness is killed on purpose: its results are missing by design and every figure is "
        "the surviving workers'. Token wait is the time in `await pool.token(name)` per call."
    )
    lines.append("")
    lines.append(
        "| run | verdict | W | fault | calls | 401 final | 401 retried | failed | "
        "token requests (all clients) | store outcomes | token wait p99 / max (ms) | killed by the harness |"
    )
    lines.append("|---|---|---:|---|---:|---:|---:|---:|---:|---|---|---|")
    for run in runs:
        t = run["result"]["total"]
        f = run.get("fleet") or {}
        killed = run["result"].get("killed_workers") or []
        lines.append(
            f"| {run['scenario']} | {_verdict(run)} | {f.get('workers', run.get('workers') or 0)} | "
            f"{_fault_label(run)} | {t['calls']:,} | {t['unauthorized']:,} | {t['recovered_401']:,} | "
            f"{run['result']['lost_calls']:,} | {int(f.get('requests', 0)):,} | "
            f"{_store_outcomes(f.get('store_outcomes'))} | "
            f"{_ms(t['token_wait']['p99_ms'])} / {_ms(t['token_wait']['max_ms'])} | "
            + (", ".join(f"worker {k['worker']} (pid {k['pid']})" for k in killed) or "–")
            + " |"
        )
    lines.append("")
    lines.append("### Fleet-fault expectations")
    lines.append("")
    lines.extend(expectations(runs))
    return lines


def expectations(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Each run's expectation and the outcome of each of its checks."""
    lines: list[str] = []
    for run in runs:
        lines.append(f"**{run['scenario']}** — {run['title']}. Expected: {run['expectation']}.")
        lines.append("")
        for check in run["checks"]:
            mark = "PASS" if check["passed"] else "FAIL"
            lines.append(f"- {mark} {check['name']}: {check['detail']}")
        lines.append("")
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_plots(out: Path, document: dict[str, Any]) -> list[str]:
    """One PNG per run (token requests and 401s over time, refresh latency) and a peers summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    for run in document["runs"]:
        tl = run.get("timeline")
        if not tl:
            continue
        fig, axes = plt.subplots(3, 1, figsize=(10, 9), constrained_layout=True)
        step = float(tl["bin_s"])
        origin = float(tl.get("start_s", 0.0))
        for ax, kind, title in (
            (axes[0], "token_request", "token requests per provider (emulator)"),
            (axes[1], "resource_401", "resource calls rejected with 401 per provider (emulator)"),
        ):
            for provider, counts in sorted(tl[kind].items()):
                xs = [origin + i * step for i in range(len(counts))]
                ax.step(xs, counts, where="post", label=provider)
            for note in run["result"].get("notes", []):
                if note.get("kind") == "fault":
                    ax.axvspan(float(note["start"]), float(note["end"]), color="red", alpha=0.12)
                elif "start" in note:
                    ax.axvline(float(note["start"]), color="black", linestyle="--", linewidth=0.8)
            ax.set_title(title)
            ax.set_ylabel(f"per {step:g} s")
            ax.set_xlim(origin, max(1.0, float(run["result"]["duration_s"]) + 1))
            ax.axvline(0.0, color="grey", linewidth=0.6)
            if tl[kind]:
                ax.legend(loc="upper right", fontsize="small", ncol=3)
        axes[1].set_xlabel(
            "seconds since the start of the load (before 0: warm-up; fault windows shaded, events dashed)"
        )
        providers = run["result"]["providers"]
        names = list(providers)
        p50 = [providers[n]["refresh_latency"]["p50_ms"] for n in names]
        p99 = [providers[n]["refresh_latency"]["p99_ms"] for n in names]
        mx = [providers[n]["refresh_latency"]["max_ms"] for n in names]
        xs = list(range(len(names)))
        width = 0.27
        axes[2].bar([x - width for x in xs], p50, width, label="p50")
        axes[2].bar(xs, p99, width, label="p99")
        axes[2].bar([x + width for x in xs], mx, width, label="max")
        axes[2].set_xticks(xs, names)
        axes[2].set_ylabel("ms")
        axes[2].set_title("token request (refresh) latency, client side")
        axes[2].legend(fontsize="small")
        fig.suptitle(f"{run['scenario']} — {run['strategy']}: {'PASS' if run['passed'] else 'FAIL'}")
        name = f"{_slug(run['scenario'])}--{_slug(run['strategy'])}.png"
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        written.append(name)
    peer_runs = [r for r in document["runs"] if r["group"] == "peers"]
    if peer_runs:
        fig, axes = plt.subplots(1, 3, figsize=(15, 5), constrained_layout=True)
        labels = [f"{r['scenario'].removeprefix('peers-')}\n{r['strategy']}" for r in peer_runs]
        totals = [r["result"]["total"] for r in peer_runs]
        for ax, values, title in (
            (axes[0], [t["token_requests"] for t in totals], "token requests"),
            (axes[1], [t["unauthorized"] for t in totals], "calls that ended with 401"),
            (axes[2], [t["calls_per_s"] for t in totals], "calls/s"),
        ):
            ax.barh(range(len(labels)), values)
            ax.set_yticks(range(len(labels)), labels, fontsize="x-small")
            ax.invert_yaxis()
            ax.set_title(title)
            if title == "token requests" and max(values, default=0) > 50 * max(1, min(values, default=1)):
                ax.set_xscale("log")
        fig.suptitle("peers beside tokenpool (same fleet, same emulator)")
        fig.savefig(out / "peers.png", dpi=80)
        plt.close(fig)
        written.append("peers.png")
    return written
