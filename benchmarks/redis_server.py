"""A throw-away ``redis-server`` for the harness's fleet scenario: loopback, no persistence, bounded waits.

:class:`RedisServer` starts ``redis-server`` on a free 127.0.0.1 port in a
temporary directory (``--save '' --appendonly no``), answers the few commands
the harness needs over a plain socket (PING, FLUSHALL, INFO, SCAN, GET, DEL),
and stops the process it started by its own handle.  For the fleet-faults
scenario it can also crash the server on purpose (:meth:`RedisServer.kill`,
SIGKILL by its handle) and start it again on the same port
(:meth:`RedisServer.restart`); without persistence the restarted server is
empty, as after a real crash.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeAlias

__all__ = ["RedisServer", "RedisServerError"]

#: Longest wait for the server to answer PING after it was started (per attempt).
START_TIMEOUT = 10.0
#: Deadline of one admin command.
COMMAND_TIMEOUT = 2.0
#: Attempts with a fresh port if the server exits at start-up (another process took the port).
ATTEMPTS = 3


#: An answer: simple string, bulk string, integer, nil, or an array of those.
Reply: TypeAlias = str | int | list[Any] | None


class RedisServerError(RuntimeError):
    """redis-server is missing, did not start, or answered an admin command with an error."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _integer(reply: Reply) -> int:
    if not isinstance(reply, int):
        raise RedisServerError(f"expected an integer answer, got {type(reply).__name__}")
    return reply


def _encode(args: tuple[str, ...]) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Reader:
    """Just enough RESP for simple strings, errors, integers and bulk strings."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise RedisServerError("redis-server closed the connection")
        self._buffer += chunk

    def reply(self) -> Reply:
        """A simple string, integer, bulk string (``str``), ``None``, or a list of those (arrays)."""
        line = self._line()
        kind, rest = line[:1], line[1:].decode("utf-8", "replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisServerError(f"redis-server answered: {rest}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            while len(self._buffer) < length + 2:
                self._fill()
            data, self._buffer = self._buffer[:length], self._buffer[length + 2 :]
            return data.decode("utf-8", "replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise RedisServerError(f"unexpected reply type {kind!r}")


class RedisServer:
    """One ``redis-server`` on a free loopback port, for as long as the ``with`` block lasts.

    Args:
        binary: The ``redis-server`` program (default: the one on ``PATH``).
    """

    def __init__(self, binary: str | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RedisServerError(
                "redis-server is not installed (Debian: apt-get install redis-server); "
                "the fleet scenario needs one"
            )
        self.binary = found
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._directory: Path | None = None
        #: How often :meth:`kill` and :meth:`restart` were used (commands counts reset on a restart).
        self.kills = 0
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        if self.proc is not None:
            raise RedisServerError("already started")
        self._directory = Path(tempfile.mkdtemp(prefix="tokenpool-bench-redis-"))
        try:
            self._start()
        except BaseException:
            # Interrupted or failed: nothing this started outlives the call.
            self.stop()
            raise
        return self

    def _start(self) -> None:
        problem = "did not start"
        for _ in range(ATTEMPTS):
            self.port = _free_port()
            failed = self._launch()
            if failed is None:
                return
            problem = failed
        raise RedisServerError(f"redis-server {problem}")

    def _launch(self) -> str | None:
        """Start the server on :attr:`port`; ``None`` once it answers PING, else what went wrong."""
        assert self._directory is not None
        log = self._directory / "redis.log"
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self._directory),
            "--logfile",
            str(log),
            "--loglevel",
            "warning",
        ]
        self.proc = subprocess.Popen(  # noqa: S603 - our own fixed command line
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        limit = time.monotonic() + START_TIMEOUT
        while time.monotonic() < limit:
            if self.proc.poll() is not None:
                problem = f"exited with code {self.proc.returncode}: {self._log_tail(log)}"
                break
            with contextlib.suppress(OSError, RedisServerError):
                if self.command("PING", timeout=0.5) == "PONG":
                    return None
            time.sleep(0.05)
        else:
            problem = f"did not answer PING within {START_TIMEOUT:g} s"
        self._end_process()
        return problem

    @staticmethod
    def _log_tail(log: Path) -> str:
        try:
            return log.read_text(encoding="utf-8", errors="replace").strip()[-300:]
        except OSError:
            return "no log"

    def command(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> Reply:
        """Send one command on a fresh connection and return its reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(_encode(args))
            return _Reader(sock).reply()

    def flush(self) -> None:
        """Forget every key (between runs, so that no run adopts another run's tokens)."""
        self.command("FLUSHALL")

    def info(self, section: str = "stats") -> dict[str, str]:
        text = self.command("INFO", section)
        out: dict[str, str] = {}
        for line in str(text or "").splitlines():
            key, sep, value = line.partition(":")
            if sep and not key.startswith("#"):
                out[key.strip()] = value.strip()
        return out

    def commands_processed(self) -> int:
        """The server's ``total_commands_processed`` so far (since its last (re)start)."""
        return int(self.info("stats").get("total_commands_processed", "0"))

    def keys(self, pattern: str) -> list[str]:
        """Every key matching *pattern*, by ``SCAN`` (never ``KEYS``, which blocks the server)."""
        found: list[str] = []
        cursor = "0"
        for _ in range(10_000):
            reply = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            if not isinstance(reply, list) or len(reply) != 2:
                raise RedisServerError("unexpected answer to SCAN")
            cursor, batch = str(reply[0]), reply[1]
            found.extend(str(key) for key in batch or [])
            if cursor == "0":
                break
        return sorted(set(found))

    def get(self, key: str) -> str | None:
        value = self.command("GET", key)
        return None if value is None else str(value)

    def pttl(self, key: str) -> int:
        """Milliseconds *key* has left (-1: no expiry, -2: no such key)."""
        return _integer(self.command("PTTL", key))

    def delete(self, *keys: str) -> int:
        return _integer(self.command("DEL", *keys)) if keys else 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server by its own handle, as a crash would; :meth:`restart` brings it back.

        Raises:
            RedisServerError: it is not running.
        """
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise RedisServerError("redis-server is not running")
        proc.kill()
        proc.wait(timeout=5.0)
        self.proc = None
        self.kills += 1

    def restart(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start the server again on the same port (after :meth:`kill`), empty.

        Retries for up to *timeout* seconds while the port is not free yet.

        Raises:
            RedisServerError: it is still running, or did not come back in time.
        """
        if self.running:
            raise RedisServerError("redis-server is still running")
        if self._directory is None or not self.port:
            raise RedisServerError("redis-server was never started")
        self.proc = None
        limit = time.monotonic() + timeout
        while True:
            problem = self._launch()
            if problem is None:
                self.restarts += 1
                return
            if time.monotonic() >= limit:
                raise RedisServerError(f"redis-server did not restart on port {self.port}: {problem}")
            time.sleep(0.2)

    def stop(self) -> None:
        self._end_process()
        self._remove_directory()

    def _end_process(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)

    def _remove_directory(self) -> None:
        directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
