"""The recovery from a 401, written once: a sans-IO step generator and the steps it yields.

:func:`unauthorized_flow` never touches a socket, a pool or a clock: it only
says what to do next (get a token, send this request, invalidate that token,
count a 401) and receives the outcome.  The drivers that perform the steps
live in :mod:`tokenpool._auth` (``TokenAuth``, ``SyncTokenAuth``,
``SyncSteps``) and in ``tokenpool.contrib.locust`` (``RequestsAuth``).  What
differs between request types (where the URL and headers live, how a body is
sent twice) sits behind a small :class:`RequestAdapter`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeAlias, TypeVar

if TYPE_CHECKING:
    from ._token import Token

__all__ = [
    "NEED_TOKEN",
    "CannotReplay",
    "Invalidate",
    "NeedToken",
    "ReplaySkipped",
    "Report",
    "RequestAdapter",
    "RequestT",
    "SendRequest",
    "Step",
    "unauthorized_flow",
]

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
