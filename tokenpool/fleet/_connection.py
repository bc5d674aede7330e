"""Reaching the store's Redis: asyncio only, TLS verified with a context made off the loop, a health probe."""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import certifi

from .._exceptions import ConfigurationError

if TYPE_CHECKING:
    from .._secret import Secret

__all__ = ["make_client", "probe", "require_asyncio"]


def require_asyncio() -> None:
    """Refuse to run anywhere but asyncio: redis-py's asyncio client needs asyncio's loop."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            "the Redis store needs asyncio (redis-py's asyncio client); this pool runs on another "
            "event loop: drop store= or run the pool on asyncio"
        ) from None


async def make_client(
    *,
    host: str,
    port: int,
    db: int,
    username: str | None,
    password: Secret | None,
    tls: bool,
    ssl_ca_certs: str | None,
    operation_timeout: float,
) -> Any:
    """A redis-py asyncio client for these settings (no connection is made yet).

    Raises:
        ConfigurationError: not running on asyncio, or the CA bundle cannot be loaded.
    """
    require_asyncio()
    import redis.asyncio
    import redis.asyncio.connection

    from ._credentials import secret_credentials

    kwargs: dict[str, Any] = {
        "host": host,
        "port": port,
        "db": db,
        # redis-py's own socket deadlines match ours, so a stalled socket is
        # dropped rather than left half-read for the next command.
        "socket_timeout": operation_timeout,
        "socket_connect_timeout": operation_timeout,
        "health_check_interval": 0,
        "decode_responses": False,
        "retry_on_timeout": False,
    }
    if password is not None or username is not None:
        # The password stays a Secret until the AUTH command is written.
        kwargs["credential_provider"] = secret_credentials(username, password)
    if tls:
        context = await anyio.to_thread.run_sync(_tls_context, ssl_ca_certs)
        kwargs["connection_class"] = _prepared_tls_connection(context)
    else:
        kwargs["connection_class"] = redis.asyncio.connection.Connection
    pool = redis.asyncio.ConnectionPool(**kwargs)
    return redis.asyncio.Redis.from_pool(pool)


def _tls_context(ssl_ca_certs: str | None) -> ssl.SSLContext:
    """Verification on, host name checked; runs in a worker thread (reads the CA bundle)."""
    cafile = ssl_ca_certs or certifi.where()
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"RedisStore.ssl_ca_certs: cannot load {cafile!r} ({type(exc).__name__})"
        ) from None
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _prepared_tls_connection(context: ssl.SSLContext) -> type[Any]:
    """An ``SSLConnection`` that uses *context*, built off the event loop, instead of making its own.

    redis-py would create a context (and read the CA bundle) on the event loop
    for every new connection, and by default without host name checks.
    """
    from redis.asyncio.connection import SSLConnection

    class PreparedTLSConnection(SSLConnection):
        def _connection_arguments(self) -> Mapping[str, Any]:
            return {"host": self.host, "port": self.port, "ssl": context}

    return PreparedTLSConnection


async def probe(
    client: Any, *, url: str, encrypted: bool, operation_timeout: float, fallback: bool
) -> dict[str, Any]:
    """PING round trip and clock skew of the server against this host's wall clock."""
    result: dict[str, Any] = {
        "ok": False,
        "url": url,
        "encrypted": encrypted,
        "fallback": fallback,
        "ping_seconds": None,
        "clock_skew_seconds": None,
        "error": None,
    }
    try:
        with anyio.fail_after(max(operation_timeout * 4, 1.0)):
            # A generous bound here: a health check may pay the connection set-up.
            await client.ping()
            started = time.perf_counter()
            await client.ping()
            result["ping_seconds"] = round(time.perf_counter() - started, 6)
            before = time.time()
            seconds, micros = await client.time()
            after = time.time()
    except Exception as exc:
        result["error"] = type(exc).__name__
        return result
    server = float(seconds) + float(micros) / 1e6
    result["clock_skew_seconds"] = round(server - (before + after) / 2, 6)
    result["ok"] = True
    return result
