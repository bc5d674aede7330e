"""Serve tokenpool's Prometheus series on ``/metrics``.

A :class:`~tokenpool.TokenPool` registers its series (``tokenpool_*``, see
``dashboards/`` for a Grafana dashboard and alert rules) in prometheus-client's
global registry, or in the ``CollectorRegistry`` passed as ``metrics=``.  This
module exposes them, and anything else in that registry:

- :func:`start_http_server` runs a small threaded HTTP server (default
  ``127.0.0.1``) answering ``GET /metrics``;
- :func:`make_asgi_app` returns an ASGI app to mount in your web application
  (Starlette ``Mount("/metrics", make_asgi_app())``, or any ASGI server).

Multiprocess mode (Celery prefork, gunicorn): prometheus-client keeps each
process's samples in files when the environment variable
``PROMETHEUS_MULTIPROC_DIR`` names a directory *before* the first
``import prometheus_client`` in every process.  tokenpool never sets that
variable; you do, in the environment that starts the workers::

    rm -rf /run/payouts/metrics && mkdir -p /run/payouts/metrics
    PROMETHEUS_MULTIPROC_DIR=/run/payouts/metrics celery -A payouts worker --concurrency 8

When it is set and no ``registry`` is passed, every scrape builds a fresh
``CollectorRegistry`` with a ``MultiProcessCollector`` over that directory, so
one endpoint (started in the parent process, or in any one worker) reports
the sum over all processes.  Tell prometheus-client when a child exits so its
gauges stop counting (Celery)::

    from celery.signals import worker_process_shutdown

    @worker_process_shutdown.connect
    def _forget_metrics(pid: int, exitcode: int, **kwargs: object) -> None:
        tokenpool.metrics.mark_process_dead(pid)

Gauges use the ``live*`` multiprocess modes (``livemin`` for token expiry,
``livemax`` for backoff and consecutive failures, ``livesum`` for waiting
callers), so a dead process's values disappear once it is marked dead.
"""

from __future__ import annotations

import gzip
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

import anyio.to_thread
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.exposition import choose_encoder, gzip_accepted

from ._exceptions import ConfigurationError

__all__ = ["ASGIApp", "MetricsServer", "make_asgi_app", "mark_process_dead", "start_http_server"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: The ASGI 3 application signature.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_Headers = list[tuple[str, str]]


def _multiprocess_dir() -> str | None:
    """The directory prometheus-client's multiprocess mode writes to, if the user enabled it.

    Read on every call (never cached, never written): the user's environment
    is the only source of truth.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _registry_for_scrape(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is not None:
        return registry
    path = _multiprocess_dir()
    if path is None:
        return REGISTRY
    fresh = CollectorRegistry()
    # path= is passed explicitly: without it MultiProcessCollector may copy the
    # deprecated lower-case variable into PROMETHEUS_MULTIPROC_DIR, and this
    # library does not write the user's environment.
    _multiprocess.MultiProcessCollector(fresh, path=path)  # type: ignore[no-untyped-call]  # untyped upstream
    return fresh


def _check_multiprocess_dir(registry: CollectorRegistry | None) -> None:
    path = _multiprocess_dir()
    if registry is None and path is not None and not os.path.isdir(path):
        raise ConfigurationError(
            f"PROMETHEUS_MULTIPROC_DIR is set to {path!r}, which is not a directory; "
            "create it before starting the workers"
        )


def _render(
    registry: CollectorRegistry | None, accept: str, accept_encoding: str, query: str
) -> tuple[int, _Headers, bytes]:
    """One scrape: collect, encode as the client asked, compress if it accepts gzip."""
    target: Any = _registry_for_scrape(registry)
    names = parse_qs(query).get("name[]")
    if names:
        target = target.restricted_registry(names)
    encoder, content_type = choose_encoder(accept)
    body = encoder(target)
    headers = [("Content-Type", content_type)]
    if gzip_accepted(accept_encoding):
        body = gzip.compress(body)
        headers.append(("Content-Encoding", "gzip"))
    return 200, headers, body


def _error(status: int, text: str, **extra: str) -> tuple[int, _Headers, bytes]:
    headers = [("Content-Type", "text/plain; charset=utf-8"), *extra.items()]
    return status, headers, text.encode()


def _respond(
    registry: CollectorRegistry | None, method: str, accept: str, accept_encoding: str, query: str
) -> tuple[int, _Headers, bytes]:
    if method not in ("GET", "HEAD"):
        return _error(405, "use GET\n", Allow="GET, HEAD")
    try:
        status, headers, body = _render(registry, accept, accept_encoding, query)
    except ValueError:
        # MultiProcessCollector: the directory vanished or holds a corrupt file.
        return _error(500, "cannot read the metrics of the worker processes\n")
    return status, headers, body


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


def _wsgi_app(
    registry: CollectorRegistry | None,
) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") not in ("/metrics", "/metrics/"):
            status, headers, body = _error(404, "tokenpool serves metrics at /metrics\n")
        else:
            status, headers, body = _respond(
                registry,
                environ.get("REQUEST_METHOD", "GET"),
                environ.get("HTTP_ACCEPT", ""),
                environ.get("HTTP_ACCEPT_ENCODING", ""),
                environ.get("QUERY_STRING", ""),
            )
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {_REASONS[status]}", headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    return app


class _QuietHandler(WSGIRequestHandler):
    """Scrapes every few seconds would flood stderr with access-log lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scraper cannot hold up the others."""

    daemon_threads = True


class MetricsServer:
    """A running ``/metrics`` endpoint, as returned by :func:`start_http_server`.

    Use it as a context manager, or call :meth:`close` to stop it.

    Attributes:
        host: The address the server listens on.
        port: The port it listens on (the one the OS chose if you passed 0).
    """

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        address = httpd.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        """The full URL of the metrics endpoint, e.g. ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port.  Idempotent."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}>"


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``GET /metrics`` from a daemon thread.

    Args:
        port: TCP port; 0 lets the OS choose (read it back from
            :attr:`MetricsServer.port`).
        addr: Address to bind.  Loopback by default: token metrics name your
            providers, so exposing them beyond the host is a decision to make
            on purpose (``"0.0.0.0"`` or ``"::"``).
        registry: The registry to serve.  ``None`` (default) serves
            prometheus-client's global registry, or, when the user has set
            ``PROMETHEUS_MULTIPROC_DIR``, the merged samples of every process
            (a fresh ``MultiProcessCollector`` per scrape).

    Returns:
        The running server; call :meth:`MetricsServer.close` to stop it.

    Raises:
        ConfigurationError: ``PROMETHEUS_MULTIPROC_DIR`` is set but is not a directory.
        OSError: The address cannot be bound.
    """
    _check_multiprocess_dir(registry)
    family, _, _, _, sockaddr = socket.getaddrinfo(
        addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class _Server(_ThreadingServer):
        address_family = family

    httpd = make_server(str(sockaddr[0]), port, _wsgi_app(registry), _Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="tokenpool-metrics-server")
    thread.start()
    return MetricsServer(httpd, thread)


def make_asgi_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app that answers ``GET`` with the metrics, at whatever path it is mounted.

    Collection runs in a worker thread (``anyio.to_thread``) so that reading
    many processes' files in multiprocess mode never stalls the event loop
    that serves your tokens.  Works under asyncio and trio servers, and
    answers ASGI ``lifespan`` events so it can also be served on its own.

    Args:
        registry: As for :func:`start_http_server`.

    Raises:
        ConfigurationError: ``PROMETHEUS_MULTIPROC_DIR`` is set but is not a directory.
    """
    _check_multiprocess_dir(registry)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            # A websocket: refuse it politely.
            await receive()
            await send({"type": "websocket.close", "code": 1003})
            return
        request_headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            if name in ("accept", "accept-encoding"):
                value = raw_value.decode("latin-1")
                request_headers[name] = (
                    f"{request_headers[name]},{value}" if name in request_headers else value
                )
        status, headers, body = await anyio.to_thread.run_sync(
            _respond,
            registry,
            scope.get("method", "GET"),
            request_headers.get("accept", ""),
            request_headers.get("accept-encoding", ""),
            scope.get("query_string", b"").decode("latin-1"),
        )
        headers.append(("Content-Length", str(len(body))))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    return app


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker process's live gauges in multiprocess mode.

    Call it from the parent when a child exits (Celery:
    ``worker_process_shutdown``; gunicorn: ``child_exit``).  Counters and
    histograms of the dead process keep counting towards the totals, as
    Prometheus expects of counters.  Does nothing unless
    ``PROMETHEUS_MULTIPROC_DIR`` is set.

    Args:
        pid: The process id of the child that exited.
    """
    path = _multiprocess_dir()
    if path is not None:
        _multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # untyped upstream
