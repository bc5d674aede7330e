"""The timing model, as pure arithmetic: no clock, no I/O, no randomness of its own.

Everything here takes "now" and random draws as arguments, so tests can pin
every instant exactly.  See ``RefreshPolicy`` for the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._exceptions import ConfigurationError
from ._token import Token, TokenResponse

__all__ = ["RefreshPolicy"]


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When to renew a token, how long to trust it, and how to back off.

    With ``L = expires_in`` and the request's send time ``sent_at``:

    - ``expires_at = sent_at + L``;
    - ``margin = min(max_margin, margin_ratio · L)``, so short tokens get a
      proportionally small margin; the token is served only while
      ``now < usable_until = expires_at − margin``;
    - ``refresh_at = sent_at + clamp(ratio·L − u·jitter·L, min_refresh_delay,
      max_refresh_delay)`` where ``u ∈ [0, 1)`` is drawn once per cell, so a
      fleet of workers does not renew in lock-step.  The floor stops a
      one-second token from turning into a refresh loop; the cap renews a
      very long-lived token at least that often.

    Failed refreshes back off with capped exponential delays and full jitter:
    attempt ``n`` waits ``v · min(backoff_cap, backoff_base · 2^(n−1))`` with a
    fresh ``v ∈ [0, 1)``; never less than a ``Retry-After`` the endpoint sent
    (itself capped at ``max_retry_after``), and never less than
    ``credentials_backoff`` after the endpoint rejected our credentials.

    Args:
        ratio: Fraction of the lifetime after which to renew (``r``).
        jitter: Largest fraction of ``L`` subtracted from the refresh point.
        margin_ratio: Safety margin as a fraction of ``L``…
        max_margin: …but never more than this many seconds.
        min_refresh_delay: Floor on ``refresh_at − sent_at`` in seconds.
        max_refresh_delay: Cap on ``refresh_at − sent_at`` in seconds.
        backoff_base: First retry's ceiling in seconds.
        backoff_cap: Largest retry ceiling in seconds.
        credentials_backoff: Least wait after credentials were rejected.
        max_retry_after: Largest ``Retry-After`` honoured, in seconds.
        request_timeout: Deadline for one whole token request, in seconds.
        min_lifetime: Shortest lifetime accepted, in seconds.  A response
            with a shorter ``expires_in`` (``0.001``, say) is refused as an
            :class:`~tokenpool.InvalidTokenResponse` and retried with backoff:
            such a token would be past its usable point before any caller got
            it, and accepting it would turn every call into a token request.
        unauthorized_cooldown: A token that gets a 401 from the API while it
            is younger than ``min(unauthorized_cooldown, 0.1·L)`` seconds *and*
            was itself fetched because of a 401 — for the second time in a row
            — triggers no further refresh: an API that rejects every token (a
            wrong tenant header, say) must not become a token-request storm.
            The 401 is returned and counted.
    """

    ratio: float = 0.8
    jitter: float = 0.05
    margin_ratio: float = 0.05
    max_margin: float = 10.0
    min_refresh_delay: float = 1.0
    max_refresh_delay: float = 86_400.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    credentials_backoff: float = 60.0
    max_retry_after: float = 300.0
    request_timeout: float = 15.0
    min_lifetime: float = 1.0
    unauthorized_cooldown: float = 5.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigurationError(f"RefreshPolicy.{name} must be a finite number, got {value!r}")
            if value < 0:
                raise ConfigurationError(f"RefreshPolicy.{name} must not be negative, got {value!r}")
        if not 0 < self.ratio < 1:
            raise ConfigurationError(f"RefreshPolicy.ratio must be between 0 and 1, got {self.ratio!r}")
        if self.jitter >= self.ratio:
            raise ConfigurationError("RefreshPolicy.jitter must be smaller than ratio")
        if self.ratio + self.margin_ratio > 1:
            raise ConfigurationError(
                "RefreshPolicy.ratio + margin_ratio must not exceed 1, or tokens would stop "
                "being served before their refresh is due"
            )
        if self.min_refresh_delay > self.max_refresh_delay:
            raise ConfigurationError("RefreshPolicy.min_refresh_delay exceeds max_refresh_delay")
        if self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            raise ConfigurationError("RefreshPolicy needs 0 < backoff_base <= backoff_cap")
        if self.request_timeout <= 0:
            raise ConfigurationError("RefreshPolicy.request_timeout must be positive")

    def cooldown(self, lifetime: float) -> float:
        """Seconds after a 401-driven refresh during which another 401 causes none."""
        return min(self.unauthorized_cooldown, 0.1 * lifetime)

    def margin(self, lifetime: float) -> float:
        """Seconds before expiry at which the token stops being handed out."""
        return min(self.max_margin, self.margin_ratio * lifetime)

    def refresh_delay(self, lifetime: float, u: float) -> float:
        """Seconds after ``sent_at`` at which to renew, for the cell's draw *u*."""
        delay = self.ratio * lifetime - u * self.jitter * lifetime
        return min(max(delay, self.min_refresh_delay), self.max_refresh_delay)

    def stamp(self, response: TokenResponse, *, sent_at: float, u: float) -> Token:
        """Turn a provider's answer into a scheduled :class:`Token`."""
        lifetime = response.expires_in
        expires_at = sent_at + lifetime
        return Token(
            access_token=response.access_token,
            token_type=response.token_type,
            scope=response.scope,
            expires_in=lifetime,
            sent_at=sent_at,
            refresh_at=sent_at + self.refresh_delay(lifetime, u),
            expires_at=expires_at,
            usable_until=expires_at - self.margin(lifetime),
        )

    def backoff(
        self,
        attempt: int,
        v: float,
        *,
        retry_after: float | None = None,
        credentials_rejected: bool = False,
    ) -> float:
        """Seconds to wait before retry number *attempt* (1 for the first retry)."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        # min() before the power would overflow for very long outages.
        exponent = min(attempt - 1, 64)
        delay = v * min(self.backoff_cap, self.backoff_base * 2.0**exponent)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, self.max_retry_after))
        if credentials_rejected:
            delay = max(delay, self.credentials_backoff)
        return delay
