"""The ``tokenpool`` command: ``demo``, ``check``, ``emulator``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import anyio

from ._argtypes import positive_number
from ._exceptions import ConfigurationError, TokenPoolError, TokenRequestError

__all__ = ["main"]

DESCRIPTION = """\
tokenpool keeps a valid OAuth2 client-credentials token ready for every worker
process and every payment provider.

commands:
  demo       run a small fleet through a revocation and an outage on the loopback emulator
  check      fetch one token per provider in a TOML config and print a table
  emulator   run the loopback provider emulator (for your own tests)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenpool", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"tokenpool {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    from .loadtest import TOKEN_WAIT_BOUND, add_demo_arguments

    demo = commands.add_parser(
        "demo",
        help="run a fleet of worker processes against the loopback emulator",
        description=(
            "Start the loopback emulator of all five providers and run WORKERS processes x TASKS "
            "concurrent tasks per provider calling each provider's protected API through "
            "pool.auth(), with short token lifetimes. Mid-run every token is revoked, then every "
            "token endpoint answers 503 for a moment (--calm: no faults). Exits 0 only if no call "
            "ended with 401 or failed, every provider was called and every token renewed in every "
            f"worker, and no call waited more than {TOKEN_WAIT_BOUND * 1000:.0f} ms for its token "
            "after warm-up."
        ),
    )
    add_demo_arguments(demo)

    check = commands.add_parser(
        "check",
        help="fetch one token per provider in CONFIG and print a table",
        description=(
            "Read a TOML config (secrets come from environment variables), fetch one token from "
            "every provider concurrently and print provider, status, lifetime, latency and the "
            "error with a hint. Exits 1 if any provider failed."
        ),
    )
    check.add_argument("config", help="path to a TOML config file")
    check.add_argument(
        "--timeout",
        type=positive_number,
        default=20.0,
        metavar="SECONDS",
        help="seconds to wait for each provider, a positive finite number (default 20)",
    )

    commands.add_parser(
        "emulator",
        help="run the loopback provider emulator (options: tokenpool emulator --help)",
        add_help=False,
    )
    return parser


def _configure_logging() -> None:
    """The command is an application, so it decides where tokenpool's events go (the library never does).

    By default nowhere: the commands print what happened themselves (``check``'s
    table says what a ``token.refresh.failed`` line would).  ``TOKENPOOL_LOG_LEVEL``
    (``debug``, ``info``, ``warning``, ``error``) sends events at that level and
    above to standard error.
    """
    import logging
    import os

    tokenpool_logger = logging.getLogger("tokenpool")
    name = os.environ.get("TOKENPOOL_LOG_LEVEL", "").strip().upper()
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        if name:
            print(
                f"tokenpool: ignoring TOKENPOOL_LOG_LEVEL={name.lower()!r} (debug, info, warning or error)",
                file=sys.stderr,
            )
        tokenpool_logger.addHandler(logging.NullHandler())  # and not Python's last-resort handler
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    tokenpool_logger.addHandler(handler)
    tokenpool_logger.setLevel(level)


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:  # noqa: RET503 - parser.error() exits
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["emulator"]:
        try:
            from .testing import emulator_main
        except ImportError as exc:
            print(
                f"tokenpool emulator needs the testing extra: pip install 'tokenpool[testing]' ({exc})",
                file=sys.stderr,
            )
            return 2
        return emulator_main(args_list[1:], prog="tokenpool emulator")
    parser = _parser()
    args = parser.parse_args(args_list)
    _configure_logging()
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "check":
            return anyio.run(_check, args.config, args.timeout, sys.stdout)
        if args.command == "demo":
            from .loadtest import run_demo

            return run_demo(args)
    except ConfigurationError as exc:
        print(f"tokenpool: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokenpool: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")  # exits


async def _check(path: str, timeout: float, out: TextIO) -> int:
    from ._config import load_config
    from ._pool import TokenPool

    config = load_config(path)
    options = dict(config.pool_options)
    options["warm_up"] = "lazy"
    rows: dict[str, tuple[str, str, str, str]] = {}

    async def one(pool: TokenPool, name: str) -> None:
        started = time.perf_counter()
        try:
            token = await pool.token(name, timeout=timeout)
        except TokenRequestError as exc:
            status = f"HTTP {exc.status_code}" if exc.status_code else type(exc).__name__
            detail = exc.message + (f" (error={exc.error_code})" if exc.error_code else "")
            if exc.hint:
                detail += f"; hint: {exc.hint}"
            rows[name] = (f"FAIL {status}", "-", _ms(started), detail)
        except TokenPoolError as exc:
            rows[name] = ("FAIL", "-", _ms(started), str(exc))
        else:
            rows[name] = ("ok", f"{token.expires_in:g} s", _ms(started), "")

    async with TokenPool(config.providers, metrics=False, **options) as pool, anyio.create_task_group() as tg:
        for name in config.providers:
            tg.start_soon(one, pool, name)
    header = ("provider", "status", "lifetime", "latency", "error")
    table = [header, *[(name, *rows[name]) for name in config.providers]]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4],
            file=out,
        )
    healthy = all(row[0] == "ok" for row in rows.values())
    store = options.get("store")
    if store is not None:
        health = await store.health()
        if health["ok"]:
            skew = health["clock_skew_seconds"] * 1000
            print(
                f"store: {health['url']} ok, ping {health['ping_seconds'] * 1000:.1f} ms, "
                f"server clock {skew:+.0f} ms from this host's, "
                f"{'tokens encrypted' if health['encrypted'] else 'tokens NOT encrypted'}",
                file=out,
            )
        else:
            print(
                f"store: {health['url']} FAIL ({health['error']}); the pools would fall back to "
                "per-process token requests",
                file=out,
            )
            healthy = False
    return 0 if healthy else 1


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.0f} ms"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
