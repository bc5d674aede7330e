"""The public API as a user writes it, checked by ``mypy --strict`` (``tests`` is in its files).

Never run, never collected by pytest (no ``test_`` prefix): it exists so that a
change to a public signature that would break user code breaks the type check
first.  ``assert_type`` pins what the API returns.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import assert_type

import httpx
from prometheus_client import CollectorRegistry

import tokenpool
from tokenpool import (
    BlockingTokenPool,
    Config,
    CredentialsRejected,
    PoolStatistics,
    RefreshPolicy,
    RenewalDeferred,
    Secret,
    SyncTokenAuth,
    Token,
    TokenEndpointError,
    TokenPool,
    TokenRequestError,
    TokenResponse,
    TokenSource,
    load_config,
)
from tokenpool.fleet import RedisStore
from tokenpool.providers import ClientCredentials, Navro, Provider, Zertiban
from tokenpool.testing import ManualClock


def providers() -> Mapping[str, Provider]:
    return {
        "acme": ClientCredentials(
            token_url="https://auth.example.com/oauth/token",
            client_id="acme",
            client_secret=Secret("s3cret"),
            scope="payouts",
            refresh=RefreshPolicy(ratio=0.8, request_timeout=10.0),
        ),
        "zertiban": Zertiban(client_id="id", client_secret="secret", business_uuid="uuid"),
        "navro": Navro(client_id="id", client_secret="secret", company="acme-payouts"),
    }


async def payout_worker() -> None:
    async with TokenPool(providers(), warm_up="background", metrics=CollectorRegistry()) as pool:
        token = await pool.token("acme")
        assert_type(token, Token)
        assert_type(token.authorization, str)
        assert_type(pool.usable_token("acme"), Token | None)
        async with httpx.AsyncClient(auth=pool.auth("acme")) as client:
            response = await client.post("https://api.example.com/payouts", json={"amount": 1})
            assert_type(response, httpx.Response)
        assert_type(await pool.refresh("acme", timeout=5.0), Token)
        assert_type(await pool.invalidate("acme", token), bool)
        assert_type(pool.statistics(), PoolStatistics)
        assert_type(pool.statistics().cells["acme"].hits, int)
        try:
            await pool.token("navro", timeout=1.0)
        except CredentialsRejected as exc:
            assert_type(exc.reason, str)
        except TokenEndpointError as exc:
            assert_type(exc.status_code, int | None)
        except TokenRequestError as exc:
            assert_type(exc.provider, str)


async def fleet() -> None:
    store = RedisStore("rediss://payouts@redis.internal:6380/0", password="from-the-environment")
    async with TokenPool(providers(), store=store, metrics_label="name") as pool:
        await pool.token("acme")


def from_a_file() -> None:
    config = load_config("tokenpool.toml")
    assert_type(config, Config)
    with BlockingTokenPool(config.providers, **config.pool_options) as pool:
        assert_type(pool.token("payouts"), Token)


def celery_like_thread() -> None:
    with BlockingTokenPool(providers()) as pool:
        assert_type(pool.token("acme"), Token)
        assert_type(pool.auth("acme"), httpx.Auth)
        with httpx.Client(auth=SyncTokenAuth(pool, "acme")) as client:
            assert_type(client, httpx.Client)
        pool.report_unauthorized("acme", retried=False)


class ScriptedSource:
    """A test's own token source, through the public seam."""

    async def open(self) -> None:
        pass

    async def prepare(self, provider: Provider) -> None:
        pass

    async def fetch(
        self, name: str, provider: Provider, *, previous: Token | None, rejected: bool, may_defer: bool
    ) -> TokenResponse:
        if may_defer and previous is not None:
            raise RenewalDeferred(1.0, "busy")
        return TokenResponse(access_token="t", expires_in=600.0)

    async def aclose(self) -> None:
        pass


async def with_a_scripted_source() -> None:
    source: TokenSource = ScriptedSource()
    clock = ManualClock(start=0.0)
    pool = TokenPool(providers(), source=source, clock=clock, rng=random.Random(0), metrics=False)
    async with pool:
        clock.advance(10.0)
        assert_type(await pool.token("acme"), Token)


assert_type(tokenpool.__version__, str)
