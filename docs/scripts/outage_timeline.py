"""Draw the refresh timeline of one cell through an outage of its token endpoint, from a real run.

A real :class:`tokenpool.TokenPool` against a real
:class:`tokenpool.testing.EmulatorProcess` (loopback only) whose generic
provider issues short tokens.  While callers call the provider's API through
``pool.auth()``, the token endpoint answers 503 for a while, covering the
moment the renewal is due, and then recovers by itself.  The script records

- every token request from the pool's own log events (a recording
  ``logger=``): when it started, whether it succeeded, the status;
- the cell every 50 ms from ``pool.statistics()``: the current token's
  remaining life and the failures in a row;
- every API call: when, its status, its latency;

and writes ``outage-timeline.png`` (matplotlib) and ``outage-timeline.json``
(the settings, the figures, the attempts and the samples) into ``--out-dir``::

    python docs/scripts/outage_timeline.py                 # ~45 s: 20 s tokens, docs/img/
    python docs/scripts/outage_timeline.py --quick --out-dir /tmp/plot   # ~10 s: 4 s tokens

It exits 1 if any API call did not answer 200, if a caller waited for a token
after the warm-up, or if no token request failed during the outage (then the
picture would not show what it claims).  Needs the
``testing`` and ``bench`` extras (the emulator, matplotlib).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx

import tokenpool
from tokenpool import TokenPool, TokenPoolError
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "img"
CALLERS = 4
CALL_INTERVAL = 0.05
SAMPLE_INTERVAL = 0.05


@dataclass
class Recording:
    """Everything the run saw, in seconds since the pool was opened."""

    t0: float = field(default_factory=time.monotonic)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: (t, remaining life or None without a usable token, failures in a row, renewal due at or None)
    samples: list[tuple[float, float | None, int, float | None]] = field(default_factory=list)
    calls: list[tuple[float, int, float]] = field(default_factory=list)  # (t, status or 0, latency s)

    def now(self) -> float:
        return time.monotonic() - self.t0


class RecordingLogger:
    """A structlog-shaped logger for ``TokenPool(logger=...)``: token requests and their outcomes."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self._open: dict[str, Any] | None = None

    def _event(self, event: str, **fields: Any) -> None:
        now = self.recording.now()
        if event == "token.refresh.start":
            self._open = {"start": round(now, 3), "attempt": fields.get("attempt")}
            self.recording.attempts.append(self._open)
        elif event.startswith("token.refresh.") and self._open is not None:
            outcome = event.removeprefix("token.refresh.")
            self._open.update(
                end=round(now, 3),
                outcome="success" if outcome == "success" else "failure",
                status=fields.get("status"),
                retry_in=fields.get("retry_in"),
            )
            self._open = None

    debug = info = warning = error = critical = exception = _event


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="4 s tokens, ~8 s of run (for the tests)")
    parser.add_argument(
        "--out-dir", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    args.lifetime = 4 if args.quick else 20
    return args


async def run(lifetime: int) -> tuple[Recording, dict[str, Any]]:
    """One real run: the pool, the callers, the outage; returns what was recorded and the settings."""
    # The outage starts before the renewal is due (0.8·L minus up to 0.05·L of jitter) and
    # ends before the token stops being served (L minus the margin, 0.05·L here).
    outage_start, outage_end, duration = 0.7 * lifetime, 0.925 * lifetime, 1.8 * lifetime
    recording = Recording()
    async with EmulatorProcess() as emulator:
        expires_in = await anyio.to_thread.run_sync(
            lambda: emulator.set_lifetime("generic", expires_in=lifetime)
        )
        client_id, client_secret = emulator.credentials("generic")
        provider = ClientCredentials(
            token_url=emulator.token_url("generic"), client_id=client_id, client_secret=client_secret
        )
        recording.t0 = time.monotonic()
        async with (
            TokenPool(
                {"acme": provider}, ca_file=emulator.ca_file, logger=RecordingLogger(recording), metrics=False
            ) as pool,
            httpx.AsyncClient(
                base_url=emulator.url("generic"), auth=pool.auth("acme"), verify=emulator.ssl_context()
            ) as api,
        ):
            stop = anyio.Event()

            async def caller() -> None:
                while not stop.is_set():
                    started = recording.now()
                    try:
                        status = (await api.get("/api/resource")).status_code
                    except (httpx.HTTPError, TokenPoolError):
                        status = 0
                    recording.calls.append((round(started, 3), status, recording.now() - started))
                    await anyio.sleep(CALL_INTERVAL)

            async def sampler() -> None:
                while not stop.is_set():
                    cell = pool.statistics().cells["acme"]
                    now = recording.now()
                    remaining = cell.seconds_until_expiry if cell.has_token else None
                    due = (
                        None
                        if cell.seconds_until_refresh is None
                        else round(now + cell.seconds_until_refresh, 3)
                    )
                    recording.samples.append((round(now, 3), remaining, cell.consecutive_failures, due))
                    await anyio.sleep(SAMPLE_INTERVAL)

            async def outage() -> float:
                await anyio.sleep(max(0.0, outage_start - recording.now()))
                # The fault lapses by itself on the emulator's clock: no second call needed.
                await anyio.to_thread.run_sync(
                    lambda: emulator.fault("generic", status=503, duration=outage_end - outage_start)
                )
                return recording.now()

            async with anyio.create_task_group() as tasks:
                for _ in range(CALLERS):
                    tasks.start_soon(caller)
                tasks.start_soon(sampler)
                began: list[float] = []

                async def outage_task() -> None:
                    began.append(await outage())

                tasks.start_soon(outage_task)
                await anyio.sleep(duration)
                stop.set()
            # The warm-up is the cell's first miss; any other means a caller waited for a token.
            misses = pool.statistics().cells["acme"].misses
        counters = await anyio.to_thread.run_sync(
            lambda: emulator.stats(events=False)["providers"]["generic"]
        )
    settings = {
        "lifetime": expires_in,
        "outage_start": round(began[0], 3),
        "outage_end": round(began[0] + outage_end - outage_start, 3),
        "duration": duration,
        "callers": CALLERS,
        "misses": misses,
        "call_interval": CALL_INTERVAL,
        "emulator": {
            "token_requests": counters["token_requests"],
            "token_failures": counters["token_failures"],
            "resource_ok": counters["resource_ok"],
            "resource_401": counters["resource_401"],
        },
    }
    return recording, settings


def figures(recording: Recording, settings: dict[str, Any]) -> dict[str, Any]:
    start, end = settings["outage_start"], settings["outage_end"]
    during = [a for a in recording.attempts if start <= a["start"] <= end]
    latencies = sorted(latency for _, _, latency in recording.calls)
    return {
        "token_requests": len(recording.attempts),
        "token_requests_failed": sum(a.get("outcome") == "failure" for a in recording.attempts),
        "token_requests_during_outage": len(during),
        "token_requests_failed_during_outage": sum(a.get("outcome") == "failure" for a in during),
        "callers_waited_after_warm_up": settings["misses"] - 1,
        "calls": len(recording.calls),
        "calls_not_200": sum(status != 200 for _, status, _ in recording.calls),
        "call_latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "call_latency_max_ms": round(1000 * latencies[-1], 2),
        "min_remaining_life": round(min(s[1] for s in recording.samples if s[1] is not None), 3),
    }


def draw(recording: Recording, settings: dict[str, Any], figs: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lifetime = settings["lifetime"]
    fig, (life, calls) = plt.subplots(
        2, 1, figsize=(12, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]}, layout="constrained"
    )
    for axis in (life, calls):
        axis.axvspan(settings["outage_start"], settings["outage_end"], color="#f4a6a6", alpha=0.35, lw=0)
        axis.grid(alpha=0.3)

    times = [s[0] for s in recording.samples if s[1] is not None]
    remaining = [s[1] for s in recording.samples if s[1] is not None]
    life.plot(times, remaining, color="#1f5fa8", lw=1.6, label="remaining life of the served token")
    dues = sorted({s[3] for s in recording.samples if s[3] is not None and s[3] <= times[-1]})
    for number, due in enumerate(dues):
        label = "renewal due (~0.8·L after the send)" if number == 0 else None
        life.axvline(due, color="#1f5fa8", ls="--", lw=0.8, alpha=0.6, label=label)
    life.axhline(0.05 * lifetime, color="#777", ls=":", lw=1, label="margin: handed out only above this")
    top = lifetime * 1.08
    ok = [a["start"] for a in recording.attempts if a.get("outcome") == "success"]
    bad = [a["start"] for a in recording.attempts if a.get("outcome") == "failure"]
    life.scatter(
        ok, [top] * len(ok), marker="o", color="#2a9d2a", s=40, zorder=3, label="token request: success"
    )
    life.scatter(
        bad, [top] * len(bad), marker="x", color="#c62828", s=40, zorder=3, label="token request: 503"
    )
    life.set_ylim(0, lifetime * 1.18)
    life.set_ylabel("seconds")
    life.text(
        (settings["outage_start"] + settings["outage_end"]) / 2,
        lifetime * 0.55,
        "token endpoint\nanswers 503",
        ha="center",
        va="center",
        color="#9b1c1c",
        fontsize=9,
    )
    life.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    life.set_title(
        f"One cell through a token-endpoint outage ({lifetime} s tokens): "
        f"{figs['token_requests_failed_during_outage']} token requests failed, "
        f"{figs['calls_not_200']} of {figs['calls']} API calls did not answer 200",
        fontsize=10,
    )

    call_times = [t for t, _, _ in recording.calls]
    call_ms = [1000 * latency for _, _, latency in recording.calls]
    colours = ["#2a9d2a" if status == 200 else "#c62828" for _, status, _ in recording.calls]
    calls.scatter(call_times, call_ms, c=colours, s=6, lw=0, label="API call through\npool.auth(): 200")
    calls.set_ylim(bottom=0)
    calls.set_ylabel("call latency, ms")
    calls.set_xlabel("seconds since the pool opened")
    calls.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The recording logger gets the pool's events; nothing should print them twice.
    logging.getLogger("tokenpool").addHandler(logging.NullHandler())
    started = time.monotonic()
    recording, settings = anyio.run(run, args.lifetime)
    figs = figures(recording, settings)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png, data = args.out_dir / "outage-timeline.png", args.out_dir / "outage-timeline.json"
    draw(recording, settings, figs, png)
    document = {
        "produced": {
            "command": "python docs/scripts/outage_timeline.py" + (" --quick" if args.quick else ""),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
            "tokenpool": tokenpool.__version__,
            "seconds": round(time.monotonic() - started, 1),
        },
        "settings": settings,
        "figures": figs,
        "attempts": recording.attempts,
        # Every fourth sample keeps the file small and the curve's shape.
        "samples": [list(sample) for sample in recording.samples[::4]],
    }
    data.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"png": str(png), "json": str(data), **figs}))
    healthy = figs["calls_not_200"] == 0 and figs["token_requests_failed_during_outage"] > 0
    healthy = healthy and figs["callers_waited_after_warm_up"] == 0
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
