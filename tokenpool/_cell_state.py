"""A cell's state: its token, its flight, its counters and its health, as everyone who reads a cell sees it.

The pool's hit path reads ``usable_until`` and ``token`` and counts ``hits``;
the scheduler reads ``due`` and ``sending``; statistics, the metrics fold and
the observer read the counters and the health.  None of them changes a
token: :class:`~tokenpool._cell.Cell`, built on :class:`CellState`, is what
does (the single flight), so the readers depend on this module only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ._clock import Clock
    from ._exceptions import TokenRequestError
    from ._token import Token
    from .providers import Provider

__all__ = ["NO_HEADERS", "CellState", "Flight"]

NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class Flight:
    """One token request's outcome, shared by everyone waiting on it."""

    __slots__ = ("done", "error", "provider", "token")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.token: Token | None = None
        self.error: BaseException | None = None
        #: The settings the request was built from (``None`` until it is sent).
        self.provider: Provider | None = None


class CellState:
    """What one provider's cell in one worker holds, and what it shows (see the module docstring).

    Args:
        name: The pool's name for the provider.
        provider: The adapter (settings) to fetch with.
        clock: The pool's clock.
        group: The metrics label value for this cell.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_flight",
        "_last_error",
        "_not_before",
        "api_headers",
        "due",
        "folded_hits",
        "folded_misses",
        "foreign_hits",
        "group",
        "hits",
        "misses",
        "name",
        "provider",
        "requests",
        "sending",
        "token",
        "usable_until",
        "waiting",
    )

    def __init__(self, name: str, provider: Provider, *, clock: Clock, group: str) -> None:
        self.name = name
        self.provider = provider
        self.group = group
        #: The provider's extra API headers, built once (the auth flow reads them per request).
        self.api_headers: Mapping[str, str] = dict(provider.api_headers()) or NO_HEADERS
        #: The current token, possibly stale or expired; ``None`` before the first one.
        self.token: Token | None = None
        #: ``token.usable_until`` (``-inf`` without a token): the hit path reads one attribute.
        self.usable_until = -math.inf
        #: When the scheduler should start the next attempt (``inf``: not scheduled).
        self.due = math.inf
        #: An attempt task is running (set before it starts, cleared when it ends).
        self.sending = False
        #: Plain counters read by the metrics fold (cheaper than a Prometheus inc()).
        self.hits = 0
        #: Hits served through ``TokenPool.usable_token`` (facades on other threads).
        self.foreign_hits = 0
        self.misses = 0
        self.folded_hits = 0
        self.folded_misses = 0
        self.waiting = 0
        #: Token requests started by this cell (successful or not).
        self.requests = 0
        self._clock = clock
        self._flight: Flight | None = None
        self._failures = 0
        self._not_before = -math.inf
        self._last_error: TokenRequestError | None = None

    @property
    def failures(self) -> int:
        """Consecutive failed token requests (0 when healthy)."""
        return self._failures

    @property
    def last_error(self) -> TokenRequestError | None:
        return self._last_error

    @property
    def retry_at(self) -> float:
        """Earliest instant a next request may go out after failures (``-inf`` when healthy)."""
        return self._not_before

    @property
    def refreshing(self) -> bool:
        return self.sending or self._flight is not None

    @property
    def clock(self) -> Clock:
        return self._clock

    def usable(self, now: float) -> Token | None:
        token = self.token
        return token if token is not None and now < token.usable_until else None

    def _set_token(self, token: Token | None) -> None:
        self.token = token
        self.usable_until = -math.inf if token is None else token.usable_until
