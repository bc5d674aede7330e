"""Locust: one token pool per Locust process, shared by every simulated user in it.

In your locustfile::

    import os
    from locust import HttpUser, constant, task
    from tokenpool.contrib import locust as tokenpool_locust
    from tokenpool.providers import ClientCredentials

    def providers():  # runs in each Locust process that runs users
        return {
            "acme": ClientCredentials(
                token_url="https://auth.acme.example/oauth/token",
                client_id=os.environ["ACME_CLIENT_ID"],
                client_secret=os.environ["ACME_CLIENT_SECRET"],
            )
        }

    tokenpool_locust.install(providers, max_in_flight=100)
    acme = tokenpool_locust.requests_auth("acme")

    class Payouts(HttpUser):
        wait_time = constant(0.1)

        @task
        def pay(self) -> None:
            with tokenpool_locust.in_flight():
                self.client.post("/payouts", json={"amount": 1}, auth=acme)

Ten thousand users then cost one token request per refresh window per Locust
process, instead of one per user (or one per request).  Or from a TOML file
(the format of ``tokenpool check``): ``tokenpool_locust.install(config="tokenpool.toml")``;
a ``[pool.store]`` table there makes all the Locust processes share one token
per client.

- The pool opens on Locust's ``init`` event in every process that runs users
  (the only process, or each worker with ``--processes``/``--worker``; the
  master runs no users and opens none), after Locust's ``fork()``, and closes
  on ``quitting``.  It waits for the first tokens before users start
  (``warm_up="wait"``).
- Locust runs on gevent.  The pool's event loop runs on a real OS thread
  (see :class:`GeventTokenPool`); greenlets waiting for a token yield to the
  others, and a fresh token is served without leaving the greenlet.
- :func:`requests_auth` is for ``HttpUser`` (requests): it sets the headers
  and replays a request once, with a new token, after a 401.  :func:`headers`
  is for ``FastHttpUser`` and other clients (no replay); :func:`auth` is an
  ``httpx.Auth`` for ``httpx.Client``.
- ``max_in_flight`` bounds the API calls in flight in the process, in arrival
  order, through :func:`in_flight`.  Unbounded, a load generator measures its
  own HTTP client's queueing rather than the system under test: httpcore's
  pool, for one, slows down sharply with thousands of queued requests.
  Report the bound with your figures.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from .._auth import SyncSteps, refuse_plain_http
from .._auth_flow import CannotReplay, Step, unauthorized_flow
from .._exceptions import ConfigurationError
from .._extras import require_extra
from .._replay import BodyRecording
from .._token import Token
from ._common import PoolRecipe, ProvidersFactory, log_closed, log_opened, logger_from, pool_recipe
from ._gevent import GeventTokenPool

with require_extra("locust", feature="tokenpool.contrib.locust"):
    import gevent.lock
    import locust
    import requests
    from locust.env import Environment
    from locust.event import Events
    from locust.runners import MasterRunner, Runner
    from requests.auth import AuthBase

__all__ = [
    "GeventTokenPool",
    "RequestsAuth",
    "auth",
    "get_pool",
    "headers",
    "in_flight",
    "install",
    "requests_auth",
    "shutdown",
    "token",
]

_INTEGRATION = "locust"


@dataclass(slots=True)
class _State:
    """Module state; per process (a forked child compares ``pid``)."""

    recipe: PoolRecipe | None = None
    #: The keyword arguments given to install() (the logger comes from there).
    pool_options: dict[str, Any] = field(default_factory=dict)
    pool: GeventTokenPool | None = None
    pid: int = 0
    slots: gevent.lock.Semaphore | None = None
    max_in_flight: int | None = None
    events: Events | None = None


_state = _State()
# Users are greenlets: a gevent lock makes the second one wait while the first opens the pool.
_open_lock = gevent.lock.RLock()


def install(
    providers: ProvidersFactory | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    max_in_flight: int | None = None,
    events: Events | None = None,
    **pool_options: Any,
) -> None:
    """Share one token pool between all users of each Locust process.

    Call it at the top level of the locustfile.

    Args:
        providers: A callable returning ``{name: provider}``; runs in each
            Locust process that runs users, when its pool opens.
        config: Instead of *providers*: a TOML file (the format of
            ``tokenpool check``) with the providers and ``[pool]`` options,
            ``[pool.store]`` included; read in each Locust process that runs
            users, when its pool opens.
        max_in_flight: Bound for :func:`in_flight` (API calls in flight per
            process); ``None`` leaves it unbounded.
        events: Locust's event hooks (default ``locust.events``).
        **pool_options: :class:`~tokenpool.TokenPool` keyword arguments
            (``store=``…; they override the file's ``[pool]``).
    """
    recipe = pool_recipe(
        providers, config, defaults={"warm_up": "wait"}, options=pool_options, call="install(providers)"
    )
    if max_in_flight is not None and max_in_flight < 1:
        raise ConfigurationError("max_in_flight must be at least 1 (or None for no bound)")
    if _state.recipe is not None:
        raise ConfigurationError("tokenpool.contrib.locust is already installed in this process")
    hooks = events if events is not None else locust.events
    _state.recipe = recipe
    _state.pool_options = dict(pool_options)
    _state.max_in_flight = max_in_flight
    _state.events = hooks
    hooks.init.add_listener(_on_init)  # type: ignore[no-untyped-call]  # untyped in locust
    hooks.quitting.add_listener(_on_quitting)  # type: ignore[no-untyped-call]


def uninstall() -> None:
    """Close this process's pool and remove the event listeners (mainly for tests)."""
    shutdown()
    hooks = _state.events
    if hooks is not None:
        hooks.init.remove_listener(_on_init)  # type: ignore[no-untyped-call]  # untyped in locust
        hooks.quitting.remove_listener(_on_quitting)  # type: ignore[no-untyped-call]
    _state.recipe = None
    _state.events = None


def get_pool() -> GeventTokenPool:
    """This process's pool (opened on ``init``; opened here if used before that)."""
    pool = _state.pool
    if pool is not None and _state.pid == os.getpid():
        return pool
    return _open(reason="first use")


def token(name: str, *, timeout: float | None = None) -> Token:
    """A usable token for provider *name*."""
    return get_pool().token(name, timeout=timeout)


def headers(name: str) -> dict[str, str]:
    """``Authorization`` and the provider's headers, e.g. for ``FastHttpUser`` (no 401 replay)."""
    return get_pool().headers(name)


def auth(name: str) -> httpx.Auth:
    """An ``httpx.Auth`` for an ``httpx.Client`` used inside Locust users."""
    return get_pool().auth(name)


@functools.cache
def requests_auth(name: str) -> RequestsAuth:
    """A requests auth for ``HttpUser.client`` calls (``auth=``); may be created at import time."""
    return RequestsAuth(name)


@contextlib.contextmanager
def in_flight() -> Iterator[None]:
    """Hold one of the process's ``max_in_flight`` slots around an API call (FIFO).

    Without ``max_in_flight`` this does nothing.
    """
    slots = _state.slots
    if slots is None:
        if _state.max_in_flight is None:
            yield
            return
        slots = _state.slots = gevent.lock.Semaphore(_state.max_in_flight)
    with slots:
        yield


def shutdown() -> None:
    """Close this process's pool.  Idempotent; runs on Locust's ``quitting`` event."""
    pool, _state.pool = _state.pool, None
    if pool is None or _state.pid != os.getpid():
        return
    pool.close()
    log_closed(logger_from(_state.pool_options), _INTEGRATION, pool.statistics())


class RequestsAuth(AuthBase):
    """Bearer header and provider headers on a requests call, one replay after a 401.

    The 401 flow is the one ``pool.auth()`` runs for httpx
    (``tokenpool._auth_flow.unauthorized_flow``): the rejected token is
    invalidated, the request is replayed once with a new token, and a second
    401 is returned as it is.  A generator or iterator body is recorded while
    it is sent (up to ``MAX_REPLAY_BODY_BYTES``, 1 MiB) and replayed from that
    recording; a seekable file body is rewound; a body that cannot be sent
    again leaves the 401 as the answer, logged as ``token.replay_skipped``.

    It looks the pool up at call time, so it can be created before the pool
    opens (at import time of the locustfile).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<RequestsAuth provider={self.name!r}>"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        pool = get_pool()
        name = self.name
        steps = SyncSteps(pool, name)
        flow = unauthorized_flow(request, _PreparedRequestAdapter(pool, name))
        # requests sends the first attempt itself: run the flow up to it now,
        # and resume it from the response hook.
        outgoing = steps.advance(flow, None)
        if outgoing is None:  # pragma: no cover - the flow always sends once
            raise RuntimeError("the 401 flow ended without a request to send")
        outgoing.register_hook("response", functools.partial(_after, flow=flow, steps=steps))
        return outgoing


def _after(
    response: requests.Response,
    *,
    flow: Generator[Step[requests.PreparedRequest], Any, None],
    steps: SyncSteps,
    **kwargs: Any,
) -> requests.Response:
    """The response hook: resume the flow with *response*; send the replay if it asks for one."""
    try:
        outgoing = steps.advance(flow, response)
        while outgoing is not None:  # at most once: the flow never loops
            # Release the first answer's connection, then replay on the same adapter.
            response.content  # noqa: B018 - reading the body lets the connection be reused
            response.close()
            replayed: requests.Response = response.connection.send(outgoing, **kwargs)
            replayed.history.append(response)
            replayed.request = outgoing
            response = replayed
            outgoing = steps.advance(flow, response)
    finally:
        flow.close()
    return response


#: Block size for reading an unseekable file body (urllib3's default too).
_READ_BLOCK = 16 * 1024


class _RecordedBody:
    """A requests body (iterator, unseekable file) passed through unchanged while it is recorded."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.recording = BodyRecording()

    def __iter__(self) -> Iterator[bytes]:
        recording = self.recording
        for chunk in self._chunks():
            # urllib3 would encode text the same way when it sends it.
            data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
            recording.add(data)
            yield data
        recording.complete = True

    def _chunks(self) -> Iterator[bytes | str]:
        source = self._source
        read = getattr(source, "read", None)
        if read is None:
            yield from source
            return
        while block := read(_READ_BLOCK):
            yield block


class _PreparedRequestAdapter:
    """The flow's ``RequestAdapter`` for ``requests.PreparedRequest``."""

    __slots__ = ("_name", "_pool")

    def __init__(self, pool: GeventTokenPool, name: str) -> None:
        self._pool = pool
        self._name = name

    def begin(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = httpx.URL(request.url or "")
        refuse_plain_http(url.scheme, url.host)
        body = request.body
        # Bytes and text can be sent again as they are; a seekable file is
        # rewound for a replay (as requests does for a redirect); anything
        # else can be read once only, so it is recorded while it goes out.
        if body is not None and not isinstance(body, bytes | str) and not hasattr(body, "seek"):
            request.body = _RecordedBody(body)
        return request

    def prepare(self, request: requests.PreparedRequest, token: Token) -> None:
        request.headers["Authorization"] = token.authorization
        extra = self._pool.pool.api_headers(self._name)
        if extra:
            request.headers.update(extra)

    def rewind(self, request: requests.PreparedRequest) -> requests.PreparedRequest | CannotReplay:
        retry = request.copy()
        # The copy shares the hooks dict: give the replay none, so that its
        # answer does not re-enter the flow.
        retry.hooks = {"response": []}
        body = request.body
        if isinstance(body, _RecordedBody):
            data = body.recording.replayable()
            if isinstance(data, CannotReplay):
                return data
            retry.body = data
        elif body is not None and not isinstance(body, bytes | str):
            try:
                requests.utils.rewind_body(retry)
            except requests.exceptions.UnrewindableBodyError:
                return CannotReplay("body_not_replayable")
        return retry


# -- internals ------------------------------------------------------------------------------------


def _open(*, reason: str) -> GeventTokenPool:
    recipe = _state.recipe
    if recipe is None:
        raise ConfigurationError(
            "tokenpool.contrib.locust is not installed: call install(providers) in the locustfile"
        )
    with _open_lock:
        pool = _state.pool
        if pool is not None and _state.pid == os.getpid():
            return pool
        # A pool inherited through fork() (other pid) is dropped untouched: its
        # thread does not exist here.
        _state.pool = None
        providers, options = recipe.build()
        pool = GeventTokenPool(providers, **options).start()
        _state.pool, _state.pid = pool, os.getpid()
    log_opened(logger_from(_state.pool_options), _INTEGRATION, list(providers), reason=reason)
    return pool


def _on_init(environment: Environment, runner: Runner | None = None, **_: Any) -> None:
    if isinstance(runner, MasterRunner):
        return  # the master runs no users
    _open(reason="init")


def _on_quitting(environment: Environment, **_: Any) -> None:
    shutdown()
