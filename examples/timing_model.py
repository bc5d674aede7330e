"""The timing model, step by step, on a clock that moves only when told to.

A pool with one provider whose (scripted) token endpoint hands out 600 s
tokens, a :class:`tokenpool.testing.ManualClock` and a seeded random source,
so every instant below is exact and the run takes well under a second::

    python examples/timing_model.py

It shows the renewal at ~80 % of the lifetime counted from the send time, the
token served while the endpoint fails, the backoff between failed attempts,
and the recovery.  The scripted source is an ordinary
:class:`tokenpool.TokenSource`: ``TokenPool(source=...)`` is how tests replace
HTTP.
"""

from __future__ import annotations

import logging
import random

import anyio

from tokenpool import RefreshPolicy, Token, TokenEndpointError, TokenPool, TokenResponse
from tokenpool.providers import ClientCredentials, Provider
from tokenpool.testing import ManualClock

LIFETIME = 600.0


class ScriptedEndpoint:
    """A token source that answers 600 s tokens, or 503 while ``failing`` is set."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.failing = False
        self.sent: list[float] = []  # when each request was sent, on the pool's clock

    async def open(self) -> None:
        pass

    async def prepare(self, provider: Provider) -> None:
        pass

    async def fetch(
        self, name: str, provider: Provider, *, previous: Token | None, rejected: bool, may_defer: bool
    ) -> TokenResponse:
        self.sent.append(self.clock.now())
        if self.failing:
            raise TokenEndpointError("token endpoint is failing", status_code=503)
        return TokenResponse(access_token=f"token-{len(self.sent)}", expires_in=LIFETIME)

    async def aclose(self) -> None:
        pass


async def main() -> None:
    # This script prints its own account; without this, the pool's warnings
    # (token.refresh.retry) would reach stderr through Python's last-resort handler.
    logging.getLogger("tokenpool").addHandler(logging.NullHandler())
    clock = ManualClock(start=0.0)
    endpoint = ScriptedEndpoint(clock)
    provider = ClientCredentials(
        token_url="https://auth.example.com/oauth/token",
        client_id="payouts",
        client_secret="not-a-real-secret",
        refresh=RefreshPolicy(),  # the defaults: ratio 0.8, jitter 0.05, margin min(10 s, 5 %)
    )
    pool = TokenPool({"acme": provider}, source=endpoint, clock=clock, rng=random.Random(7), metrics=False)  # noqa: S311 - jitter, not crypto

    async def advance_to(instant: float) -> None:
        """Move the clock to *instant*, stopping at every deadline the pool waits for on the way."""
        while clock.now() < instant:
            clock.set(min(clock.next_deadline(), instant))
            await anyio.wait_all_tasks_blocked()

    async with pool:
        warm_misses = pool.statistics().misses  # the warm-up: the one wait of the cell's life
        first = await pool.token("acme")
        print(f"t={clock.now():6.1f}  first token: sent at {first.sent_at:.1f}, ", end="")
        print(f"expires at {first.expires_at:.1f}")
        print(f"          renew at {first.refresh_at:.1f} (0.8·L = 480 minus this cell's jitter)")
        print(f"          served until {first.usable_until:.1f} (margin min(10 s, 0.05·L) = 10 s)")

        endpoint.failing = True  # the token endpoint goes down before the renewal is due
        await advance_to(first.refresh_at + 60.0)
        cell = pool.statistics().cells["acme"]
        served = await pool.token("acme")
        print(
            f"t={clock.now():6.1f}  outage: {len(endpoint.sent) - 1} attempts failed, "
            f"{cell.consecutive_failures} in a row; still serving the first token: "
            f"{served.access_token == first.access_token}"
        )
        gaps = [round(b - a, 1) for a, b in zip(endpoint.sent[1:], endpoint.sent[2:], strict=False)]
        print(f"          waits between attempts (full jitter, capped at 30 s): {gaps}")

        endpoint.failing = False  # it comes back; the next attempt succeeds
        await advance_to(clock.now() + 31.0)
        renewed = await pool.token("acme")
        print(
            f"t={clock.now():6.1f}  recovered: new token sent at {renewed.sent_at:.1f}, "
            f"renew at {renewed.refresh_at:.1f}; callers that waited since warm-up: "
            f"{pool.statistics().misses - warm_misses}"
        )


if __name__ == "__main__":
    anyio.run(main)
