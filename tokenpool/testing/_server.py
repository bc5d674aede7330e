"""``python -m tokenpool.testing``: the emulator on three loopback listeners, served by hypercorn.

Listeners (each on its own port; 0 picks a free one):

* ``http``: plain HTTP/1.1 and h2c (prior knowledge or ``Upgrade``), for fast tests;
* ``https``: TLS with HTTP/2 and HTTP/1.1 offered by ALPN, no client certificate;
* ``mtls``: the same, but a client certificate issued by the test CA is required
  (NTX Pay MX's token endpoint is only reachable here in TLS mode).

When every listener is up, exactly one JSON line describing the emulator is
printed on stdout (and written to ``--port-file``).  SIGTERM or SIGINT shut it
down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import json
import os
import signal
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from .._extras import require_extra
from ._app import EmulatorApp, EmulatorSettings
from ._certs import CertificateFiles, generate_certificates
from ._constants import LISTENERS
from ._providers import default_clients
from ._ready import describe, paths_help
from ._state import ENV_FILE, StateDirectory

__all__ = ["build_parser", "emulator_main"]


def build_parser(prog: str = "python -m tokenpool.testing") -> argparse.ArgumentParser:
    """The command line of ``python -m tokenpool.testing`` (also ``tokenpool emulator``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run tokenpool's loopback emulator of the NTX Pay MX, NTX Pay PIX, Pay-me, Zertiban and Navro "
            "token endpoints (plus a generic RFC 6749 one) with bearer-protected resource endpoints, "
            "fault injection and exact counters. Serves plain HTTP (HTTP/1.1 + h2c), HTTPS (HTTP/2 via ALPN) "
            "and mutual-TLS HTTPS on 127.0.0.1 only. When ready it prints one JSON line on stdout with the "
            "ports, base URLs, CA and client certificate files and credentials; stop it with SIGTERM "
            "or Ctrl-C."
        ),
        epilog=(
            "Paths (the same on every listener; base URL = listener URL + /PROVIDER):\n"
            f"{paths_help()}\n"
            "  A resource call needs a bearer token the emulator issued and that is still valid by\n"
            "  its clock (else 401 invalid_token), plus the provider's headers (x-tenant-id for\n"
            "  Zertiban, X-API-Version for Navro, ALG-API-VERSION for Pay-me).\n\n"
            "Admin API (JSON, on every listener): GET /_admin/ lists it; GET /_admin/stats,\n"
            "POST /_admin/faults, /_admin/clear-faults, /_admin/revoke, /_admin/rotate-secret,\n"
            "/_admin/lifetime, /_admin/lifetime-scale, /_admin/revoke-on-issue, /_admin/reset.\n\n"
            "Across restarts: --state-dir DIR keeps the certificates and credentials, and writes\n"
            f"DIR/{ENV_FILE} for a static config such as examples/tokenpool.toml:\n"
            f"  set -a; . DIR/{ENV_FILE}; set +a; tokenpool check examples/tokenpool.toml"
        ),
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="loopback address to listen on: 127.0.0.1 (default), ::1 or localhost; anything else is refused",
    )
    parser.add_argument(
        "--http-port", type=_port, default=0, metavar="N", help="plain HTTP port (default 0: any free)"
    )
    parser.add_argument(
        "--https-port", type=_port, default=0, metavar="N", help="HTTPS port (default 0: any free)"
    )
    parser.add_argument(
        "--mtls-port", type=_port, default=0, metavar="N", help="mutual-TLS HTTPS port (default 0: any free)"
    )
    parser.add_argument(
        "--lifetime-scale",
        type=_scale,
        default=1.0,
        metavar="X",
        help="multiply every documented token lifetime by X; expires_in = max(1, round(L*X)) (default 1.0)",
    )
    parser.add_argument(
        "--cert-dir",
        metavar="D",
        help="directory for the test CA, server and client certificates, made afresh on every start "
        "(default: a temporary directory removed on exit)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep certificates (DIR/certs) and credentials (DIR/credentials.json) across restarts, and "
        f"write DIR/{ENV_FILE} (the values a static config refers to); created if missing",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop when installed (auto, the default; it serves more requests per CPU second) "
        "or plain asyncio",
    )
    parser.add_argument("--port-file", metavar="F", help="also write the ready JSON to F (removed on exit)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine mode: print only the ready JSON line (no human-readable summary on stderr)",
    )
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="shut down when stdin reaches end-of-file (so the emulator never outlives the process "
        "that started it)",
    )
    return parser


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is between 0 and 65535")
    return value


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("the lifetime scale must be a positive finite number")
    return value


def _loopback(host: str) -> str | None:
    """The address to bind for *host*, or None if it is not loopback."""
    if host.lower() in ("localhost", "localhost."):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return str(address) if address.is_loopback else None


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        # Listening before the server loop starts means a client that connects the
        # moment it reads the ready line is queued by the kernel, never refused.
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def _hypercorn_config(fd: int, certs: CertificateFiles | None, *, mtls: bool = False) -> Any:
    with require_extra("testing", feature="the tokenpool emulator"):  # only the server needs it
        from hypercorn.config import Config

    config = Config()
    # The socket is already bound and listening; hypercorn adopts it by descriptor.
    config.bind = [f"fd://{fd}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    # Longer than any client's idle keep-alive, so the client always closes first
    # and never reuses a connection the server is closing under it.
    config.keep_alive_timeout = 120.0
    config.graceful_timeout = 1.0
    # hypercorn closes a connection after 1,000 requests by default (HTTP/2: a GOAWAY
    # that fails the client's in-flight streams); a load generator must never see that.
    config.keep_alive_max_requests = 2**31
    config.backlog = 1024
    if certs is not None:
        config.certfile = certs.server_cert_file
        config.keyfile = certs.server_key_file
        if mtls:
            config.ca_certs = certs.ca_file
            config.verify_mode = ssl.CERT_REQUIRED
    return config


async def _serve(
    app: EmulatorApp,
    listeners: dict[str, socket.socket],
    certs: CertificateFiles,
    info: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    with require_extra("testing", feature="the tokenpool emulator"):
        from hypercorn.asyncio import serve

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    if args.watch_stdin:
        threading.Thread(target=_watch_stdin, args=(loop, stop), name="emulator-stdin", daemon=True).start()

    ready = asyncio.Event()
    started: set[str] = set()

    def started_one(listener: str) -> None:
        started.add(listener)
        if len(started) == len(listeners):
            ready.set()

    tasks = []
    for listener, sock in listeners.items():
        config = _hypercorn_config(
            sock.detach(), None if listener == "http" else certs, mtls=listener == "mtls"
        )
        asgi = app.for_listener(listener, on_startup=functools.partial(started_one, listener))
        # hypercorn types the app with its own TypedDicts; ours is a plain ASGI 3 callable.
        tasks.append(
            asyncio.create_task(serve(cast(Any, asgi), config, shutdown_trigger=stop.wait, mode="asgi"))
        )
    ready_wait = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({ready_wait, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    if ready_wait not in done:  # a listener failed to start
        ready_wait.cancel()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        raise RuntimeError("the emulator's server stopped before it was ready")
    _announce(info, args)
    try:
        await asyncio.gather(*tasks)
    finally:
        if args.port_file:
            with contextlib.suppress(OSError):
                os.unlink(args.port_file)


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # os.read on the descriptor, not sys.stdin: a daemon thread blocked inside a
    # buffered reader holds its lock and makes interpreter shutdown abort.
    with contextlib.suppress(OSError, ValueError):
        fd = sys.stdin.fileno()
        while os.read(fd, 65536):
            pass
    with contextlib.suppress(RuntimeError):  # the loop already closed: we are exiting anyway
        loop.call_soon_threadsafe(stop.set)


def _announce(info: dict[str, Any], args: argparse.Namespace) -> None:
    line = json.dumps(info, separators=(",", ":"))
    if args.port_file:
        target = Path(args.port_file)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_text(line + "\n", encoding="utf-8")
        os.replace(partial, target)  # readers never see a half-written file
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if not args.json:
        listeners = info["listeners"]
        print(
            "tokenpool emulator ready (Ctrl-C to stop)\n"
            f"  http  {listeners['http']}   (HTTP/1.1 + h2c)\n"
            f"  https {listeners['https']}  (HTTP/2 + HTTP/1.1)\n"
            f"  mtls  {listeners['mtls']}  (client certificate required)\n"
            f"  CA    {info['ca_file']}\n"
            f"  admin {info['admin_url']}/",
            file=sys.stderr,
            flush=True,
        )


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice == "asyncio" or sys.platform == "win32":
        return None
    try:
        import uvloop  # optional ("uvloop" extra)
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("tokenpool emulator: --loop uvloop needs the uvloop package") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def emulator_main(argv: Sequence[str] | None = None, *, prog: str = "python -m tokenpool.testing") -> int:
    """Run the emulator until SIGTERM/SIGINT; returns the exit status.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        prog: The program name shown in ``--help`` and errors.
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        with require_extra("testing", feature=prog):
            import hypercorn  # noqa: F401 - the server and the certificate maker, checked up front
            import trustme  # noqa: F401
    except ModuleNotFoundError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    host = _loopback(args.host)
    if host is None:
        parser.error(f"--host {args.host!r} is not a loopback address; the emulator only listens on loopback")
    if args.state_dir is not None and args.cert_dir is not None:
        parser.error(
            "--state-dir keeps its certificates in DIR/certs: give --state-dir or --cert-dir, not both"
        )
    with contextlib.ExitStack() as stack:
        state: StateDirectory | None = None
        clients = None
        if args.state_dir is not None:
            try:
                state = StateDirectory(args.state_dir)
                certs = state.certificates()
                clients = state.clients(default_clients())
            except (ValueError, OSError) as exc:
                parser.error(f"--state-dir: {exc}")
        else:
            cert_dir = args.cert_dir
            if cert_dir is None:
                cert_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="tokenpool-emulator-"))
            else:
                try:
                    os.makedirs(cert_dir, exist_ok=True)
                except OSError as exc:
                    parser.error(f"--cert-dir {cert_dir!r}: {exc.strerror or exc}")
            certs = generate_certificates(cert_dir)
        listeners: dict[str, socket.socket] = {}
        try:
            for listener, port in zip(
                LISTENERS, (args.http_port, args.https_port, args.mtls_port), strict=True
            ):
                listeners[listener] = _listen(host, port)
        except OSError as exc:
            for sock in listeners.values():
                sock.close()
            print(f"tokenpool emulator: cannot listen on {host}: {exc}", file=sys.stderr)
            return 1
        ports = {listener: sock.getsockname()[1] for listener, sock in listeners.items()}
        settings = EmulatorSettings(
            lifetime_scale=args.lifetime_scale,
            clients=clients,
            trusted_ca_pem=Path(certs.ca_file).read_bytes(),
            revoked_cert_pems=(Path(certs.revoked_client_cert_file).read_bytes(),),
        )
        app = EmulatorApp(settings)
        info = describe(app, host, ports, certs, lifetime_scale=args.lifetime_scale)
        if state is not None:
            info["state_dir"] = str(state.path)
            info["env_file"] = str(state.write_env(info))
        try:
            with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
                runner.run(_serve(app, listeners, certs, info, args))
        except KeyboardInterrupt:  # a second Ctrl-C during shutdown
            return 130
        finally:
            for sock in listeners.values():
                sock.close()  # no-op once hypercorn adopted the descriptor
    return 0
