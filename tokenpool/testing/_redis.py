"""A throw-away ``redis-server`` on loopback, for tests and benchmarks of the fleet tier.

Blocking by design: it is for test and benchmark *setup*.  :meth:`RedisServerProcess.start`
and :meth:`~RedisServerProcess.restart` wait (bounded) for the server to answer PING, and
the admin helpers make one blocking round trip each.  Called from async code they hold
the event loop for that long; wrap them in ``anyio.to_thread.run_sync`` where that matters.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._resp import Reader, Reply, encode

if TYPE_CHECKING:
    import redis

__all__ = ["RedisServerProcess"]

#: Attempts with a fresh port when the server exits at start-up (another process took the port).
_ATTEMPTS = 3
#: Lines of the server's output quoted in an error.
_TAIL_LINES = 20


class RedisServerProcess:
    """One ``redis-server`` on a free 127.0.0.1 port, for as long as the ``with`` block lasts.

    No persistence (``save ""``, ``appendonly no``), its own directory, every wait
    bounded.  It can crash on purpose and come back empty on the same port::

        with RedisServerProcess() as server:
            store = RedisStore(server.url)           # redis://127.0.0.1:PORT/0
            server.kill()                            # SIGKILL, as a crash would
            server.restart()                         # same port, no data
            server.keys("tokenpool:*:token")

    Synchronous, for test setup: see the module docstring.

    Args:
        directory: Working directory (config, output, nothing else); default a temporary
            one, removed by :meth:`stop`.  A given directory is created and kept.
        tls_cert_file: Serve TLS only (no plain port) with this certificate, its
            *tls_key_file* and the CA in *tls_ca_file* (clients are not asked for one).
        tls_key_file: The certificate's private key.
        tls_ca_file: PEM file of the CA that signed it.
        username: Require this ACL user (allowed everything; the default user is off).
        password: Its password.
        startup_timeout: Seconds to wait for PING after a start or restart.
        stop_timeout: Seconds between SIGTERM and SIGKILL in :meth:`stop`.

    Raises:
        RuntimeError: ``redis-server`` is not on ``PATH``.
    """

    def __init__(
        self,
        *,
        directory: str | PathLike[str] | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_ca_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found on PATH: install it (apt-get install redis-server, "
                "brew install redis) to run a local Redis for the fleet tier's tests and benchmarks"
            )
        tls = (tls_cert_file, tls_key_file, tls_ca_file)
        if any(tls) and not all(tls):
            raise ValueError("TLS needs tls_cert_file, tls_key_file and tls_ca_file together")
        if (username is None) != (password is None):
            raise ValueError("an ACL user needs both username and password")
        self._binary = binary
        self._given_directory = None if directory is None else Path(directory)
        self._tls_cert_file = tls_cert_file
        self._tls_key_file = tls_key_file
        self._tls_ca_file = tls_ca_file
        self._username = username
        self._password = password
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._directory: Path | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        #: How often :meth:`kill` and :meth:`restart` were used.
        self.kills = 0
        self.restarts = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the server on a free port and wait until it answers PING.

        Raises:
            RuntimeError: Already started, or it exited or did not answer in time (the
                message quotes its last output lines).
        """
        if self._directory is not None:
            raise RuntimeError("this RedisServerProcess is already started (after kill(), use restart())")
        if self._given_directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="tokenpool-redis-"))
        else:
            self._given_directory.mkdir(parents=True, exist_ok=True)
            self._directory = self._given_directory
        try:
            self._first_launch()
        except BaseException:
            self.stop()  # failed or interrupted: nothing started here outlives the call
            raise
        return self

    def _first_launch(self) -> None:
        problem = "did not start"
        for _ in range(_ATTEMPTS):
            self._port = _free_port()
            failed = self._launch()
            if failed is None:
                return
            problem = failed
        raise RuntimeError(f"redis-server {problem}")

    def kill(self) -> None:
        """SIGKILL the server by its own handle, as a crash would; :meth:`restart` brings it back.

        Raises:
            RuntimeError: It is not running.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("redis-server is not running")
        proc.kill()
        proc.wait(self.stop_timeout)
        self.kills += 1

    def restart(self) -> None:
        """Start the server again on the same port, empty (no persistence), as after a crash.

        SIGKILLs it first if it is still running (that counts in :attr:`kills`).  Retries
        until *startup_timeout* while the port is not free yet.

        Raises:
            RuntimeError: Never started (or stopped), or it did not come back in time.
        """
        if self._directory is None:
            raise RuntimeError("redis-server was never started (or was stopped); use start()")
        if self.running:
            self.kill()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            problem = self._launch()
            if problem is None:
                self.restarts += 1
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"redis-server did not restart on port {self.port}: {problem}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after *stop_timeout*), then remove the temporary directory. Idempotent."""
        self._end_process()
        directory, self._directory = self._directory, None
        if directory is not None and self._given_directory is None:
            shutil.rmtree(directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _launch(self) -> str | None:
        """Run the server on :attr:`port`: ``None`` once it answers PING, else what went wrong."""
        assert self._directory is not None
        config = self._directory / "redis.conf"
        config.write_text(self._config_text(), encoding="utf-8")
        # Its output goes to a file: a pipe nobody reads could fill up and stall it.
        with self._output.open("ab") as output:
            proc = self._proc = subprocess.Popen(  # noqa: S603 - our own fixed command line
                [self._binary, str(config)], stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if proc.poll() is not None:
                problem = f"exited with status {proc.returncode} at start-up"
                break
            with contextlib.suppress(OSError, RuntimeError):
                if self.command("PING", timeout=0.5) == "PONG":
                    return None
            if time.monotonic() >= deadline:
                problem = f"did not answer PING within {self.startup_timeout:g} s"
                break
            time.sleep(0.05)
        self._end_process()
        return f"{problem}; its last output lines:\n{self._output_tail()}"

    def _config_text(self) -> str:
        assert self._directory is not None
        lines = [
            "bind 127.0.0.1",
            f"dir {_quote(str(self._directory))}",
            'save ""',
            "appendonly no",
            "daemonize no",
            "loglevel warning",
            "protected-mode yes",
        ]
        if self._tls_cert_file is None:
            lines.append(f"port {self.port}")
        else:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {_quote(self._tls_cert_file)}",
                f"tls-key-file {_quote(str(self._tls_key_file))}",
                f"tls-ca-cert-file {_quote(str(self._tls_ca_file))}",
                "tls-auth-clients no",
            ]
        if self._username is not None:
            lines += [
                "user default off",
                f"user {self._username} on {_quote('>' + str(self._password))} ~* &* +@all",
            ]
        return "\n".join(lines) + "\n"

    def _end_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.stop_timeout)

    @property
    def _output(self) -> Path:
        assert self._directory is not None
        return self._directory / "redis.log"

    def _output_tail(self) -> str:
        """The last lines the server wrote (stdout and stderr), over all its starts."""
        if self._directory is None:
            return "(not started)"
        try:
            text = self._output.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.strip().splitlines()[-_TAIL_LINES:]) or "(no output)"

    # ------------------------------------------------------------------ where it is

    @property
    def port(self) -> int:
        """Its loopback port (the same after a restart)."""
        if self._port is None:
            raise RuntimeError("redis-server is not started; use it inside `with`")
        return self._port

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("redis-server is not running")
        return self._proc.pid

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``rediss://`` with TLS), without credentials."""
        return f"{'redis' if self._tls_cert_file is None else 'rediss'}://127.0.0.1:{self.port}/0"

    # ------------------------------------------------------------------ admin

    def command(self, *args: str, timeout: float = 2.0) -> Reply:
        """Send one command on a fresh connection (TLS and ``AUTH`` as configured); return its reply.

        Replies are ``str`` (simple and bulk strings), ``int``, ``None`` or lists of those.

        Raises:
            RuntimeError: The server answered with an error.
            OSError: It is not reachable (for instance killed).
        """
        with self._connect(timeout) as sock:
            reader = Reader(sock)
            if self._username is not None:
                sock.sendall(encode(("AUTH", self._username, str(self._password))))
                reader.reply()
            sock.sendall(encode(args))
            return reader.reply()

    def _connect(self, timeout: float) -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self._tls_ca_file is None:
            return raw
        context = ssl.create_default_context(cafile=self._tls_ca_file)
        context.check_hostname = False  # reachability only: clients check the name themselves
        try:
            return context.wrap_socket(raw)
        except BaseException:
            raw.close()
            raise

    def flush(self) -> None:
        """Forget every key (``FLUSHALL``)."""
        self.command("FLUSHALL")

    def commands_processed(self) -> int:
        """The server's ``total_commands_processed`` (counted again from 0 after a restart)."""
        text = str(self.command("INFO", "stats") or "")
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "total_commands_processed":
                return int(value)
        raise RuntimeError("INFO stats did not report total_commands_processed")

    def keys(self, pattern: str) -> list[str]:
        """Every key matching *pattern*, sorted, by ``SCAN`` (never ``KEYS``, which blocks the server)."""
        found: set[str] = set()
        cursor = "0"
        for _ in range(100_000):
            reply = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            if not isinstance(reply, list) or len(reply) != 2:
                raise RuntimeError(f"unexpected answer to SCAN: {reply!r}")
            cursor = str(reply[0])
            found.update(str(key) for key in reply[1] or [])
            if cursor == "0":
                break
        return sorted(found)

    def get(self, key: str) -> str | None:
        """The string value of *key*, or ``None``."""
        value = self.command("GET", key)
        return None if value is None else str(value)

    def pttl(self, key: str) -> int:
        """Milliseconds *key* has left (-1: no expiry, -2: no such key)."""
        reply = self.command("PTTL", key)
        if isinstance(reply, int):
            return reply
        raise RuntimeError(f"expected an integer answer to PTTL, got {reply!r}")

    def client(self, **kwargs: Any) -> redis.Redis:
        """A blocking ``redis.Redis`` (bytes in and out) with this server's address, TLS and user.

        Needs the ``redis`` package (``pip install 'tokenpool[redis]'``).  *kwargs* override
        the defaults (the CA is trusted and the host name checked).
        """
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - the redis extra is part of dev
            raise RuntimeError("client() needs the redis package: pip install 'tokenpool[redis]'") from exc
        options: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "socket_connect_timeout": 1.0}
        if self._tls_ca_file is not None:
            options.update(ssl=True, ssl_ca_certs=self._tls_ca_file, ssl_check_hostname=True)
        if self._username is not None:
            options.update(username=self._username, password=self._password)
        options.update(kwargs)
        return redis.Redis(**options)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quote(value: str) -> str:
    """*value* as one double-quoted argument of a redis.conf line."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'
