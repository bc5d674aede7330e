"""Core v2 API edges: the token-source seam, metric labels, usable_token, Token safety."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tokenpool import (
    ConfigurationError,
    MonotonicClock,
    PoolStateError,
    Token,
    TokenPool,
    TokenResponse,
    TokenSource,
    UnknownProviderError,
)
from tokenpool.providers import ClientCredentials, Provider, Zertiban

ACCESS_TOKEN = "eyJ-an-access-token-that-must-not-travel"


class StaticSource:
    """A TokenSource that answers every fetch with one long-lived token."""

    def __init__(self) -> None:
        self.fetches: list[tuple[str, bool]] = []

    async def open(self) -> None:
        pass

    async def prepare(self, provider: Provider) -> None:
        pass

    async def fetch(
        self,
        name: str,
        provider: Provider,
        *,
        previous: Token | None,
        rejected: bool,
        may_defer: bool = False,
    ) -> TokenResponse:
        self.fetches.append((name, rejected))
        return TokenResponse(access_token=ACCESS_TOKEN, expires_in=3600)

    async def aclose(self) -> None:
        pass


def generic(name: str = "client") -> ClientCredentials:
    return ClientCredentials(token_url="http://127.0.0.1:9/token", client_id=name, client_secret="s" * 16)


def zertiban() -> Zertiban:
    return Zertiban(
        client_id="z-client",
        client_secret="z" * 16,
        business_uuid="550e8400-e29b-41d4-a716-446655440000",
        base_url="http://127.0.0.1:9",
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_scripted_source_is_a_token_source() -> None:
    assert isinstance(StaticSource(), TokenSource)


def test_source_and_http_settings_are_exclusive() -> None:
    with pytest.raises(ConfigurationError, match="source="):
        TokenPool({"a": generic()}, source=StaticSource(), ca_file=__file__)
    with pytest.raises(ConfigurationError, match="TokenSource"):
        TokenPool({"a": generic()}, source=object())  # type: ignore[arg-type]


def test_monotonic_clock_is_the_default() -> None:
    assert isinstance(TokenPool({}).clock, MonotonicClock)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_concurrent_requests", 0),
        ("max_requests_per_host", 0),
        ("max_requests_per_host", "4"),
        ("metrics_interval", float("inf")),
        ("warm_up_timeout", -1),
        ("metrics_label", "tenant"),
    ],
)
def test_pool_settings_are_checked_when_built(setting: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        TokenPool({"a": generic()}, **{setting: value})


@pytest.mark.anyio
async def test_metrics_are_labelled_by_kind_by_default() -> None:
    """Thousands of tenants of one provider kind must not mean thousands of series."""
    registry = CollectorRegistry()
    providers: dict[str, Provider] = {f"tenant-{i}": generic(f"client-{i}") for i in range(50)}
    providers["zertiban"] = zertiban()
    async with TokenPool(providers, source=StaticSource(), metrics=registry, metrics_interval=3600) as pool:
        for name in providers:
            await pool.token(name)
    assert sample(registry, "tokenpool_refresh_attempts_total", provider="client_credentials") == 50
    assert sample(registry, "tokenpool_refresh_attempts_total", provider="zertiban") == 1
    assert sample(registry, "tokenpool_refresh_attempts_total", provider="tenant-1") is None
    assert sample(registry, "tokenpool_cache_misses_total", provider="client_credentials") == 50
    label_values = {
        s.labels["provider"]
        for metric in registry.collect()
        for s in metric.samples
        if "provider" in s.labels
    }
    assert label_values == {"client_credentials", "zertiban"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("label", "expected"),
    [("name", {"acme", "globex"}), (lambda name, provider: f"team-{name[0]}", {"team-a", "team-g"})],
)
async def test_per_name_or_custom_labels_are_opt_in(label: Any, expected: set[str]) -> None:
    registry = CollectorRegistry()
    providers = {"acme": generic("a"), "globex": generic("g")}
    async with TokenPool(providers, source=StaticSource(), metrics=registry, metrics_label=label) as pool:
        await pool.token("acme")
    values = {
        s.labels["provider"]
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "tokenpool_refresh_attempts_total"
    }
    assert values == expected


@pytest.mark.anyio
async def test_usable_token_never_waits_and_counts_a_hit() -> None:
    async with TokenPool({"a": generic()}, source=StaticSource(), warm_up="lazy", metrics=False) as pool:
        assert pool.usable_token("a") is None  # nothing fetched, nothing started
        token = await pool.token("a")
        assert pool.usable_token("a") is token
        assert pool.statistics().cells["a"].hits == 1
        with pytest.raises(UnknownProviderError):
            pool.usable_token("b")
    with pytest.raises(PoolStateError):
        pool.usable_token("a")


@pytest.mark.anyio
async def test_the_hit_path_closure_behaves_like_the_method() -> None:
    """``pool.token`` is a closure for speed; the documented method must give the same answers."""
    source = StaticSource()
    pool = TokenPool({"a": generic()}, source=source, warm_up="lazy", metrics=False)
    with pytest.raises(PoolStateError):
        await pool.token("a")
    with pytest.raises(PoolStateError):
        await TokenPool.token(pool, "a")
    async with pool:
        fast = await pool.token("a")
        assert await TokenPool.token(pool, "a") is fast
        with pytest.raises(UnknownProviderError):
            await pool.token("nope")
        with pytest.raises(UnknownProviderError):
            await TokenPool.token(pool, "nope")
    assert pool.statistics().cells["a"].hits == 1  # the method's hit counts like the closure's
    assert len(source.fetches) == 1


@pytest.mark.anyio
async def test_a_token_refuses_to_be_pickled_and_copies_are_itself() -> None:
    async with TokenPool({"a": generic()}, source=StaticSource(), metrics=False) as pool:
        token = await pool.token("a")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="refuses to be pickled") as info:
            pickle.dumps(token, protocol=protocol)
        assert ACCESS_TOKEN not in str(info.value)
    with pytest.raises(TypeError, match="refuses to be pickled"):
        pickle.dumps(TokenResponse(access_token=ACCESS_TOKEN, expires_in=60))
    assert copy.copy(token) is token
    assert copy.deepcopy(token) is token
    assert ACCESS_TOKEN not in repr(token)
    assert ACCESS_TOKEN not in str(token)
