"""A loopback TCP proxy in front of Redis that a scenario can slow down or stall: ``RedisProxy``.

The fleet-faults scenario points every worker's store at this proxy instead
of the redis-server, then makes Redis *slow* without touching the server:

- :meth:`RedisProxy.set_latency`: every chunk read from either side waits
  that long before it is passed on (so a command's answer comes at least
  twice that late: once for the request, once for the reply);
- :meth:`RedisProxy.stall`: nothing is passed on at all (connections are
  still accepted and kept open, as with a server that hangs);
- :meth:`RedisProxy.resume`: back to a plain pass-through; data held during
  a stall goes on to connections that are still open.

It runs an asyncio loop in one daemon thread of the harness's (synchronous)
process; the controls are thread-safe.  It listens on 127.0.0.1 only and
connects to a loopback target only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["RedisProxy", "RedisProxyError"]

#: Longest wait for the listener to be up, or for the thread to end.
START_TIMEOUT = 5.0
CHUNK = 65536


class RedisProxyError(RuntimeError):
    """The proxy did not start, or was asked for something it cannot do."""


class RedisProxy:
    """A controllable pass-through from ``127.0.0.1:<port>`` to ``target_host:target_port``.

    Args:
        target_port: Where the real server listens.
        target_host: Its (loopback) address.
    """

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        if not _loopback(target_host):
            raise RedisProxyError(f"the proxy only forwards to loopback, not {target_host!r}")
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        #: Connections accepted, chunks passed on, chunks that waited for latency or a stall.
        self.connections = 0
        self.chunks = 0
        self.delayed = 0
        self.held = 0
        self._latency = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._flowing: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def latency(self) -> float:
        return self._latency

    @property
    def stalled(self) -> bool:
        return self._flowing is not None and not self._flowing.is_set()

    # -- controls (any thread) ---------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk, in both directions, by *seconds* (0: none)."""
        if not seconds >= 0:
            raise RedisProxyError("latency must be a non-negative number of seconds")
        self._latency = float(seconds)

    def stall(self) -> None:
        """Pass nothing on until :meth:`resume`."""
        self._call(lambda flowing: flowing.clear())

    def resume(self) -> None:
        """No latency, no stall: a plain pass-through again."""
        self._latency = 0.0
        self._call(lambda flowing: flowing.set())

    def _call(self, change: Callable[[asyncio.Event], None]) -> None:
        loop, flowing = self._loop, self._flowing
        if loop is None or flowing is None:
            raise RedisProxyError("the proxy is not running")
        done = threading.Event()

        def apply() -> None:
            change(flowing)
            done.set()

        loop.call_soon_threadsafe(apply)
        if not done.wait(START_TIMEOUT):
            raise RedisProxyError("the proxy's loop did not answer")

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RedisProxyError("already started")
        self._thread = threading.Thread(target=self._run, name="redis-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._error is not None:
            self.stop()
            raise RedisProxyError(f"the proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Close the listener and every connection; wait for the thread (bounded)."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(START_TIMEOUT)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the loop's side -----------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _serve(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, host="127.0.0.1", port=0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            self._flowing.set()  # a stalled pump wakes up and meets its closed socket
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), START_TIMEOUT)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(upstream)
            pumps = [
                asyncio.ensure_future(self._pump(reader, upstream)),
                asyncio.ensure_future(self._pump(up_reader, writer)),
            ]
            # When either side closes, so does the other.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            # Cancelled only when the proxy stops.  Not re-raised: asyncio's callback for a
            # connection task that ends cancelled logs a spurious error (CPython 3.11).
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    side.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        flowing = self._flowing
        assert flowing is not None
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await source.read(CHUNK):
                latency = self._latency
                if latency > 0:
                    self.delayed += 1
                    await asyncio.sleep(latency)
                if not flowing.is_set():
                    self.held += 1
                    await flowing.wait()
                sink.write(chunk)
                await sink.drain()
                self.chunks += 1


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
