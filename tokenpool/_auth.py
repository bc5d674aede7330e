"""httpx authentication backed by a pool: a bearer header, the provider's headers, one replay on 401.

The recovery from a 401 is written once, as a sans-IO step generator
(:func:`unauthorized_flow`): it never touches a socket, a pool or a clock, it
only says what to do next (get a token, send this request, invalidate that
token, count a 401) and receives the outcome.  Three drivers perform the
steps:

- :class:`TokenAuth` with awaits, for ``httpx.AsyncClient`` on the pool's own loop;
- :class:`SyncTokenAuth` with blocking calls, for ``httpx.Client`` through a
  ``BlockingTokenPool`` or the gevent pool;
- ``tokenpool.contrib.locust.RequestsAuth``, for requests (Locust's ``HttpUser``).

What differs between request types (where the URL and headers live, how a
body is sent twice) sits behind a small :class:`RequestAdapter`.

Request bodies are not buffered up front.  A streaming body (a generator, an
async iterator, a file) is recorded while it is sent, up to
:data:`MAX_REPLAY_BODY_BYTES`; after a 401 it is replayed from that recording
when the whole body fit.  A larger body cannot be replayed: the 401 is returned
as it is, logged as ``token.replay_skipped`` and counted as unauthorized
without a retry.  Bytes bodies (``content=b"…"``, ``json=``, ``data=``) replay
as they are.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeAlias, TypeVar

import httpx
import structlog

from ._exceptions import InsecureTransportError
from ._urls import is_loopback_host

if TYPE_CHECKING:
    from ._pool import TokenPool
    from ._token import Token

__all__ = [
    "MAX_REPLAY_BODY_BYTES",
    "NEED_TOKEN",
    "BodyRecording",
    "CannotReplay",
    "HttpxAdapter",
    "Invalidate",
    "NeedToken",
    "ReplaySkipped",
    "Report",
    "RequestAdapter",
    "SendRequest",
    "Step",
    "SyncSteps",
    "SyncTokenAuth",
    "TokenAuth",
    "refuse_plain_http",
    "unauthorized_flow",
]

#: The largest streaming request body that is recorded while it is sent, so
#: that it can be replayed after a 401 (1 MiB).  A longer body is still sent
#: in full, but only the 401 comes back: memory per request stays bounded
#: however large the uploads are.  Bytes bodies are not affected.
MAX_REPLAY_BODY_BYTES = 1024 * 1024

_log = structlog.get_logger("tokenpool")

RequestT = TypeVar("RequestT")


# -- the steps ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedToken:
    """Get a usable token for the provider (fast path first); send the :class:`Token` back."""


#: The one instance: the step carries no data.
NEED_TOKEN = NeedToken()


@dataclass(frozen=True, slots=True)
class SendRequest(Generic[RequestT]):
    """Send *request*; send its response back (anything with a ``status_code``)."""

    request: RequestT


@dataclass(frozen=True, slots=True)
class Invalidate:
    """Tell the pool that *token* was refused; send back what ``invalidate`` returned."""

    token: Token


@dataclass(frozen=True, slots=True)
class Report:
    """Count and log an API 401 (``report_unauthorized``); *retried*: a replay is being sent now."""

    retried: bool


@dataclass(frozen=True, slots=True)
class ReplaySkipped:
    """Log that the 401 cannot be replayed and why (never the body); send back ``None``."""

    reason: str


Step: TypeAlias = NeedToken | SendRequest[RequestT] | Invalidate | Report | ReplaySkipped


class CannotReplay(NamedTuple):
    """What :meth:`RequestAdapter.rewind` returns when the request cannot be sent again."""

    reason: str


class _HasStatus(Protocol):
    @property
    def status_code(self) -> int: ...


class RequestAdapter(Protocol[RequestT]):
    """What the flow needs to know about one kind of request."""

    def begin(self, request: RequestT) -> RequestT:
        """Refuse an insecure destination, make the body replayable; return the request to send."""
        ...

    def prepare(self, request: RequestT, token: Token) -> None:
        """Set ``Authorization`` from *token* and the provider's API headers."""
        ...

    def rewind(self, request: RequestT) -> RequestT | CannotReplay:
        """The request to send again (same body, headers still to prepare), or why there is none."""
        ...


def unauthorized_flow(
    request: RequestT, adapter: RequestAdapter[RequestT]
) -> Generator[Step[RequestT], Any, None]:
    """One API call with a pool's token, and at most one replay after a 401.

    Yields the steps for a driver to perform and receives their outcomes
    (see each step's docstring).  It never loops: a request is sent at most
    twice, and a second 401 is what the caller gets.

    After a 401 the token that was sent is invalidated: the pool drops it only
    if it is still its current one and refreshes once, so a thousand
    concurrent 401s cost one token request.  The pool may decline (the token
    is younger than its cooldown after an earlier 401-driven refresh, when the
    API rejects every token) and then hand back that very token: replaying it
    would only fetch another 401, so the 401 is returned as it is.

    Args:
        request: The outgoing request.
        adapter: How to read and change requests of its type.
    """
    request = adapter.begin(request)
    token: Token = yield NEED_TOKEN
    adapter.prepare(request, token)
    response: _HasStatus = yield SendRequest(request)
    if response.status_code != 401:
        return
    try:
        # Invalidate whatever becomes of the replay: the token was refused, and
        # the next call should not be sent with it.  What invalidate returns
        # does not matter here; the identity check below decides.
        yield Invalidate(token)
        again = adapter.rewind(request)
        if isinstance(again, CannotReplay):
            yield ReplaySkipped(again.reason)
            yield Report(retried=False)
            return
        fresh: Token = yield NEED_TOKEN
    except Exception:
        # No new token (the refresh failed, the pool closed…): the 401 was seen
        # and nothing is replayed; the caller gets the error that says why.
        yield Report(retried=False)
        raise
    if fresh is token:
        yield Report(retried=False)
        return
    adapter.prepare(again, fresh)
    # Counted here, when the replay is certainly going out, not before the token was fetched.
    yield Report(retried=True)
    response = yield SendRequest(again)
    if response.status_code == 401:
        yield Report(retried=False)


# -- drivers --------------------------------------------------------------------------------------


def _log_replay_skipped(name: str, reason: str) -> None:
    _log.warning("token.replay_skipped", provider=name, reason=reason)


class SyncSteps:
    """Performs a flow's steps with blocking calls (``BlockingTokenPool``, the gevent pool, Locust).

    Args:
        name: The provider.
        get_token: A usable token, waiting only when there is none (the
            facades' ``token``: the pool's ``usable_token`` first).
        invalidate: The pool's ``invalidate``.
        report_401: The pool's ``report_unauthorized``, with *retried* positional.
    """

    __slots__ = ("_get_token", "_invalidate", "_name", "_report_401")

    def __init__(
        self,
        name: str,
        get_token: Callable[[str], Token],
        invalidate: Callable[[str, Token], bool],
        report_401: Callable[[str, bool], None],
    ) -> None:
        self._name = name
        self._get_token = get_token
        self._invalidate = invalidate
        self._report_401 = report_401

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
            return self._get_token(name)
        if isinstance(step, Invalidate):
            return self._invalidate(name, step.token)
        if isinstance(step, Report):
            self._report_401(name, step.retried)
        else:
            _log_replay_skipped(name, step.reason)
        return None


class TokenAuth(httpx.Auth):
    """Adds provider *name*'s token to each request of an ``httpx.AsyncClient``.

    On a 401 it invalidates the token it sent (only if that token is still the
    pool's current one, so a thousand concurrent 401s cause one refresh), gets
    a fresh token and replays the request once.  A second 401 is returned to
    the caller as it is: no loops.  Streaming bodies are recorded while they
    are sent, up to :data:`MAX_REPLAY_BODY_BYTES`, so the replay carries the
    same bytes; a longer one is not replayed (see the module docstring).
    """

    # False (httpx's default), said out loud: this auth records streaming
    # bodies as they are sent instead of having httpx read them all first.
    requires_request_body = False

    def __init__(self, pool: TokenPool, name: str) -> None:
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

    Args:
        name: The provider.
        get_token: The facade's ``token`` (a usable token, waiting only when there is none).
        invalidate: The facade's ``invalidate``.
        api_headers: The pool's ``api_headers``.
        report_401: Counts an API 401: ``report_401(name, retried)``.
    """

    requires_request_body = False  # streaming bodies are recorded as they are sent (see TokenAuth)

    def __init__(
        self,
        name: str,
        get_token: Callable[[str], Token],
        invalidate: Callable[[str, Token], bool],
        api_headers: Callable[[str], Mapping[str, str]],
        report_401: Callable[[str, bool], None],
    ) -> None:
        self._name = name
        self._steps = SyncSteps(name, get_token, invalidate, report_401)
        self._adapter = HttpxAdapter(lambda: api_headers(name), asynchronous=False)

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


class BodyRecording:
    """The bytes of a streaming body as it went out, kept while they fit in the replay bound."""

    __slots__ = ("_chunks", "_size", "complete", "overflowed")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        #: The source ran out: everything it had was sent (and seen here).
        self.complete = False
        #: More than MAX_REPLAY_BODY_BYTES went out; nothing is kept.
        self.overflowed = False

    def add(self, chunk: bytes) -> None:
        if self.overflowed:
            return
        self._size += len(chunk)
        if self._size > MAX_REPLAY_BODY_BYTES:
            self.overflowed = True
            self._chunks = []  # let the memory go now, not when the request ends
        else:
            self._chunks.append(chunk)

    def replayable(self) -> bytes | CannotReplay:
        """The whole body, or why it cannot be sent again."""
        if self.overflowed:
            return CannotReplay("body_too_large")
        if not self.complete:
            # Answered before the body was read to its end: the rest is
            # still in the source, which must not be read twice.
            return CannotReplay("body_not_fully_sent")
        return b"".join(self._chunks)


class _SyncBodyTee(httpx.SyncByteStream):
    """Passes a sync request stream through unchanged while recording it."""

    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self._inner = inner
        self.recording = BodyRecording()

    def __iter__(self) -> Iterator[bytes]:
        recording = self.recording
        for chunk in self._inner:
            recording.add(chunk)
            yield chunk
        recording.complete = True

    def close(self) -> None:
        self._inner.close()


class _AsyncBodyTee(httpx.AsyncByteStream):
    """Passes an async request stream through unchanged while recording it."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner
        self.recording = BodyRecording()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        recording = self.recording
        async for chunk in self._inner:
            recording.add(chunk)
            yield chunk
        recording.complete = True

    async def aclose(self) -> None:
        await self._inner.aclose()


class HttpxAdapter:
    """:class:`RequestAdapter` for ``httpx.Request``.

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
                    request.stream = _AsyncBodyTee(stream)
            elif isinstance(stream, httpx.SyncByteStream):
                request.stream = _SyncBodyTee(stream)
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
        if isinstance(stream, _SyncBodyTee | _AsyncBodyTee):
            body = stream.recording.replayable()
            if isinstance(body, CannotReplay):
                return body
            # The same framing headers (chunked or Content-Length) fit the same bytes.
            request.stream = httpx.ByteStream(body)
            return request
        return CannotReplay("body_not_replayable")
