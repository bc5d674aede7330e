"""The timing model as arithmetic: exact instants, margins, floor and cap, backoff."""

from __future__ import annotations

import math

import pytest

from tokenpool import (
    ConfigurationError,
    RefreshPolicy,
    Token,
    TokenEndpointError,
    TokenResponse,
)


def stamp(
    lifetime: float, *, u: float = 0.0, policy: RefreshPolicy | None = None, sent_at: float = 100.0
) -> Token:
    policy = policy or RefreshPolicy()
    return policy.stamp(TokenResponse(access_token="t", expires_in=lifetime), sent_at=sent_at, u=u)


@pytest.mark.parametrize(
    ("lifetime", "refresh_after", "margin"),
    [
        (600.0, 480.0, 10.0),  # NTX MX: "renew every ~8 minutes"
        (300.0, 240.0, 10.0),  # Navro / Zertiban
        (3600.0, 2880.0, 10.0),  # NTX PIX
        (8600.0, 6880.0, 10.0),  # Pay-me
        (100.0, 80.0, 5.0),  # margin scales down for short tokens…
        (2.0, 1.6, 0.1),  # …so a 2 s token still has a usable window after its refresh point
    ],
)
def test_refresh_point_and_margin_without_jitter(
    lifetime: float, refresh_after: float, margin: float
) -> None:
    token = stamp(lifetime, u=0.0)
    assert token.sent_at == 100.0
    assert token.expires_at == 100.0 + lifetime
    assert token.refresh_at == pytest.approx(100.0 + refresh_after)
    assert token.usable_until == pytest.approx(token.expires_at - margin)
    assert token.refresh_at < token.usable_until


@pytest.mark.parametrize("lifetime", [2.0, 300.0, 600.0, 8600.0])
def test_jitter_stays_inside_its_band(lifetime: float) -> None:
    policy = RefreshPolicy()
    points = [stamp(lifetime, u=u / 100, policy=policy).refresh_at - 100.0 for u in range(100)]
    assert max(points) == pytest.approx(0.8 * lifetime)  # u = 0
    assert min(points) >= (0.8 - 0.05) * lifetime - 1e-9
    assert max(points) - min(points) == pytest.approx(0.05 * lifetime * 0.99)


def test_floor_keeps_a_tiny_token_from_becoming_a_refresh_loop() -> None:
    token = stamp(0.5)
    assert token.refresh_at - token.sent_at == 1.0  # min_refresh_delay
    # Past its own expiry: callers will wait for a token rather than loop.
    assert token.refresh_at > token.expires_at


def test_cap_renews_very_long_tokens_at_least_daily() -> None:
    token = stamp(30 * 86_400.0)
    assert token.refresh_at - token.sent_at == 86_400.0


def test_ratio_is_configurable_per_provider() -> None:
    token = stamp(600.0, policy=RefreshPolicy(ratio=0.5))
    assert token.refresh_at == 400.0


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    policy = RefreshPolicy(backoff_base=0.5, backoff_cap=30.0)
    ceilings = [policy.backoff(n, 0.999999) for n in range(1, 10)]
    assert ceilings == pytest.approx([0.5, 1, 2, 4, 8, 16, 30, 30, 30], rel=1e-5)
    assert [policy.backoff(n, 0.0) for n in range(1, 10)] == [0.0] * 9
    assert policy.backoff(3, 0.5) == pytest.approx(1.0)
    # No overflow after a very long outage.
    assert policy.backoff(10_000, 0.5) == pytest.approx(15.0)


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RefreshPolicy(max_retry_after=300.0)
    assert policy.backoff(1, 0.0, retry_after=7.0) == 7.0
    assert policy.backoff(1, 0.0, retry_after=10_000.0) == 300.0
    # A Retry-After shorter than the backoff does not shorten it.
    assert policy.backoff(6, 0.999999, retry_after=1.0) == pytest.approx(16.0, rel=1e-5)


@pytest.mark.parametrize(
    ("retry_after", "retry_at", "delay"),
    [
        (7.0, None, 7.0),
        (None, 1_000_040.0, 40.0),  # an HTTP-date without a Date header: measured from the wall clock
        (None, 999_990.0, 0.0),  # already past: the plain backoff (0 with v = 0)
        (None, 1_010_000.0, 300.0),  # capped like any Retry-After
        (7.0, 1_000_040.0, 7.0),  # seconds the adapter could measure win
    ],
)
def test_retry_delay_resolves_retry_at_with_the_wall_clock(
    retry_after: float | None, retry_at: float | None, delay: float
) -> None:
    from tokenpool._schedule import retry_delay

    error = TokenEndpointError("slow down", status_code=429, retry_after=retry_after, retry_at=retry_at)
    wall_reads: list[float] = []

    def wall_clock() -> float:
        wall_reads.append(1_000_000.0)
        return 1_000_000.0

    got = retry_delay(RefreshPolicy(), error, failures=1, v=0.0, token=None, now=5.0, wall_clock=wall_clock)
    assert got == pytest.approx(delay)
    # The wall clock is read only to resolve an instant, never otherwise.
    assert len(wall_reads) == (1 if retry_after is None else 0)


def test_retry_at_overrides_the_last_chance_clamp_like_any_retry_after() -> None:
    from tokenpool._schedule import retry_delay

    token = stamp(100.0, sent_at=0.0)  # served until 95, last chance at 94
    error = TokenEndpointError("slow down", status_code=503, retry_at=1_000_050.0)
    delay = retry_delay(
        RefreshPolicy(), error, failures=1, v=0.0, token=token, now=90.0, wall_clock=lambda: 1_000_000.0
    )
    assert delay == 50.0


def test_rejected_credentials_retry_slowly() -> None:
    policy = RefreshPolicy(credentials_backoff=60.0)
    assert policy.backoff(1, 0.0, credentials_rejected=True) == 60.0
    assert policy.backoff(1, 0.5, credentials_rejected=False) == 0.25


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": 0.0},
        {"ratio": 1.0},
        {"ratio": 0.97},  # ratio + margin_ratio > 1
        {"jitter": 0.9},
        {"backoff_base": 0.0},
        {"backoff_cap": 0.1},
        {"request_timeout": 0.0},
        {"min_refresh_delay": 10.0, "max_refresh_delay": 5.0},
        {"max_margin": -1.0},
        {"ratio": math.nan},
        {"ratio": True},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RefreshPolicy(**kwargs)


def test_token_repr_never_shows_the_token() -> None:
    token = stamp(600.0)
    assert "access_token" not in repr(token)
    assert "authorization" not in repr(token)
    assert str(token) == repr(token)
    assert token.authorization == "Bearer t"
