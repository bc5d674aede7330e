"""A throw-away ``redis-server`` for the harness's fleet scenario: loopback, no persistence, bounded waits.

:class:`RedisServer` starts ``redis-server`` on a free 127.0.0.1 port in a
temporary directory (``--save '' --appendonly no``), answers the few commands
the harness needs over a plain socket (PING, FLUSHALL, INFO), and stops the
process it started by its own handle.
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
from typing import Self

__all__ = ["RedisServer", "RedisServerError"]

#: Longest wait for the server to answer PING after it was started (per attempt).
START_TIMEOUT = 10.0
#: Deadline of one admin command.
COMMAND_TIMEOUT = 2.0
#: Attempts with a fresh port if the server exits at start-up (another process took the port).
ATTEMPTS = 3


class RedisServerError(RuntimeError):
    """redis-server is missing, did not start, or answered an admin command with an error."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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

    def reply(self) -> str | int | None:
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
        assert self._directory is not None
        problem = "did not start"
        for _ in range(ATTEMPTS):
            self.port = _free_port()
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
                        return
                time.sleep(0.05)
            else:
                problem = f"did not answer PING within {START_TIMEOUT:g} s"
            self._end_process()
        raise RedisServerError(f"redis-server {problem}")

    @staticmethod
    def _log_tail(log: Path) -> str:
        try:
            return log.read_text(encoding="utf-8", errors="replace").strip()[-300:]
        except OSError:
            return "no log"

    def command(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str | int | None:
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
        """The server's ``total_commands_processed`` so far."""
        return int(self.info("stats").get("total_commands_processed", "0"))

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
