"""What a cell does at instant *t*: pure decisions, no clock, no I/O, no randomness of its own.

The cell (``_cell.py``) holds the state and the single flight; it asks this
module *when* to send the next token request, *whether* an answer is a token
it may serve, *how long* to back off after a failure and *whether* a 401 may
cause a refresh.  Every function takes "now" and the random draws as
arguments, so tests pin every instant exactly.  The one exception is a
``Retry-After`` the adapter could only give as a wall-clock instant
(:attr:`TokenEndpointError.retry_at <tokenpool.TokenEndpointError.retry_at>`):
:func:`retry_delay` reads its *wall_clock* argument (``time.time`` by
default) to turn it into a wait, and only then.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ._exceptions import CredentialsRejected, InvalidTokenResponse, TokenEndpointError, TokenRequestError
from ._timing import RefreshPolicy
from ._token import Token, TokenResponse

__all__ = [
    "YOUNG_401_ALLOWANCE",
    "accept",
    "is_young_replacement",
    "last_chance",
    "may_refresh_on_401",
    "next_request_at",
    "retry_delay",
]


def next_request_at(token: Token | None, *, demand: bool, not_before: float) -> float:
    """When the next token request should go out (``inf``: stay idle until someone asks).

    *demand* means a caller is waiting or a 401 invalidated the token: as soon
    as the backoff allows.  Otherwise a cell with a token renews at its
    ``refresh_at``; a cell without one (lazy start, or a failure nobody waits
    for) stays idle.
    """
    if demand:
        wanted = -math.inf
    elif token is not None:
        wanted = token.refresh_at
    else:
        wanted = math.inf
    return max(wanted, not_before)


def accept(policy: RefreshPolicy, response: TokenResponse, *, sent_at: float, now: float, u: float) -> Token:
    """Stamp *response* into a servable :class:`Token`, or refuse it.

    The lifetime counts from the request's send time: *sent_at*, unless the
    source says the token was fetched earlier (``response.sent_at``, a token
    another process fetched), whose own time then wins.

    Raises:
        InvalidTokenResponse: the lifetime is below ``policy.min_lifetime``, or
            the token arrived with no usable time left (the request took
            longer than the token lives, or an adopted token is about to
            expire).  Never hand out what the API would refuse.
    """
    if response.expires_in < policy.min_lifetime:
        raise InvalidTokenResponse(
            f"token lifetime expires_in={response.expires_in:g} s is below the "
            f"{policy.min_lifetime:g} s floor (RefreshPolicy.min_lifetime)",
            hint="the token would expire before it could be used; check the provider's token settings",
        )
    origin = response.sent_at if response.sent_at is not None else sent_at
    token = policy.stamp(response, sent_at=origin, u=u)
    if now >= token.usable_until:
        raise InvalidTokenResponse(
            f"token arrived with no usable lifetime left ({now - origin:.3f} s after its request was sent, "
            f"lifetime {response.expires_in:g} s)",
        )
    return token


def retry_delay(
    policy: RefreshPolicy,
    error: TokenRequestError,
    *,
    failures: int,
    v: float,
    token: Token | None,
    now: float,
    wall_clock: Callable[[], float] = time.time,
) -> float:
    """Seconds to wait before the next attempt after *failures* consecutive failures.

    Capped exponential backoff with full jitter (*v* is a fresh draw in
    ``[0, 1)``), never less than the endpoint's ``Retry-After``, slow after
    rejected credentials.  A plain backoff step never jumps past the moment
    the current *token* stops being served: the last retry goes out just
    before it (``min(2 s, 1 % of L)`` ahead).

    A ``Retry-After`` given as an instant (``error.retry_at``, Unix seconds)
    is measured from ``wall_clock()``; *now* is monotonic and cannot be.
    """
    retry_after = _retry_after(error, wall_clock)
    rejected = isinstance(error, CredentialsRejected)
    delay = policy.backoff(failures, v, retry_after=retry_after, credentials_rejected=rejected)
    if token is not None and retry_after is None and not rejected:
        last = last_chance(token)
        if now < last < now + delay:
            delay = last - now
    return delay


def _retry_after(error: TokenRequestError, wall_clock: Callable[[], float]) -> float | None:
    """The endpoint's ``Retry-After`` in seconds from now, if it gave one."""
    if not isinstance(error, TokenEndpointError):
        return None
    if error.retry_after is None and error.retry_at is not None:
        return max(0.0, error.retry_at - wall_clock())
    return error.retry_after


def last_chance(token: Token) -> float:
    """The last moment to ask for a replacement of *token* while it is still served.

    ``min(2 s, 1 % of L)`` before ``usable_until``: a backoff step or a
    deferred renewal never waits past it.
    """
    return token.usable_until - min(2.0, 0.01 * token.expires_in)


#: Young replacements refused by the API that still get a refresh before the cooldown holds.
#: One: a revocation right after a 401-driven refresh is real and must heal; a second
#: refusal in a row of a brand-new token means the API rejects every token.
YOUNG_401_ALLOWANCE = 1


def may_refresh_on_401(
    policy: RefreshPolicy, token: Token, *, reissued: bool, strikes: int, now: float
) -> bool:
    """Whether a 401 for the current *token* may trigger a refresh.

    *reissued*: the token was itself fetched because of a 401.  *strikes*: how
    many such young replacements in a row were already refused and replaced.
    No refresh while the token is a young replacement (younger than the
    cooldown) and the allowance of :data:`YOUNG_401_ALLOWANCE` is spent: the
    API refuses every brand-new token, so another one would be refused too.
    A proactively renewed token, or one older than the cooldown, may always be
    replaced (a revocation is real).
    """
    if not reissued or now - token.sent_at >= policy.cooldown(token.expires_in):
        return True
    return strikes < YOUNG_401_ALLOWANCE


def is_young_replacement(policy: RefreshPolicy, token: Token, *, reissued: bool, now: float) -> bool:
    """Whether a 401 for *token* counts as a strike (see :func:`may_refresh_on_401`)."""
    return reissued and now - token.sent_at < policy.cooldown(token.expires_in)
