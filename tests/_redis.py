"""A throw-away ``redis-server`` for the fleet-store tests: start, SIGKILL, restart on the same port, stop.

Loopback only, no persistence (``--save '' --appendonly no``), its own
directory.  Optionally TLS (certificates from ``trustme``) and an ACL user.
Every wait is bounded.  A missing ``redis-server`` skips the tests, except in
CI (``CI=true``), where it fails them.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from _workers import free_port, require_binary

__all__ = ["AclUser", "RedisServer", "TlsFiles", "redis_server", "tls_files"]

#: Longest wait for a server to answer PING after it was started.
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener: the CA clients trust, the server's certificate and key."""

    ca_file: str
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class AclUser:
    """A Redis ACL user allowed every command on every key."""

    name: str
    password: str = "s3cret-Redis:pass@/%word"


def tls_files(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A fresh test CA and a server certificate for *hosts*, written under *directory*."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(*hosts)
    files = TlsFiles(
        ca_file=str(directory / "ca.pem"),
        cert_file=str(directory / "server.pem"),
        key_file=str(directory / "server.key"),
    )
    ca.cert_pem.write_to_path(files.ca_file)
    cert.cert_chain_pems[0].write_to_path(files.cert_file)
    cert.private_key_pem.write_to_path(files.key_file)
    return files


class RedisServer:
    """One ``redis-server`` process on a fixed loopback port, which survives kill/restart.

    Args:
        directory: Working directory (and where the config file goes).
        tls: Serve TLS only (no plain port) with these files.
        user: Require this ACL user (the default user is switched off).
    """

    def __init__(self, directory: Path, *, tls: TlsFiles | None = None, user: AclUser | None = None) -> None:
        self.binary = require_binary("redis-server", "Debian: apt-get install redis-server")
        self.directory = directory
        self.tls = tls
        self.user = user
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "redis.conf"
        self.log_file = directory / "redis.log"
        self.config.write_text(self._config_text(), encoding="utf-8")

    def _config_text(self) -> str:
        lines = [
            "bind 127.0.0.1",
            f'dir "{self.directory}"',
            'save ""',
            "appendonly no",
            "daemonize no",
            "loglevel warning",
            "protected-mode yes",
        ]
        if self.tls is None:
            lines.append(f"port {self.port}")
        else:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f'tls-cert-file "{self.tls.cert_file}"',
                f'tls-key-file "{self.tls.key_file}"',
                f'tls-ca-cert-file "{self.tls.ca_file}"',
                "tls-auth-clients no",
            ]
        if self.user is not None:
            lines += [
                "user default off",
                f'user {self.user.name} on ">{self.user.password}" ~* &* +@all',
            ]
        return "\n".join(lines) + "\n"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server (on the same port as before, after a kill) and wait for PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        # Its messages go to a file: a pipe nobody reads could fill up and stall it.
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                tail = self.log_file.read_text(encoding="utf-8", errors="replace")[-500:]
                raise AssertionError(f"redis-server exited with {self.proc.returncode} at start: {tail}")
            with contextlib.suppress(redis.RedisError, OSError):
                # Readiness only: a certificate for another host name must not stop it.
                check = {"ssl_check_hostname": False} if self.tls is not None else {}
                with self.client(socket_timeout=0.5, **check) as client:
                    if client.ping():
                        return self
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"redis-server did not answer PING within {START_TIMEOUT:g} s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, by the process's own handle, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10.0)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s), by the process's own handle."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10.0)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        """Start again on the same port (after :meth:`kill`); the data is gone (no persistence)."""
        self.kill()
        self.start()

    # -- clients ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """URL without credentials (pass them as ``username=``/``password=``)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A blocking admin client (bytes in, bytes out) for setting up and inspecting the server."""
        options: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "socket_connect_timeout": 1.0}
        if self.tls is not None:
            options.update(ssl=True, ssl_ca_certs=self.tls.ca_file, ssl_check_hostname=True)
        if self.user is not None:
            options.update(username=self.user.name, password=self.user.password)
        options.update(kwargs)
        return redis.Redis(**options)


@contextlib.contextmanager
def redis_server(
    directory: Path, *, tls: TlsFiles | None = None, user: AclUser | None = None
) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped on exit whatever happened."""
    server = RedisServer(directory, tls=tls, user=user)
    try:
        yield server.start()
    finally:
        server.stop()
