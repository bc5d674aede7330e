"""Tokens: what a provider answered (:class:`TokenResponse`) and what the pool serves (:class:`Token`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NoReturn

__all__ = ["Token", "TokenResponse"]


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A token endpoint's answer, parsed and validated, with no notion of time.

    Provider adapters return this; the pool's cell stamps it with the moment
    the request was sent and the refresh policy to make a :class:`Token`.

    Attributes:
        access_token: The bearer credential (never shown in ``repr``).
        token_type: Normalised to ``"Bearer"``.
        expires_in: Lifetime in seconds as the provider returned it (or the
            provider's documented default when the field was absent).
        scope: Granted scopes, if the provider said.
        sent_at: When the request that obtained this token was sent, on the
            pool's clock, if that was not the request the cell just made: a
            token source that hands out a token another process fetched (the
            fleet store) sets it, so the cell schedules from the token's own
            times rather than from "now".  Adapters leave it ``None``.
    """

    access_token: str = field(repr=False)
    expires_in: float
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a password
    scope: str | None = None
    sent_at: float | None = field(default=None, compare=False)

    def __reduce__(self) -> NoReturn:
        raise TypeError("tokenpool.TokenResponse refuses to be pickled (it holds an access token)")


@dataclass(frozen=True, slots=True)
class Token:
    """An access token with its schedule, in ``time.monotonic()`` seconds.

    Immutable.  ``repr`` and ``str`` never show :attr:`access_token`.

    Attributes:
        access_token: The bearer credential.
        token_type: Always ``"Bearer"`` today.
        scope: Granted scopes, if the provider said.
        expires_in: Lifetime in seconds, as returned by the provider.
        sent_at: When the token request was sent; the lifetime counts from here.
        refresh_at: When the pool renews it (``sent_at + r·L`` minus jitter,
            within the policy's floor and cap).
        expires_at: ``sent_at + expires_in``.
        usable_until: ``expires_at`` minus the safety margin; the pool stops
            handing the token out at this instant.
    """

    access_token: str = field(repr=False)
    token_type: str
    scope: str | None
    expires_in: float
    sent_at: float
    refresh_at: float
    expires_at: float
    usable_until: float
    authorization: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Precomputed once so that the auth flow does no string work per call.
        object.__setattr__(self, "authorization", f"{self.token_type} {self.access_token}")

    def __str__(self) -> str:
        return repr(self)

    # An access token must not travel into task queues, result backends or
    # caches by accident: like Secret, a Token refuses to be pickled.  It is
    # immutable, so a copy is the token itself.
    def __reduce__(self) -> NoReturn:
        raise TypeError("tokenpool.Token refuses to be pickled (it holds an access token)")

    def __copy__(self) -> Token:
        return self

    def __deepcopy__(self, memo: object) -> Token:
        return self
