"""The pool: cells, HTTP clients, the task group that runs refresh loops, metrics and logs."""

from __future__ import annotations

import contextlib
import os
import random
import ssl
import weakref
import zlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, cast

import anyio
import certifi
import h2.exceptions
import httpx
from anyio.abc import TaskGroup
from prometheus_client import CollectorRegistry

from ._cell import Cell
from ._clock import Clock, MonotonicClock
from ._exceptions import (
    ConfigurationError,
    ForkedPoolError,
    InvalidTokenResponse,
    PoolStateError,
    TokenEndpointUnreachable,
    TokenRequestError,
    UnknownProviderError,
)
from ._metrics import PoolMetrics
from ._observe import Observer
from ._token import Token, TokenResponse
from .providers import ClientCertificate, Provider

__all__ = ["CellStatistics", "PoolStatistics", "TokenPool"]

#: Token endpoint answers larger than this are refused (a token response is well under 16 KiB).
MAX_BODY_BYTES = 64 * 1024

WarmUp = Literal["wait", "background", "lazy"]

# -- fork detection ---------------------------------------------------------------------------
# A pool's sockets, timers and loop belong to the process that opened it.  In a
# forked child every live pool is marked, and its next use raises.  Checking a
# flag set by an at-fork hook costs nothing on the hit path (os.getpid() is a
# system call on current glibc).
_live_pools: weakref.WeakSet[TokenPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        pool._forked_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True, slots=True)
class CellStatistics:
    """A snapshot of one provider's cell (see :meth:`TokenPool.statistics`)."""

    name: str
    kind: str
    hits: int
    misses: int
    token_requests: int
    waiting: int
    refreshing: bool
    consecutive_failures: int
    has_token: bool
    seconds_until_refresh: float | None
    seconds_until_expiry: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a whole pool."""

    cells: Mapping[str, CellStatistics]

    @property
    def hits(self) -> int:
        return sum(c.hits for c in self.cells.values())

    @property
    def misses(self) -> int:
        return sum(c.misses for c in self.cells.values())

    @property
    def token_requests(self) -> int:
        return sum(c.token_requests for c in self.cells.values())


class TokenPool:
    """Keeps a valid token ready for every provider, for one worker process.

    Create it inside the event loop (and the process) that uses it, and enter
    it with ``async with``::

        async with TokenPool({"acme": providers.ClientCredentials(...)}) as pool:
            token = await pool.token("acme")
            async with httpx.AsyncClient(auth=pool.auth("acme")) as client:
                ...

    Args:
        providers: Name → provider adapter.  Names label logs and metrics.
        warm_up: ``"wait"`` (default) fetches every provider's first token
            concurrently while entering and waits for them (failures are
            logged, not raised: one provider's outage must not stop a worker
            serving the others); ``"background"`` starts those requests but
            does not wait (Celery kills a child whose init blocks); ``"lazy"``
            fetches on first use.
        warm_up_timeout: Longest wait for ``"wait"``.
        client: An ``httpx.AsyncClient`` to use for token requests of
            providers without a client certificate.  Not closed by the pool.
            By default the pool makes its own (HTTP/2, verification on).
        ca_file: CA bundle that the pool's own clients trust (default:
            certifi's).  Needed for private CAs such as the emulator's.
        max_concurrent_requests: Token requests in flight at once, across all
            providers; the rest queue in FIFO order (see PEERS.md: httpcore's
            pool degrades badly with thousands of queued requests).
        metrics: ``True`` (default) registers Prometheus series in the global
            registry; a ``CollectorRegistry`` registers them there; ``False``
            records nothing.
        metrics_interval: How often hit/miss counts are folded into counters.
        logger: A structlog-style logger (default
            ``structlog.get_logger("tokenpool")``).  tokenpool never configures
            structlog.
        clock: Time source; tests pass a ``ManualClock``.
        rng: Random source for jitter; tests pass a seeded ``random.Random``.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        warm_up: WarmUp = "wait",
        warm_up_timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        max_concurrent_requests: int = 20,
        metrics: bool | CollectorRegistry = True,
        metrics_interval: float = 1.0,
        logger: Any = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if warm_up not in ("wait", "background", "lazy"):
            raise ConfigurationError(f"warm_up must be 'wait', 'background' or 'lazy', got {warm_up!r}")
        if max_concurrent_requests < 1:
            raise ConfigurationError("max_concurrent_requests must be at least 1")
        if not metrics_interval > 0:
            raise ConfigurationError("metrics_interval must be positive")
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._now = self._clock.now
        # Not for cryptography: jitter only needs to differ between workers.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311
        if metrics is False:
            self._metrics: PoolMetrics | None = None
        else:
            self._metrics = PoolMetrics(None if metrics is True else metrics)
        self._metrics_interval = metrics_interval
        self._observer = Observer(logger, self._metrics)
        self._warm_up: WarmUp = warm_up
        self._warm_up_timeout = warm_up_timeout
        self._user_client = client
        self._ca_file = os.fspath(ca_file) if ca_file is not None else None
        self._clients: dict[ClientCertificate | None, httpx.AsyncClient] = {}
        self._slots = anyio.Semaphore(max_concurrent_requests)
        self._max_requests = max_concurrent_requests
        self._all_cells: dict[str, Cell] = {}
        for name, provider in providers.items():
            self._all_cells[name] = self._make_cell(name, provider)
        # The hit path looks names up here; it is empty unless the pool is open,
        # so "not open" costs nothing to check.
        self._cells: dict[str, Cell] = {}
        self._state: Literal["new", "open", "closed", "forked"] = "new"
        self._tg: TaskGroup | None = None
        self._pid = os.getpid()

    def _make_cell(self, name: str, provider: Provider) -> Cell:
        if not isinstance(name, str) or not name:
            raise ConfigurationError("provider names must be non-empty strings")
        if not isinstance(provider, Provider):
            raise ConfigurationError(
                f"provider {name!r}: expected a tokenpool.providers.Provider, got {type(provider).__name__}"
            )
        return Cell(
            name,
            provider,
            fetch=self._fetch,
            clock=self._clock,
            rng=self._rng,
            observer=self._observer,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise PoolStateError(f"a TokenPool can be entered once (this one is {self._state})")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._state = "open"
        _live_pools.add(self)
        self._cells = self._all_cells
        for cell in self._cells.values():
            self._start_cell(cell)
        if self._metrics is not None:
            tg.start_soon(self._publish_metrics)
        if self._warm_up == "wait":
            await self.warm_up(timeout=self._warm_up_timeout)
        elif self._warm_up == "background":
            for cell in self._cells.values():
                tg.start_soon(self._warm_one, cell, None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every refresh loop, close the pool's HTTP clients, publish final counts."""
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        forked = self._state == "forked"
        self._state = "closed"
        self._cells = {}
        _live_pools.discard(self)
        if forked:
            # Nothing here belongs to this process: do not touch sockets or the loop.
            return
        tg, self._tg = self._tg, None
        assert tg is not None
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                for client in self._clients.values():
                    await client.aclose()
                self._clients.clear()
                if self._metrics is not None:
                    self._metrics.fold(self._all_cells.values())

    def _forked_child(self) -> None:
        self._state = "forked"
        self._cells = {}

    def _start_cell(self, cell: Cell) -> None:
        assert self._tg is not None
        if self._metrics is not None:
            self._metrics.touch(cell.name)
        self._tg.start_soon(cell.run, name=f"tokenpool-refresh-{cell.name}")

    async def _publish_metrics(self) -> None:
        assert self._metrics is not None
        while True:
            await anyio.sleep(self._metrics_interval)
            self._metrics.fold(self._all_cells.values())

    async def warm_up(self, *, timeout: float | None = None) -> dict[str, TokenRequestError | None]:
        """Fetch a token for every provider concurrently; return each one's error (or ``None``)."""
        results: dict[str, TokenRequestError | None] = {}
        async with anyio.create_task_group() as tg:
            for cell in list(self._require_open().values()):
                tg.start_soon(self._warm_one, cell, timeout, results)
        return results

    async def _warm_one(
        self, cell: Cell, timeout: float | None, results: dict[str, TokenRequestError | None] | None = None
    ) -> None:
        error: TokenRequestError | None = None
        try:
            await cell.wait_for_token(timeout)
        except TokenRequestError as exc:
            error = exc  # already logged by the observer
        except TimeoutError:
            error = TokenEndpointUnreachable("no token within the warm-up timeout", provider=cell.name)
        if results is not None:
            results[cell.name] = error

    # -- the API ------------------------------------------------------------------------------

    async def token(self, name: str, *, timeout: float | None = None) -> Token:
        """A usable token for provider *name*.

        Once the pool is warm this returns at once, every time: the cell
        renews tokens in the background at ~80 % of their lifetime and keeps
        serving the current one meanwhile.  Only when there is no usable token
        (cold start, expiry during an outage, a 401) does the caller wait for
        the single in-flight request, at most *timeout* seconds.

        Raises:
            TokenRequestError: the token request failed (a subclass says how).
            TokenWaitTimeout: *timeout* ran out; the refresh goes on for others.
            UnknownProviderError, PoolStateError, ForkedPoolError.
        """
        try:
            cell = self._cells[name]
        except KeyError:
            raise self._lookup_error(name) from None
        token = cell.token
        if token is not None and self._now() < token.usable_until:
            cell.hits += 1
            return token
        return await cell.wait_for_token(timeout)

    def auth(self, name: str) -> httpx.Auth:
        """An ``httpx.Auth`` that adds provider *name*'s token and headers, and recovers from a 401."""
        from ._auth import TokenAuth

        if name not in self._all_cells:
            raise self._lookup_error(name)
        return TokenAuth(self, name)

    async def invalidate(self, name: str, token: Token) -> bool:
        """Report that *token* was refused; drops it only if it is still the current one."""
        cell = self._require_open().get(name)
        if cell is None:
            raise self._lookup_error(name)
        return cell.invalidate(token)

    async def refresh(self, name: str, *, timeout: float | None = None) -> Token:
        """Fetch a new token for *name* now (outside the schedule) and return it."""
        cell = self._require_open().get(name)
        if cell is None:
            raise self._lookup_error(name)
        return await cell.refresh(timeout)

    async def replace_provider(self, name: str, provider: Provider, *, refresh: bool = True) -> Token | None:
        """Swap *name*'s settings (rotated credentials, say) without a restart.

        The current token keeps being served.  With *refresh* (default) a
        token is fetched with the new settings at once and returned, so a
        mistake in them surfaces here rather than at the next renewal.
        """
        cells = self._require_open()
        cell = cells.get(name)
        if cell is None:
            raise self._lookup_error(name)
        if not isinstance(provider, Provider):
            raise ConfigurationError(f"provider {name!r}: expected a Provider, got {type(provider).__name__}")
        cell.replace_provider(provider)
        if refresh:
            return await cell.refresh()
        return None

    async def add_provider(self, name: str, provider: Provider, *, warm_up: bool = True) -> None:
        """Register another provider (a new tenant, say) in a running pool."""
        cells = self._require_open()
        if name in self._all_cells:
            raise ConfigurationError(f"a provider named {name!r} already exists in this pool")
        cell = self._make_cell(name, provider)
        self._all_cells[name] = cell
        cells[name] = cell
        self._start_cell(cell)
        if warm_up:
            await self._warm_one(cell, self._warm_up_timeout)

    def report_unauthorized(self, name: str, *, retried: bool) -> None:
        """Count an API response with status 401 for *name* (for auth flows other than ours)."""
        if name not in self._all_cells:
            raise self._lookup_error(name)
        self._observer.downstream_unauthorized(name, retried=retried)

    def api_headers(self, name: str) -> Mapping[str, str]:
        """Extra headers provider *name* wants on every API call."""
        cell = self._all_cells.get(name)
        if cell is None:
            raise self._lookup_error(name)
        return cell.api_headers

    @property
    def names(self) -> list[str]:
        return list(self._all_cells)

    def __contains__(self, name: object) -> bool:
        return name in self._all_cells

    def statistics(self) -> PoolStatistics:
        """A snapshot of every cell: counters, schedule, last error (never a token)."""
        now = self._now()
        cells = {}
        for name, cell in self._all_cells.items():
            token = cell.token
            cells[name] = CellStatistics(
                name=name,
                kind=cell.provider.kind,
                hits=cell.hits + cell.foreign_hits,
                misses=cell.misses,
                token_requests=cell.requests,
                waiting=cell.waiting,
                refreshing=cell.refreshing,
                consecutive_failures=cell.failures,
                has_token=token is not None and now < token.usable_until,
                seconds_until_refresh=None if token is None else token.refresh_at - now,
                seconds_until_expiry=None if token is None else token.expires_at - now,
                last_error=None if cell.last_error is None else str(cell.last_error),
            )
        return PoolStatistics(cells=cells)

    def __repr__(self) -> str:
        return f"<TokenPool {self._state} providers={list(self._all_cells)}>"

    # -- internals ----------------------------------------------------------------------------

    def _require_open(self) -> dict[str, Cell]:
        if self._state == "open":
            return self._cells
        raise self._state_error()

    def _state_error(self) -> PoolStateError:
        if self._state == "forked" or (self._state == "open" and os.getpid() != self._pid):
            return ForkedPoolError(
                "this TokenPool was opened in another process and used after fork(); "
                "create a new pool in the child (tokenpool.contrib.celery does this for Celery)"
            )
        if self._state == "new":
            return PoolStateError("the TokenPool is not open: use 'async with TokenPool(...) as pool'")
        return PoolStateError("the TokenPool is closed")

    def _lookup_error(self, name: str) -> Exception:
        if self._state != "open":
            return self._state_error()
        return UnknownProviderError(name, list(self._all_cells))

    def _client_for(self, provider: Provider) -> httpx.AsyncClient:
        cert = provider.mtls_certificate()
        if cert is None and self._user_client is not None:
            return self._user_client
        client = self._clients.get(cert)
        if client is None:
            context = ssl.create_default_context(cafile=self._ca_file or certifi.where())
            if cert is not None:
                cert.load_into(context)
            client = httpx.AsyncClient(
                http2=True,
                verify=context,
                # Token traffic is a trickle (one request per cell per
                # refresh); keep a few connections warm and no more.
                limits=httpx.Limits(
                    max_connections=self._max_requests,
                    max_keepalive_connections=min(self._max_requests, 10),
                    keepalive_expiry=30.0,
                ),
                timeout=httpx.Timeout(connect=5.0, read=10.0, write=5.0, pool=5.0),
                follow_redirects=False,
                # No proxies, netrc or SSL_CERT_FILE from the environment: a
                # token request carries credentials and must go where
                # configured.  Pass your own client= to use a proxy.
                trust_env=False,
            )
            self._clients[cert] = client
        return client

    async def _fetch(self, name: str, provider: Provider) -> TokenResponse:
        """The seam: one token request over HTTP, parsed by the provider's adapter."""
        request = provider.build_request()
        # Token answers are tiny: compression buys nothing and a decompression
        # bomb is one less thing to defend against (see _read_capped).
        request.headers["Accept-Encoding"] = "identity"
        client = self._client_for(provider)
        async with self._slots:
            try:
                # Raises TimeoutError past the deadline; the cell reports it.
                with anyio.fail_after(provider.refresh.request_timeout):
                    response = await client.send(request, stream=True)
                    try:
                        body = await _read_capped(response, MAX_BODY_BYTES)
                    finally:
                        await response.aclose()
            except httpx.TimeoutException as exc:
                raise TokenEndpointUnreachable(
                    f"token endpoint timed out ({type(exc).__name__})", provider=name
                ) from exc
            except httpx.DecodingError:
                raise InvalidTokenResponse(
                    "token endpoint answered with a body that cannot be decoded", provider=name
                ) from None
            except (httpx.TransportError, h2.exceptions.ProtocolError) as exc:
                # h2 raises its own errors (InvalidBodyLengthError) when an
                # HTTP/2 answer is cut short; httpx does not map them.
                raise TokenEndpointUnreachable(
                    f"cannot reach the token endpoint {request.url.host} ({type(exc).__name__})",
                    provider=name,
                ) from exc
        try:
            return provider.parse_response(response.status_code, response.headers, body)
        except TokenRequestError:
            raise
        except Exception:
            raise InvalidTokenResponse(
                f"the {provider.kind} adapter failed to parse the answer", status_code=response.status_code
            ) from None


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body, refused beyond *limit* bytes both on the wire and once decompressed.

    Token requests ask for ``Accept-Encoding: identity``; a server that
    compresses anyway is decoded here with the same cap, so a small
    compressed body cannot expand without bound.
    """
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise InvalidTokenResponse(
            f"token endpoint answered with {length} bytes; more than {limit} is refused",
            status_code=response.status_code,
        )
    if response.is_stream_consumed:
        # Already read (httpx.MockTransport answers in users' tests, say).
        body = response.content
        if len(body) > limit:
            raise InvalidTokenResponse(
                f"token endpoint answered with more than {limit} bytes", status_code=response.status_code
            )
        return body
    chunks: list[bytes] = []
    size = 0
    # aclosing: leaving early must close the generator now, not at garbage collection.
    async with contextlib.aclosing(cast("AsyncGenerator[bytes, None]", response.aiter_raw())) as raw:
        async for chunk in raw:
            size += len(chunk)
            if size > limit:
                raise InvalidTokenResponse(
                    f"token endpoint answered with more than {limit} bytes", status_code=response.status_code
                )
            chunks.append(chunk)
    body = b"".join(chunks)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in _ZLIB_WBITS:
        raise InvalidTokenResponse(
            f"token endpoint answered with unsupported Content-Encoding {encoding[:20]!r}",
            status_code=response.status_code,
        )
    try:
        decoder = zlib.decompressobj(_ZLIB_WBITS[encoding])
        decoded = decoder.decompress(body, limit + 1)
    except zlib.error:
        raise InvalidTokenResponse(
            "token endpoint answered with a body that cannot be decoded", status_code=response.status_code
        ) from None
    if len(decoded) > limit or decoder.unconsumed_tail:
        raise InvalidTokenResponse(
            f"token endpoint answered with more than {limit} bytes once decompressed",
            status_code=response.status_code,
        )
    return decoded


#: zlib window bits per Content-Encoding: gzip header, zlib header (RFC 9110's "deflate").
_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
