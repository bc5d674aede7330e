"""Throw-away redis-servers for the fleet-store tests, by :class:`tokenpool.testing.RedisServerProcess`.

What the tests add: TLS certificates from ``trustme``, an ACL user, and the
project's rule for a missing server: the tests skip, except in CI (``CI=true``),
where they fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from _workers import require_binary

from tokenpool.testing import RedisServerProcess

__all__ = ["AclUser", "RedisServer", "TlsFiles", "redis_server", "tls_files"]

#: The servers these tests start (the name the test modules annotate with).
RedisServer = RedisServerProcess


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


@contextlib.contextmanager
def redis_server(
    directory: Path, *, tls: TlsFiles | None = None, user: AclUser | None = None
) -> Iterator[RedisServerProcess]:
    """A started server in *directory*, stopped on exit: TLS only with *tls*, only *user* with *user*."""
    require_binary("redis-server", "Debian: apt-get install redis-server")
    server = RedisServerProcess(
        directory=directory,
        tls_cert_file=None if tls is None else tls.cert_file,
        tls_key_file=None if tls is None else tls.key_file,
        tls_ca_file=None if tls is None else tls.ca_file,
        username=None if user is None else user.name,
        password=None if user is None else user.password,
    )
    with server:
        yield server
