"""The fleet tier through the public API: ``TokenPool(store=...)``, ``[pool.store]`` and ``tokenpool check``.

Real parts: a ``redis-server`` on loopback started by the test, the project's
emulator, and pools that share nothing but Redis (several pools in one
process stand for several processes: they have their own cells, clients and
Redis connections).  Multi-process runs with real worker processes are in
the ``fleet`` benchmark scenario.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from _redis import RedisServer, redis_server
from _workers import run_check
from prometheus_client import CollectorRegistry

from tokenpool import ConfigurationError, TokenPool, load_config
from tokenpool.fleet import RedisStore
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.integration]

#: Generous per-operation deadline: these tests are about behaviour, not Redis latency.
LENIENT = 2.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as started:
        yield started


def generic(emulator: EmulatorProcess) -> ClientCredentials:
    client_id, secret = emulator.credentials("generic")
    return ClientCredentials(
        token_url=f"{emulator.url('generic')}/oauth/token", client_id=client_id, client_secret=secret
    )


def tls(emulator: EmulatorProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=emulator.ca_file)


def token_requests(emulator: EmulatorProcess) -> int:
    return int(emulator.stats(events=False)["providers"]["generic"]["token_requests"])


def pool_for(emulator: EmulatorProcess, server: RedisServer, registry: CollectorRegistry) -> TokenPool:
    return TokenPool(
        {"acme": generic(emulator)},
        store=RedisStore(server.url, operation_timeout=LENIENT),
        ca_file=emulator.ca_file,
        metrics=registry,
        metrics_label="name",
    )


def outcome(registry: CollectorRegistry, what: str) -> float:
    return (
        registry.get_sample_value("tokenpool_store_operations_total", {"provider": "acme", "outcome": what})
        or 0
    )


@pytest.mark.anyio
async def test_pools_sharing_a_store_fetch_one_token_for_all(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    registries = [CollectorRegistry() for _ in range(4)]
    pools = [pool_for(emulator, server, registry) for registry in registries]
    tokens = []
    for pool in pools:
        await pool.__aenter__()
    try:
        for pool in pools:
            tokens.append(await pool.token("acme"))
    finally:
        for pool in pools:
            await pool.aclose()
    assert token_requests(emulator) == 1
    assert len({token.access_token for token in tokens}) == 1
    # The first pool fetched for the fleet; the others adopted its token, on its schedule.
    assert outcome(registries[0], "lease_won") == 1
    assert sum(outcome(r, "hit") for r in registries[1:]) == 3
    # One send time for the fleet (the adopters' copies keep it); only the jitter of the
    # renewal point differs per cell, which spreads the fleet's reads, not its fetches.
    assert max(t.sent_at for t in tokens) - min(t.sent_at for t in tokens) < 1.0


@pytest.mark.anyio
async def test_a_revocation_seen_by_every_pool_costs_the_fleet_one_token_request(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    pools = [pool_for(emulator, server, CollectorRegistry()) for _ in range(5)]
    for pool in pools:
        await pool.__aenter__()
    try:
        for pool in pools:
            await pool.token("acme")
        assert token_requests(emulator) == 1
        emulator.revoke_tokens("generic")
        resource = f"{emulator.url('generic')}/api/resource"
        clients = [httpx.AsyncClient(auth=pool.auth("acme"), verify=tls(emulator)) for pool in pools]
        statuses: list[int] = []

        async def call(client: httpx.AsyncClient) -> None:
            statuses.append((await client.get(resource)).status_code)

        try:
            async with anyio.create_task_group() as tg:
                for client in clients:
                    for _ in range(20):
                        tg.start_soon(call, client)
        finally:
            for client in clients:
                await client.aclose()
    finally:
        for pool in pools:
            await pool.aclose()
    assert statuses == [200] * 100  # every call recovered with one replay
    assert token_requests(emulator) == 2  # one refresh for the whole fleet (fenced, leased, adopted)


@pytest.mark.anyio
async def test_a_provider_that_revokes_on_issue_does_not_break_a_fleet_with_a_store(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    """Per-process refreshes would revoke each other's tokens; the fleet's one token survives."""
    emulator.set_revoke_on_issue("generic")
    pools = [pool_for(emulator, server, CollectorRegistry()) for _ in range(3)]
    for pool in pools:
        await pool.__aenter__()
    statuses: list[int] = []
    try:
        resource = f"{emulator.url('generic')}/api/resource"
        for pool in pools:
            async with httpx.AsyncClient(auth=pool.auth("acme"), verify=tls(emulator)) as client:
                for _ in range(10):
                    statuses.append((await client.get(resource)).status_code)
        for pool in pools:  # each one renews now (outside the schedule): the fleet still has one token
            await pool.refresh("acme")
        for pool in pools:
            async with httpx.AsyncClient(auth=pool.auth("acme"), verify=tls(emulator)) as client:
                statuses.append((await client.get(resource)).status_code)
    finally:
        for pool in pools:
            await pool.aclose()
    assert statuses == [200] * 33
    assert emulator.stats(events=False)["providers"]["generic"]["resource_401"] == {}


@pytest.mark.anyio
async def test_the_pool_keeps_serving_when_redis_dies(emulator: EmulatorProcess, server: RedisServer) -> None:
    registry = CollectorRegistry()
    async with pool_for(emulator, server, registry) as pool:
        first = await pool.token("acme")
        server.kill()
        refreshed = await pool.refresh("acme")  # the store is gone: this process fetches itself
        assert refreshed is not first
        assert (await pool.token("acme")) is refreshed
    assert outcome(registry, "fallback") >= 1
    assert token_requests(emulator) == 2


def test_pool_store_in_toml_builds_a_redis_store(tmp_path: Path) -> None:
    path = tmp_path / "tokenpool.toml"
    path.write_text(
        """
        [pool.store]
        url = "redis://127.0.0.1:6379/0"
        password = "${REDIS_PASSWORD}"
        operation_timeout = 0.1

        [providers.acme]
        type = "client_credentials"
        token_url = "https://auth.example.com/oauth/token"
        client_id = "acme-id"
        client_secret = "${ACME_SECRET}"
        """
    )
    config = load_config(path, environ={"REDIS_PASSWORD": "redis-pass-word", "ACME_SECRET": "x" * 16})
    store = config.pool_options["store"]
    assert isinstance(store, RedisStore)
    assert store.operation_timeout == 0.1
    assert "redis-pass-word" not in repr(store)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('password = "literal-password"', "must be a ${VARIABLE} reference"),
        ('url = "redis://127.0.0.1:6379/0"\nnope = 1', "unknown keys"),
        ("operation_timeout = 0.1", "'url' is required"),
        ('url = "http://127.0.0.1:6379"', "redis:// or rediss://"),
        ('url = "redis://127.0.0.1:6379/0"\noperation_timeout = "fast"', "operation_timeout"),
    ],
)
def test_pool_store_mistakes_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    if "url" not in table and "password" in table:
        table = 'url = "redis://127.0.0.1:6379/0"\n' + table
    path = tmp_path / "tokenpool.toml"
    path.write_text(f"[pool.store]\n{table}\n")
    with pytest.raises(ConfigurationError, match=r"\[pool\.store\]") as info:
        load_config(path, environ={})
    assert message in str(info.value)
    assert "literal-password" not in str(info.value)


def test_check_reports_the_store(emulator: EmulatorProcess, server: RedisServer, tmp_path: Path) -> None:
    client_id, secret = emulator.credentials("generic")
    path = tmp_path / "tokenpool.toml"
    path.write_text(
        f"""
        [pool]
        ca_file = "{emulator.ca_file}"

        [pool.store]
        url = "{server.url}"
        operation_timeout = 1.0

        [providers.acme]
        type = "client_credentials"
        token_url = "{emulator.url("generic")}/oauth/token"
        client_id = "{client_id}"
        client_secret = "${{ACME_SECRET}}"
        """
    )
    env = {**os.environ, "ACME_SECRET": secret}
    healthy = run_check(path, env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert f"store: {server.url} ok" in healthy.stdout
    assert "tokens NOT encrypted" in healthy.stdout
    server.kill()
    down = run_check(path, env)
    assert down.returncode == 1, down.stdout + down.stderr
    assert "store: " in down.stdout
    assert "FAIL" in down.stdout
    assert "acme" in down.stdout  # the provider itself was still checked, per process
    assert secret not in down.stdout + down.stderr
