"""httpx authentication backed by a pool: a bearer header, the provider's headers, one replay on 401.

The recovery from a 401 is written once, as a sans-IO step generator
(:func:`~tokenpool._auth_flow.unauthorized_flow`); the drivers here perform its
steps:

- :class:`TokenAuth` with awaits, for ``httpx.AsyncClient`` on the pool's own loop;
- :class:`SyncTokenAuth` with blocking calls (:class:`SyncSteps`), for
  ``httpx.Client`` through a ``BlockingTokenPool`` or the gevent pool;
- ``tokenpool.contrib.locust.RequestsAuth`` (also with :class:`SyncSteps`),
  for requests (Locust's ``HttpUser``).

:class:`HttpxAdapter` is what the flow needs to know about an ``httpx.Request``;
streaming bodies are recorded as they are sent (:mod:`tokenpool._replay`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from ._auth_flow import (
    CannotReplay,
    Invalidate,
    NeedToken,
    ReplaySkipped,
    Report,
    RequestT,
    SendRequest,
    Step,
    unauthorized_flow,
)
from ._exceptions import InsecureTransportError
from ._replay import AsyncBodyTee, SyncBodyTee
from ._urls import is_loopback_host
from .logging import library_logger

if TYPE_CHECKING:
    from ._token import Token

__all__ = [
    "AuthPool",
    "HttpxAdapter",
    "SyncSteps",
    "SyncTokenAuth",
    "TokenAuth",
    "refuse_plain_http",
]

_log = library_logger()


class AuthPool(Protocol):
    """What :class:`TokenAuth` calls on its pool: part of :class:`~tokenpool.TokenPool`'s public API."""

    async def token(self, name: str, *, timeout: float | None = None) -> Token: ...

    async def invalidate(self, name: str, token: Token) -> bool: ...

    def report_unauthorized(self, name: str, *, retried: bool) -> None: ...

    def api_headers(self, name: str) -> Mapping[str, str]: ...


class SyncAuthPool(Protocol):
    """What :class:`SyncTokenAuth` calls on its pool: :class:`~tokenpool.BlockingTokenPool`'s public API.

    ``token`` returns a usable token, waiting only when there is none.
    """

    def token(self, name: str, *, timeout: float | None = None) -> Token: ...

    def invalidate(self, name: str, token: Token) -> bool: ...

    def report_unauthorized(self, name: str, *, retried: bool) -> None: ...

    def api_headers(self, name: str) -> Mapping[str, str]: ...


# -- drivers --------------------------------------------------------------------------------------


def _log_replay_skipped(name: str, reason: str) -> None:
    _log.warning("token.replay_skipped", provider=name, reason=reason)


class SyncSteps:
    """Performs a flow's steps with blocking calls (``BlockingTokenPool``, the gevent pool, Locust).

    Args:
        pool: The blocking pool (its ``token`` waits only when there is no usable token).
        name: The provider.
    """

    __slots__ = ("_name", "_pool")

    def __init__(self, pool: SyncAuthPool, name: str) -> None:
        self._pool = pool
        self._name = name

    def advance(self, flow: Generator[Step[RequestT], Any, None], outcome: Any) -> RequestT | None:
        """Send *outcome* into *flow* and perform its steps up to the next request to send.

        Returns that request, or ``None`` once the flow has finished.  An
        exception from a step is thrown into the flow, which counts the 401
        and lets it propagate.
        """
        try:
            step = flow.send(outcome)
            while not isinstance(step, SendRequest):
                try:
                    result = self._perform(step)
                except Exception as exc:
                    step = flow.throw(exc)
                else:
                    step = flow.send(result)
        except StopIteration:
            return None
        return step.request

    def _perform(self, step: NeedToken | Invalidate | Report | ReplaySkipped) -> Any:
        name = self._name
        if isinstance(step, NeedToken):
            return self._pool.token(name)
        if isinstance(step, Invalidate):
            return self._pool.invalidate(name, step.token)
        if isinstance(step, Report):
            self._pool.report_unauthorized(name, retried=step.retried)
        else:
            _log_replay_skipped(name, step.reason)
        return None


class TokenAuth(httpx.Auth):
    """Adds provider *name*'s token to each request of an ``httpx.AsyncClient``.

    On a 401 it invalidates the token it sent (only if that token is still the
    pool's current one, so a thousand concurrent 401s cause one refresh), gets
    a fresh token and replays the request once.  A second 401 is returned to
    the caller as it is: no loops.  Streaming bodies are recorded while they
    are sent, up to :data:`~tokenpool._replay.MAX_REPLAY_BODY_BYTES`, so the replay
    carries the same bytes; a longer one is not replayed (see :mod:`tokenpool._replay`).
    """

    # False (httpx's default), said out loud: this auth records streaming
    # bodies as they are sent instead of having httpx read them all first.
    requires_request_body = False

    def __init__(self, pool: AuthPool, name: str) -> None:
        self._pool = pool
        self._name = name
        self._adapter = HttpxAdapter(lambda: pool.api_headers(name), asynchronous=True)

    def __repr__(self) -> str:
        return f"<TokenAuth provider={self._name!r}>"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError(
            "TokenPool.auth() is for httpx.AsyncClient; use BlockingTokenPool(...).auth() with httpx.Client"
        )

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = unauthorized_flow(request, self._adapter)
        try:
            outgoing = await self._advance(flow, None)
            while outgoing is not None:  # at most twice: the flow never loops
                response = yield outgoing
                outgoing = await self._advance(flow, response)
        finally:
            flow.close()

    async def _advance(
        self, flow: Generator[Step[httpx.Request], Any, None], outcome: Any
    ) -> httpx.Request | None:
        """The async twin of :meth:`SyncSteps.advance`."""
        pool, name = self._pool, self._name
        try:
            step = flow.send(outcome)
            while not isinstance(step, SendRequest):
                result: Any = None
                try:
                    if isinstance(step, NeedToken):
                        # The pool's hit path: returns at once, without suspending, once warm.
                        result = await pool.token(name)
                    elif isinstance(step, Invalidate):
                        result = await pool.invalidate(name, step.token)
                    elif isinstance(step, Report):
                        pool.report_unauthorized(name, retried=step.retried)
                    else:
                        _log_replay_skipped(name, step.reason)
                except Exception as exc:
                    step = flow.throw(exc)
                else:
                    step = flow.send(result)
        except StopIteration:
            return None
        return step.request


class SyncTokenAuth(httpx.Auth):
    """The same flow as :class:`TokenAuth` for ``httpx.Client``, through a blocking pool.

    ``BlockingTokenPool.auth(name)`` builds one; so does ``SyncTokenAuth(pool, name)``.

    Args:
        pool: A :class:`~tokenpool.BlockingTokenPool` (or anything with its
            ``token``, ``invalidate``, ``report_unauthorized`` and ``api_headers``).
        name: The provider.
    """

    requires_request_body = False  # streaming bodies are recorded as they are sent (see TokenAuth)

    def __init__(self, pool: SyncAuthPool, name: str) -> None:
        self._name = name
        self._steps = SyncSteps(pool, name)
        self._adapter = HttpxAdapter(lambda: pool.api_headers(name), asynchronous=False)

    def __repr__(self) -> str:
        return f"<SyncTokenAuth provider={self._name!r}>"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = unauthorized_flow(request, self._adapter)
        steps = self._steps
        try:
            outgoing = steps.advance(flow, None)
            while outgoing is not None:  # at most twice: the flow never loops
                response = yield outgoing
                outgoing = steps.advance(flow, response)
        finally:
            flow.close()

    def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        # A plain method: httpx calls it first, so the mistake surfaces at once.
        raise RuntimeError(
            "BlockingTokenPool.auth() is for httpx.Client; use TokenPool.auth() with AsyncClient"
        )


# -- httpx requests -------------------------------------------------------------------------------


def refuse_plain_http(scheme: str, host: str) -> None:
    """Raise :class:`InsecureTransportError` for a bearer token over plain http to a non-loopback host."""
    if scheme != "https" and not is_loopback_host(host):
        raise InsecureTransportError(f"refusing to send a bearer token over plain http to {host}; use https")


class HttpxAdapter:
    """:class:`~tokenpool._auth_flow.RequestAdapter` for ``httpx.Request``.

    Args:
        api_headers: The provider's extra headers, looked up per request
            (``replace_provider`` may change them).
        asynchronous: Record async streams (``AsyncClient``) rather than sync ones.
    """

    __slots__ = ("_api_headers", "_asynchronous")

    def __init__(self, api_headers: Callable[[], Mapping[str, str]], *, asynchronous: bool) -> None:
        self._api_headers = api_headers
        self._asynchronous = asynchronous

    def begin(self, request: httpx.Request) -> httpx.Request:
        url = request.url
        refuse_plain_http(url.scheme, url.host)
        stream = request.stream
        # A ByteStream (bytes, json=, data=) can be sent any number of times.
        # A stream of the wrong kind for the client is left alone: httpx
        # rejects it itself, with its own message.
        if not isinstance(stream, httpx.ByteStream):
            if self._asynchronous:
                if isinstance(stream, httpx.AsyncByteStream):
                    request.stream = AsyncBodyTee(stream)
            elif isinstance(stream, httpx.SyncByteStream):
                request.stream = SyncBodyTee(stream)
        return request

    def prepare(self, request: httpx.Request, token: Token) -> None:
        headers = request.headers
        headers["Authorization"] = token.authorization
        extra = self._api_headers()
        if extra:
            headers.update(extra)

    def rewind(self, request: httpx.Request) -> httpx.Request | CannotReplay:
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):
            return request
        if isinstance(stream, SyncBodyTee | AsyncBodyTee):
            body = stream.recording.replayable()
            if isinstance(body, CannotReplay):
                return body
            # The same framing headers (chunked or Content-Length) fit the same bytes.
            request.stream = httpx.ByteStream(body)
            return request
        return CannotReplay("body_not_replayable")
