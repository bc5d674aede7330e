"""A long-running asyncio payout worker that owns one token pool for its whole life.

By default it starts the bundled loopback provider emulator (needs
``pip install 'tokenpool[testing]'``) with compressed token lifetimes, so you
can watch tokens being renewed while payouts flow::

    python examples/payout_worker.py --lifetime-scale 0.005 --concurrency 8

Against a real RFC 6749 client-credentials provider instead::

    PAYOUT_CLIENT_SECRET=... python examples/payout_worker.py \\
        --token-url https://auth.example.com/oauth/token --client-id payouts \\
        --api-url https://api.example.com --path /v1/payouts

What it shows:

- one :class:`tokenpool.TokenPool` per process, entered once at startup and
  closed at shutdown; every payout task shares it through one
  ``httpx.AsyncClient`` whose ``auth`` is the pool's (so no request waits for
  a token once the pool is warm, and a 401 is retried once with a new token);
- graceful shutdown: the first SIGTERM or SIGINT stops new payouts, lets the
  ones in flight finish, then closes the client and the pool; a second one
  cancels whatever is still running;
- a final summary: payouts sent, answers by status, 401s seen, token requests.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import ssl
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import httpx
import structlog

from tokenpool import Secret, TokenPool, TokenPoolError
from tokenpool.providers import ClientCredentials

PROVIDER = "payouts"

log = structlog.get_logger("payout_worker")


@dataclass
class Tally:
    """What the worker did, for the summary."""

    payouts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    unauthorized: int = 0  # every 401 answer seen, including the first of a retried pair
    failed: int = 0  # no answer at all (transport error, no token)


@dataclass(frozen=True)
class Target:
    """Where the worker gets tokens and sends payouts."""

    token_url: str
    client_id: str
    client_secret: str
    api_url: str
    path: str
    ca_file: str | None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A long-running asyncio payout worker sharing one tokenpool between its tasks. "
        "Without --token-url it starts the loopback provider emulator and talks to it.",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="payout tasks running at once (default 8)")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.05,
        help="pause of each task between payouts, seconds (default 0.05)",
    )
    parser.add_argument(
        "--lifetime-scale",
        type=float,
        default=0.01,
        help="emulator only: multiply the documented token lifetimes by this (default 0.01: 600 s → 6 s)",
    )
    real = parser.add_argument_group("a real provider (the secret comes from $PAYOUT_CLIENT_SECRET)")
    real.add_argument("--token-url", help="RFC 6749 token endpoint")
    real.add_argument("--client-id", help="client identifier")
    real.add_argument("--api-url", help="base URL of the payouts API")
    real.add_argument("--path", default="/api/resource", help="payout endpoint path (default /api/resource)")
    real.add_argument("--ca-file", help="CA bundle to trust instead of certifi's")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of console output")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.token_url is not None:
        missing = [
            flag
            for flag, value in (("--client-id", args.client_id), ("--api-url", args.api_url))
            if not value
        ]
        if missing or not os.environ.get("PAYOUT_CLIENT_SECRET"):
            parser.error(
                f"with --token-url, also give {', '.join(missing) or ''} and set $PAYOUT_CLIENT_SECRET"
            )
    return args


def configure_logging(json_lines: bool) -> None:
    """An application configures structlog; the library never does.

    Colours only on a terminal: redirected to a file or a pipe, the console lines stay plain text.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=_isatty(sys.stdout))
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
    )


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


async def pay(
    worker: int, client: httpx.AsyncClient, target: Target, stop: anyio.Event, interval: float, tally: Tally
) -> None:
    """One payout task: send payouts until told to stop, never abandoning one mid-flight."""
    for number in itertools.count(1):
        if stop.is_set():
            return
        tally.payouts += 1
        try:
            response = await client.post(
                target.path, json={"worker": worker, "payout": number, "amount": "1.00"}
            )
        except (httpx.HTTPError, TokenPoolError) as exc:
            tally.failed += 1
            log.warning("payout.failed", worker=worker, error_type=type(exc).__name__, error=str(exc))
        else:
            tally.statuses[response.status_code] += 1
        with anyio.move_on_after(interval):
            await stop.wait()


async def watch_signals(
    stop: anyio.Event, force: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """First SIGTERM/SIGINT: stop taking payouts.  Second: cancel what is left."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
        task_status.started()
        async for signum in received:
            if not stop.is_set():
                log.info("worker.stopping", signal=signal.Signals(signum).name)
                stop.set()
            else:
                log.warning("worker.cancelling", signal=signal.Signals(signum).name)
                force.cancel()
                return


async def run(args: argparse.Namespace) -> int:
    async with contextlib.AsyncExitStack() as stack:
        emulator: Any = None
        if args.token_url is None:
            try:
                from tokenpool.testing import EmulatorProcess
            except ImportError:
                hint = "pip install 'tokenpool[testing]', or pass --token-url"
                print(f"the emulator is not installed: {hint}", file=sys.stderr)  # a missing extra, not a bug
                return 2
            emulator = await stack.enter_async_context(EmulatorProcess(lifetime_scale=args.lifetime_scale))
            client_id, client_secret = emulator.credentials("generic")
            target = Target(
                token_url=emulator.token_url("generic"),
                client_id=client_id,
                client_secret=client_secret,
                api_url=emulator.url("generic"),
                path=args.path,
                ca_file=emulator.ca_file,
            )
            log.info("emulator.started", api_url=target.api_url, lifetime_scale=args.lifetime_scale)
        else:
            target = Target(
                token_url=args.token_url,
                client_id=args.client_id,
                client_secret=os.environ["PAYOUT_CLIENT_SECRET"],
                api_url=args.api_url,
                path=args.path,
                ca_file=args.ca_file,
            )

        provider = ClientCredentials(
            token_url=httpx.URL(target.token_url),
            client_id=target.client_id,
            client_secret=Secret(target.client_secret),
        )
        # One pool for the process's lifetime: it warms up here and renews in the background.
        pool = await stack.enter_async_context(TokenPool({PROVIDER: provider}, ca_file=target.ca_file))
        tally = Tally()

        async def count_401(response: httpx.Response) -> None:
            if response.status_code == 401:
                tally.unauthorized += 1

        verify = ssl.create_default_context(cafile=target.ca_file) if target.ca_file else True
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=target.api_url,
                auth=pool.auth(PROVIDER),
                verify=verify,
                # As many connections as tasks: no request queues inside httpcore, whose pool
                # rescans every queued request on every event.
                limits=httpx.Limits(
                    max_connections=args.concurrency, max_keepalive_connections=args.concurrency
                ),
                timeout=httpx.Timeout(10.0),
                event_hooks={"response": [count_401]},
            )
        )

        stop = anyio.Event()
        async with anyio.create_task_group() as supervisor:
            await supervisor.start(watch_signals, stop, supervisor.cancel_scope)
            log.info("worker.ready", pid=os.getpid(), concurrency=args.concurrency)
            async with anyio.create_task_group() as payouts:
                for worker in range(args.concurrency):
                    payouts.start_soon(pay, worker, client, target, stop, args.interval, tally)
            supervisor.cancel_scope.cancel()  # every payout task finished: stop watching signals

        server_401s = None
        if emulator is not None:
            try:
                counters = emulator.stats(events=False)["providers"]["generic"]
            except Exception as exc:  # e.g. a terminal's Ctrl-C reached the emulator too
                log.warning("emulator.stats_unavailable", error_type=type(exc).__name__)
            else:
                server_401s = sum(counters["resource_401"].values())
        stats = pool.statistics()

    log.info(
        "worker.stopped",
        payouts=tally.payouts,
        statuses={str(code): count for code, count in sorted(tally.statuses.items())},
        unauthorized=tally.unauthorized,
        failed=tally.failed,
        server_401s=server_401s,
        token_requests=stats.token_requests,
        token_hits=stats.hits,
        token_misses=stats.misses,
    )
    return 0 if tally.failed == 0 and tally.unauthorized == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_json)
    return anyio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
