"""The fleet store (``tokenpool.fleet``) against a real redis-server and the real emulator, on loopback.

Each "process" of the fleet is one :class:`FleetTokenSource` with its own
Redis client and its own HTTP source, driven directly (open, prepare, fetch,
aclose) as a pool's cells would.  Token requests are counted by the emulator,
store events by the source's ``on_event``; every wait is bounded, and no test
asserts how fast anything is.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.abc
import pytest
import structlog
from _redis import AclUser, RedisServer, redis_server, tls_files

from tokenpool import (
    ConfigurationError,
    CredentialsRejected,
    MonotonicClock,
    RefreshPolicy,
    RenewalDeferred,
    Secret,
    Token,
    TokenResponse,
)
from tokenpool._http import HttpTokenSource
from tokenpool.fleet import STORE_OUTCOMES, FleetTokenSource, RedisStore
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.integration]

NAME = "acme"
#: A safety net around whole scenarios; never an assertion about speed.
GUARD = 30.0
#: The operation deadline of tests that count token requests: a loaded machine must not turn a
#: slow round trip into a fallback there (the deadline itself is tested with a stalling proxy).
LENIENT = 2.0


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's asyncio client runs on asyncio only (see test_the_source_refuses_trio)."""
    return "asyncio"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as started:
        yield started


class Events:
    """Records ``on_event(outcome, provider)`` calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, outcome: str, name: str) -> None:
        assert outcome in STORE_OUTCOMES, outcome
        self.seen.append((outcome, name))

    def count(self, outcome: str) -> int:
        return sum(1 for seen, _ in self.seen if seen == outcome)


class OffsetClock(MonotonicClock):
    """Another process's monotonic clock: the same rate, another origin."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic() + 1000.0


def store_at(url: str, **kwargs: Any) -> RedisStore:
    kwargs.setdefault("operation_timeout", LENIENT)
    return RedisStore(url, **kwargs)


def generic(emulator: EmulatorProcess, **kwargs: Any) -> ClientCredentials:
    client_id, client_secret = emulator.credentials("generic")
    options: dict[str, Any] = {"client_id": client_id, "client_secret": client_secret}
    options.update(kwargs)
    return ClientCredentials(token_url=f"{emulator.url('generic')}/oauth/token", **options)


def token_requests(emulator: EmulatorProcess) -> int:
    return int(emulator.stats(events=False)["providers"]["generic"]["token_requests"])


def stamped(response: TokenResponse, *, age: float = 0.0) -> Token:
    """The token a cell would hold for *response* (what it passes back as ``previous``).

    A per-process fetch (fallback) leaves ``sent_at`` to the cell: "now" here.
    *age* makes it that many seconds older.
    """
    sent_at = (response.sent_at if response.sent_at is not None else time.monotonic()) - age
    return RefreshPolicy().stamp(response, sent_at=sent_at, u=0.0)


@contextlib.asynccontextmanager
async def opened(
    store: RedisStore,
    emulator: EmulatorProcess,
    events: Events | None = None,
    *,
    clock: MonotonicClock | None = None,
) -> AsyncIterator[FleetTokenSource]:
    source = store.source(
        HttpTokenSource(ca_file=emulator.ca_file),
        clock=clock if clock is not None else MonotonicClock(),
        log=structlog.get_logger("tokenpool"),
        on_event=events if events is not None else Events(),
    )
    await source.open()
    try:
        yield source
    finally:
        await source.aclose()


async def fetch(
    source: FleetTokenSource,
    provider: ClientCredentials,
    *,
    previous: Token | None = None,
    rejected: bool = False,
    may_defer: bool = False,
) -> TokenResponse:
    await source.prepare(provider)
    with anyio.fail_after(GUARD):
        return await source.fetch(NAME, provider, previous=previous, rejected=rejected, may_defer=may_defer)


class Keys(NamedTuple):
    """A provider's key names, as ``RedisStore.key_names`` gives them."""

    token: str
    lease: str
    gen: str
    channel: str

    @property
    def digest(self) -> str:
        """The identity digest inside the hash tag: ``prefix:{digest}:token``."""
        return self.token.partition("{")[2].partition("}")[0]


def keys_of(provider: ClientCredentials, prefix: str = "tokenpool") -> Keys:
    # key_names() needs no connection: the URL is only parsed.
    return Keys(**RedisStore("redis://127.0.0.1:6379/0", key_prefix=prefix).key_names(provider))


def token_digest(access_token: str) -> str:
    """The stored ``digest`` of a token: SHA-256 of its text, hex (the store's documented format)."""
    return hashlib.sha256(access_token.encode("utf-8")).hexdigest()


def stored(server: RedisServer, keys: Keys) -> dict[str, Any]:
    with server.client() as admin:
        raw = admin.get(keys.token)
    assert isinstance(raw, bytes)
    value: dict[str, Any] = json.loads(raw)
    return value


def in_fallback(source: FleetTokenSource) -> bool:
    """Read through a call, so that the type checker does not pin the property between reads."""
    return source.in_fallback


def fallback_logs(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "fleet.store.unavailable"]


# -- sharing ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_second_process_adopts_the_first_ones_token(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    store = store_at(server.url)
    events = Events()
    async with opened(store, emulator, events) as first, opened(store, emulator, events) as second:
        one = await fetch(first, generic(emulator))
        # Another adapter object with the same settings: keys come from the settings, not the object.
        two = await fetch(second, generic(emulator))
    assert two.access_token == one.access_token
    assert token_requests(emulator) == 1
    assert one.sent_at is not None
    assert two.sent_at is not None
    # Both "processes" share this process's clock here, so the converted send time must land
    # near the first's (a generous bound: it is the conversion's error, not a speed).
    assert abs(two.sent_at - one.sent_at) < 2.0
    assert (two.expires_in, two.token_type, two.scope) == (one.expires_in, one.token_type, one.scope)
    assert events.count("lease_won") == 1
    assert events.count("published") == 1
    assert events.count("hit") == 1
    assert events.count("error") == events.count("fallback") == 0
    # The value: format version, generation, digest in clear, issued on the server's clock,
    # and Redis expires it with the token.
    keys = keys_of(generic(emulator))
    value = stored(server, keys)
    assert value["v"] == 1
    assert value["gen"] == 1
    assert value["digest"] == token_digest(one.access_token)
    with server.client() as admin:
        seconds, micros = admin.time()
        pttl = admin.pttl(keys.token)
    assert abs(seconds + micros / 1e6 - value["issued_at"]) < 5.0
    assert 0 < pttl <= one.expires_in * 1000


@pytest.mark.anyio
async def test_an_adopted_token_is_converted_to_the_adopters_clock(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    store = store_at(server.url)
    async with (
        opened(store, emulator) as first,
        opened(store, emulator, clock=OffsetClock()) as second,
    ):
        one = await fetch(first, generic(emulator))
        two = await fetch(second, generic(emulator))
    assert two.access_token == one.access_token
    assert one.sent_at is not None
    assert two.sent_at is not None
    assert abs(two.sent_at - (one.sent_at + 1000.0)) < 2.0


@pytest.mark.anyio
async def test_twenty_processes_at_once_cause_one_token_request(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    store = store_at(server.url)
    events = Events()
    results: list[TokenResponse | None] = [None] * 20
    async with contextlib.AsyncExitStack() as stack:
        sources = [await stack.enter_async_context(opened(store, emulator, events)) for _ in results]
        providers = [generic(emulator) for _ in results]
        for source, provider in zip(sources, providers, strict=True):
            await source.prepare(provider)  # the HTTP clients, before the race

        async def one(index: int) -> None:
            results[index] = await sources[index].fetch(NAME, providers[index], previous=None, rejected=False)

        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:
                for index in range(len(results)):
                    group.start_soon(one, index)
    assert token_requests(emulator) == 1
    assert len({r.access_token for r in results if r is not None}) == 1
    assert all(r is not None for r in results)
    assert events.count("lease_won") == 1
    assert events.count("published") == 1
    assert events.count("hit") == 19
    assert events.count("error") == events.count("fallback") == 0


@pytest.mark.anyio
async def test_a_401_seen_by_ten_processes_causes_one_token_request(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    store = store_at(server.url)
    async with opened(store, emulator) as first:
        refused = stamped(await fetch(first, generic(emulator)))
    assert token_requests(emulator) == 1

    events = Events()
    results: list[TokenResponse | None] = [None] * 10
    async with contextlib.AsyncExitStack() as stack:
        sources = [await stack.enter_async_context(opened(store, emulator, events)) for _ in results]
        provider = generic(emulator)
        for source in sources:
            await source.prepare(provider)

        async def one(index: int) -> None:
            results[index] = await sources[index].fetch(NAME, provider, previous=refused, rejected=True)

        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:
                for index in range(len(results)):
                    group.start_soon(one, index)
    assert token_requests(emulator) == 2
    tokens = {r.access_token for r in results if r is not None}
    assert len(tokens) == 1
    assert refused.access_token not in tokens
    assert events.count("fenced") == 1
    assert events.count("lease_won") == 1
    assert events.count("error") == 0

    # A late 401 for the old token fences nothing: the shared token is already another one.
    late = Events()
    async with opened(store, emulator, late) as straggler:
        adopted = await fetch(straggler, generic(emulator), previous=refused, rejected=True)
    assert adopted.access_token in tokens
    assert late.count("fenced") == 0
    assert late.count("hit") == 1
    assert token_requests(emulator) == 2
    assert stored(server, keys_of(provider))["digest"] == token_digest(adopted.access_token)


@pytest.mark.anyio
async def test_the_shared_token_is_not_handed_back_to_the_cell_that_has_it(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    """A due cell whose token is the shared one takes the lease and renews it for the fleet."""
    store = store_at(server.url)
    events = Events()
    async with opened(store, emulator, events) as source:
        first = await fetch(source, generic(emulator))
        renewed = await fetch(source, generic(emulator), previous=stamped(first))
    assert renewed.access_token != first.access_token
    assert token_requests(emulator) == 2
    assert events.count("lease_won") == 2
    assert events.count("published") == 2
    assert stored(server, keys_of(generic(emulator)))["gen"] == 2


@pytest.mark.anyio
async def test_a_dead_lease_holder_is_taken_over_after_its_lease_expires(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    store = store_at(server.url, lease_ttl=0.5, poll_interval=0.02)
    provider = generic(emulator)
    keys = keys_of(provider)
    with server.client() as admin:
        # A process took the lease and died before publishing.
        assert admin.set(keys.lease, b"a-process-that-died", nx=True, px=500)
    events = Events()
    async with opened(store, emulator, events) as source:
        response = await fetch(source, provider)
    assert token_requests(emulator) == 1
    assert events.count("lease_wait") == 1
    assert events.count("lease_won") == 1
    assert events.count("published") == 1
    assert events.count("error") == events.count("fallback") == 0
    assert stored(server, keys)["digest"] == token_digest(response.access_token)


@pytest.mark.anyio
async def test_a_provider_error_reaches_the_caller_unchanged_and_frees_the_lease(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    store = store_at(server.url)
    provider = generic(emulator, client_secret="not-the-right-secret")
    events = Events()
    async with opened(store, emulator, events) as source:
        with pytest.raises(CredentialsRejected) as caught:
            await fetch(source, provider)
    assert caught.value.provider == NAME
    assert events.count("lease_won") == 1
    assert events.count("published") == events.count("error") == events.count("fallback") == 0
    keys = keys_of(provider)
    with server.client() as admin:
        assert admin.exists(keys.lease) == 0
        assert admin.exists(keys.token) == 0


@pytest.mark.anyio
async def test_a_waiter_wakes_on_the_publication_not_on_its_poll(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    # A poll interval past the guard: only the publication can end the wait in time.
    store = store_at(server.url, poll_interval=GUARD * 2, lease_ttl=GUARD * 4)
    provider = generic(emulator)
    keys = keys_of(provider)
    holder_events, waiter_events = Events(), Events()
    results: dict[str, TokenResponse] = {}
    async with (
        opened(store, emulator, holder_events) as holder,
        opened(store, emulator, waiter_events) as waiter,
    ):
        await holder.prepare(provider)
        await waiter.prepare(provider)
        emulator.fault("generic", latency=1.0, count=1)

        async def hold() -> None:
            results["holder"] = await holder.fetch(NAME, provider, previous=None, rejected=False)

        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:
                group.start_soon(hold)
                with server.client() as admin:
                    while not admin.exists(keys.lease):  # noqa: ASYNC110 - state in another process
                        await anyio.sleep(0.01)
                results["waiter"] = await waiter.fetch(NAME, provider, previous=None, rejected=False)
    assert results["waiter"].access_token == results["holder"].access_token
    assert token_requests(emulator) == 1
    assert holder_events.count("lease_won") == 1
    assert waiter_events.count("lease_wait") == 1
    # Read, subscribe and read again (nothing published in between is missed), then the
    # publication wakes it for the read that adopts.
    assert waiter_events.count("read") == 3
    assert waiter_events.count("hit") == 1
    with server.client() as admin:
        assert admin.pubsub_numsub(keys.channel) == [(keys.channel.encode(), 0)]  # unsubscribed


@pytest.mark.anyio
async def test_a_renewal_waits_for_a_stuck_lease_only_until_its_last_chance(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    """A holder that could neither publish nor release leaves its lease to expire: a renewal does not wait."""
    store = store_at(server.url, lease_ttl=60.0)
    provider = generic(emulator)
    events = Events()
    async with opened(store, emulator, events) as source:
        first = await fetch(source, provider)
        with server.client() as admin:
            admin.delete(keys_of(provider).token)
            admin.set(keys_of(provider).lease, "4242-0123456789abcdef", px=60_000)
        # 600 s token: its last chance (2 s before usable_until, 590 s) is 1 s away.
        with structlog.testing.capture_logs() as logs:
            renewed = await fetch(source, provider, previous=stamped(first, age=587.0))
    assert renewed.access_token != first.access_token
    assert token_requests(emulator) == 2
    assert events.count("lease_wait") == 1
    assert events.count("fallback") == 1
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["fleet.store.wait_timeout"]


@pytest.mark.anyio
async def test_a_cancelled_fetch_releases_its_lease(emulator: EmulatorProcess, server: RedisServer) -> None:
    store = store_at(server.url)
    provider = generic(emulator)
    keys = keys_of(provider)
    async with opened(store, emulator) as source:
        # A first token opens the HTTP/2 connection to the emulator, so that the cancellation
        # below lands in the slow token request, not in a TLS handshake (where httpcore leaves
        # the socket to the garbage collector).
        first = await fetch(source, provider)
        emulator.fault("generic", latency=10.0)
        renew = functools.partial(source.fetch, NAME, provider, previous=stamped(first), rejected=False)
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as group:
                group.start_soon(renew)
                with server.client() as admin:
                    while not admin.exists(keys.lease):  # noqa: ASYNC110 - state in another process
                        await anyio.sleep(0.01)
                group.cancel_scope.cancel()
    with server.client() as admin:
        assert admin.exists(keys.lease) == 0


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_redis_killed_means_per_process_tokens_then_the_store_again(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    store = store_at(server.url)
    events = Events()
    async with opened(store, emulator, events) as source:
        first = await fetch(source, generic(emulator))
        server.kill()
        with structlog.testing.capture_logs() as logs:
            # A renewal whose token is served for a while yet waits for the store:
            # no token request (a per-process token could revoke the fleet's).
            with pytest.raises(RenewalDeferred) as deferred:
                await fetch(source, generic(emulator), previous=stamped(first), may_defer=True)
            assert 0 < deferred.value.retry_in <= store.retry_after_failure
            assert token_requests(emulator) == 1
            # What a caller waits for goes to the provider at once: a cold start, a
            # refused token; and so does a renewal past half of its window (600 s
            # token: refresh_at 480 s, usable until 590 s).
            second = await fetch(source, generic(emulator))
            third = await fetch(source, generic(emulator), previous=stamped(second), rejected=True)
            fourth = await fetch(
                source, generic(emulator), previous=stamped(third, age=540.0), may_defer=True
            )
            assert in_fallback(source)
        tokens = {r.access_token for r in (first, second, third, fourth)}
        assert len(tokens) == 4
        assert token_requests(emulator) == 4
        assert events.count("error") == 4
        assert events.count("deferred") == 1
        assert events.count("fallback") == 3
        (logged,) = fallback_logs(logs)  # once per run of faults
        assert logged["provider"] == NAME
        assert logged["error"].endswith("Error")  # the exception's type, never its text
        text = repr(logs)
        for token in tokens:
            assert token not in text

        server.restart()
        # No window to sit out: the first fetch after the restart uses the store.
        fifth = await fetch(source, generic(emulator), previous=stamped(fourth))
        assert events.count("recovered") == 1
        assert events.count("published") == 2
        assert not in_fallback(source)
    # Back on the store: another process adopts what the recovered one published.
    async with opened(store, emulator) as other:
        adopted = await fetch(other, generic(emulator))
    assert adopted.access_token == fifth.access_token
    assert token_requests(emulator) == 5


class Proxy:
    """A loopback TCP proxy to Redis that delays every chunk by :attr:`delay` seconds."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.port = 0

    async def _pump(self, source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            async for chunk in source:
                if self.delay:
                    await anyio.sleep(self.delay)
                await sink.send(chunk)
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await sink.aclose()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        with contextlib.suppress(OSError):
            async with (
                client,
                await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream,
                anyio.create_task_group() as group,
            ):
                group.start_soon(self._pump, client, upstream)
                group.start_soon(self._pump, upstream, client)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Proxy]:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))  # noqa: S610 - anyio, not Django
        async with listener, anyio.create_task_group() as group:
            group.start_soon(listener.serve, self._handle)
            try:
                yield self
            finally:
                group.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_slow_redis_means_fallback_within_the_deadline(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    events = Events()
    async with Proxy(server.port).running() as proxy:
        store = RedisStore(f"redis://127.0.0.1:{proxy.port}/0", operation_timeout=0.5)
        async with opened(store, emulator, events) as source:
            # Through the proxy, with a small delay well within the deadline: the store works.
            proxy.delay = 0.005
            first = await fetch(source, generic(emulator))
            assert events.count("published") == 1
            # Now Redis "answers" only after twice the deadline.
            proxy.delay = store.operation_timeout * 2
            with structlog.testing.capture_logs() as logs:
                # A caller waits for this one (the token was refused): the provider, one deadline late.
                second = await fetch(source, generic(emulator), previous=stamped(first), rejected=True)
                # A renewal that can wait is deferred after one deadline instead.
                with pytest.raises(RenewalDeferred):
                    await fetch(source, generic(emulator), previous=stamped(second), may_defer=True)
    assert second.access_token != first.access_token
    assert token_requests(emulator) == 2
    assert events.count("error") == 2
    assert events.count("fallback") == 1
    assert events.count("deferred") == 1
    assert len(fallback_logs(logs)) == 1


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"certainly not JSON", id="not-json"),
        pytest.param(b"[1, 2, 3]", id="not-an-object"),
        pytest.param(
            b'{"v":2,"digest":"00","token":"t","expires_in":600.0,"token_type":"Bearer",'
            b'"scope":null,"issued_at":1.0,"gen":1}',
            id="another-format-version",
        ),
        pytest.param(
            b'{"v":1,"digest":"00","token":"planted","expires_in":600.0,"token_type":"Bearer",'
            b'"scope":null,"issued_at":1.0,"gen":1}',
            id="digest-mismatch",
        ),
        pytest.param(
            b'{"v":1,"token":"planted","expires_in":"600","token_type":"Bearer","gen":1}',
            id="missing-fields",
        ),
    ],
)
@pytest.mark.anyio
async def test_garbage_in_the_shared_key_means_fallback(
    emulator: EmulatorProcess, server: RedisServer, garbage: bytes
) -> None:
    provider = generic(emulator)
    with server.client() as admin:
        admin.set(keys_of(provider).token, garbage, px=60_000)
    events = Events()
    async with opened(store_at(server.url), emulator, events) as source:
        with structlog.testing.capture_logs() as logs:
            response = await fetch(source, provider)
    assert response.access_token != "planted"
    assert token_requests(emulator) == 1
    assert events.count("error") == 1
    assert events.count("fallback") == 1
    (logged,) = fallback_logs(logs)
    assert logged["error"] == "Garbage"
    assert "planted" not in repr(logs)


# -- security -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_encrypted_tokens_rotate_by_key_id(emulator: EmulatorProcess, server: RedisServer) -> None:
    old, new, wrong = os.urandom(32), os.urandom(32), os.urandom(32)
    provider = generic(emulator)
    keys = keys_of(provider)
    events = Events()
    async with opened(store_at(server.url, encryption_keys={"old": old}), emulator, events) as first:
        published = await fetch(first, provider)
    with server.client() as admin:
        raw = admin.get(keys.token)
    assert isinstance(raw, bytes)
    assert published.access_token.encode() not in raw
    value = json.loads(raw)
    assert value["token"]["kid"] == "old"
    assert set(value["token"]) == {"kid", "nonce", "ct"}

    async with opened(store_at(server.url, encryption_keys={"old": old}), emulator, events) as same:
        assert (await fetch(same, provider)).access_token == published.access_token
    rotated_store = store_at(server.url, encryption_keys={"new": new, "old": old})
    async with opened(rotated_store, emulator, events) as rotated:
        assert (await fetch(rotated, provider)).access_token == published.access_token
        # Its own publication is encrypted with the first key...
        renewed = await fetch(rotated, provider, previous=stamped(published))
    assert stored(server, keys)["token"]["kid"] == "new"
    # ...which a process still at the first rotation step ({old, new}) reads.
    async with opened(store_at(server.url, encryption_keys={"old": old, "new": new}), emulator) as step:
        assert (await fetch(step, provider)).access_token == renewed.access_token
    assert events.count("hit") == 2
    assert events.count("error") == 0
    assert token_requests(emulator) == 2

    for store in (store_at(server.url, encryption_keys={"wrong": wrong}), store_at(server.url)):
        refused = Events()
        async with opened(store, emulator, refused) as outsider:
            response = await fetch(outsider, provider)
        assert response.access_token != renewed.access_token
        assert refused.count("error") == 1
        assert refused.count("fallback") == 1
        assert refused.count("hit") == 0
    # A plain token planted where every writer encrypts is refused, not adopted.
    with server.client() as admin:
        admin.delete(keys.token)
    async with opened(store_at(server.url), emulator) as plain:
        planted = await fetch(plain, provider)
    refused = Events()
    async with opened(store_at(server.url, encryption_keys={"old": old}), emulator, refused) as keyed:
        assert (await fetch(keyed, provider)).access_token != planted.access_token
    assert refused.count("error") == 1


@pytest.mark.anyio
async def test_no_secret_client_id_or_token_in_redis_keys_and_no_secret_in_values(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    client_id, client_secret = emulator.credentials("generic")
    provider = generic(emulator)
    secret_forms = {
        *provider.sensitive_strings(),
        client_secret,
        base64.b64encode(client_secret.encode()).decode(),
    }
    tokens: list[str] = []
    plain, encrypted = (
        store_at(server.url, key_prefix="plain"),
        store_at(server.url, key_prefix="sealed", encryption_keys={"k1": os.urandom(32)}),
    )
    for store in (plain, encrypted):
        async with opened(store, emulator) as source:
            first = await fetch(source, provider)
            # A renewal, a fence and a lease leave their traces too.
            second = await fetch(source, provider, previous=stamped(first), rejected=True)
            tokens += [first.access_token, second.access_token]
    with server.client() as admin:
        names = list(admin.scan_iter(match="*", count=1000))
        assert names
        for key in names:
            text = key.decode()
            assert client_id not in text
            for form in secret_forms:
                assert form not in text
            for token in tokens:
                assert token not in text
            assert admin.type(key) == b"string"
            value = admin.get(key)
            assert isinstance(value, bytes)
            content = value.decode("utf-8", "replace")
            for form in secret_forms:
                assert form not in content
            if text.startswith("sealed:"):
                assert client_id not in content
                for token in tokens:
                    assert token not in content
                    assert base64.b64encode(token.encode()).decode() not in content


@pytest.mark.anyio
async def test_rediss_with_verification_and_an_acl_user(emulator: EmulatorProcess, tmp_path: Path) -> None:
    files = tls_files(tmp_path / "tls")
    user = AclUser("fleet")
    with redis_server(tmp_path / "redis", tls=files, user=user) as server:
        store = store_at(
            server.url, username=user.name, password=Secret(user.password), ssl_ca_certs=files.ca_file
        )
        assert user.password not in repr(store)
        assert user.password not in store.url
        events = Events()
        async with opened(store, emulator, events) as first, opened(store, emulator, events) as second:
            one = await fetch(first, generic(emulator))
            two = await fetch(second, generic(emulator))
        assert two.access_token == one.access_token
        assert events.count("published") == 1
        assert events.count("hit") == 1
        assert events.count("error") == 0

        # The same credentials in the URL, percent-encoded.
        quoted = f"rediss://{user.name}:{_quote(user.password)}@127.0.0.1:{server.port}/0"
        in_url = store_at(quoted, ssl_ca_certs=files.ca_file)
        assert user.password not in repr(in_url)
        assert _quote(user.password) not in repr(in_url)
        events = Events()
        async with opened(in_url, emulator, events) as third:
            assert (await fetch(third, generic(emulator))).access_token == one.access_token
        assert events.count("hit") == 1

        other_ca = tls_files(tmp_path / "other-ca")
        refusals = {
            "untrusted CA": store_at(
                server.url, username=user.name, password=user.password, ssl_ca_certs=other_ca.ca_file
            ),
            "no CA (certifi's bundle)": store_at(server.url, username=user.name, password=user.password),
            "wrong password": store_at(
                server.url, username=user.name, password="wrong-password", ssl_ca_certs=files.ca_file
            ),
            "plain TCP to a TLS port": store_at(
                f"redis://127.0.0.1:{server.port}/0",
                username=user.name,
                password=user.password,
                operation_timeout=0.5,
            ),
        }
        for label, refused in refusals.items():
            events = Events()
            with structlog.testing.capture_logs() as logs:
                async with opened(refused, emulator, events) as outsider:
                    assert (await fetch(outsider, generic(emulator))).access_token, label
            assert events.count("error") == 1, label
            assert events.count("fallback") == 1, label
            assert user.password not in repr(logs), label

    # The host name is checked: a certificate for another name is refused.
    misnamed = tls_files(tmp_path / "misnamed", hosts=("redis.invalid",))
    with redis_server(tmp_path / "redis-misnamed", tls=misnamed) as server:
        events = Events()
        async with opened(store_at(server.url, ssl_ca_certs=misnamed.ca_file), emulator, events) as source:
            await fetch(source, generic(emulator))
        assert events.count("error") == 1
        assert events.count("fallback") == 1


def _quote(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


@pytest.mark.anyio
async def test_acl_user_over_plain_tcp(emulator: EmulatorProcess, tmp_path: Path) -> None:
    user = AclUser("fleet")
    with redis_server(tmp_path / "redis", user=user) as server:
        url = f"redis://{user.name}:{_quote(user.password)}@127.0.0.1:{server.port}/0"
        events = Events()
        async with (
            opened(store_at(url), emulator, events) as first,
            opened(
                store_at(server.url, username=user.name, password=user.password), emulator, events
            ) as second,
        ):
            one = await fetch(first, generic(emulator))
            assert (await fetch(second, generic(emulator))).access_token == one.access_token
        assert events.count("published") == 1
        assert events.count("hit") == 1
        anonymous = Events()
        async with opened(store_at(server.url), emulator, anonymous) as outsider:
            await fetch(outsider, generic(emulator))
        assert anonymous.count("error") == 1


# -- health, configuration, packaging -------------------------------------------------------------


@pytest.mark.anyio
async def test_health_reports_ping_skew_and_fallback(emulator: EmulatorProcess, server: RedisServer) -> None:
    store = store_at(server.url)
    report = await store.health()
    assert report["ok"] is True
    assert report["error"] is None
    assert report["fallback"] is False
    assert report["ping_seconds"] >= 0
    assert abs(report["clock_skew_seconds"]) < 5.0  # the same host's clock, within a generous bound
    async with opened(store, emulator) as source:
        assert (await source.health())["ok"] is True
        server.kill()
        await fetch(source, generic(emulator))
        report = await source.health()
    assert report["ok"] is False
    assert report["fallback"] is True
    assert isinstance(report["error"], str)


def test_the_source_refuses_trio() -> None:
    source = RedisStore("redis://127.0.0.1:6379/0").source(
        HttpTokenSource(), clock=MonotonicClock(), log=None, on_event=Events()
    )

    async def main() -> None:
        await source.open()

    with pytest.raises(ConfigurationError, match="needs asyncio"):
        anyio.run(main, backend="trio")


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"url": "http://127.0.0.1:6379"}, "url"),
        ({"url": "redis://"}, "url"),
        ({"url": "redis://127.0.0.1:99999"}, "url"),
        ({"url": "redis://127.0.0.1/zero"}, "url"),
        ({"url": "redis://127.0.0.1/0?ssl_cert_reqs=none"}, "url"),
        ({"url": "redis://u:p@127.0.0.1", "password": "p2"}, "password"),
        ({"url": "redis://u@127.0.0.1", "username": "v"}, "username"),
        ({"password": ""}, "password"),
        ({"ssl_ca_certs": "/no/such/ca.pem"}, "ssl_ca_certs"),
        ({"operation_timeout": 0}, "operation_timeout"),
        ({"operation_timeout": math.nan}, "operation_timeout"),
        ({"operation_timeout": True}, "operation_timeout"),
        ({"lease_ttl": -1}, "lease_ttl"),
        ({"lease_ttl": math.inf}, "lease_ttl"),
        ({"poll_interval": 20.0}, "poll_interval"),
        ({"retry_after_failure": "5"}, "retry_after_failure"),
        ({"key_prefix": ""}, "key_prefix"),
        ({"key_prefix": "a{b}"}, "key_prefix"),
        ({"encryption_keys": {}}, "encryption_keys"),
        ({"encryption_keys": {"k1": b"short"}}, "encryption_keys"),
        ({"encryption_keys": {"bad id": bytes(32)}}, "encryption_keys"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, Any], setting: str) -> None:
    options = {"url": "redis://127.0.0.1:6379/0", **kwargs}
    with pytest.raises(ConfigurationError) as caught:
        RedisStore(**options)
    message = str(caught.value)
    assert setting in message
    assert "\n" not in message
    assert "p2" not in message


def test_the_password_never_shows() -> None:
    store = RedisStore("rediss://alice:hunter2-secret@redis.example:6380/2", ssl_ca_certs=None)
    assert "hunter2" not in repr(store)
    assert "hunter2" not in store.url
    assert store.url == "rediss://alice:***@redis.example:6380/2"
    store = RedisStore("redis://127.0.0.1", password=Secret("hunter2-secret"))
    assert "hunter2" not in repr(store)


def test_keys_from_env() -> None:
    one, two = os.urandom(32), os.urandom(32)
    env = {"KEYS": f"new:{base64.b64encode(one).decode()}, old:{base64.b64encode(two).decode()}"}
    assert RedisStore.keys_from_env("KEYS", env) == {"new": one, "old": two}
    assert list(RedisStore.keys_from_env("KEYS", env)) == ["new", "old"]
    for text in (
        "",
        "nokey",
        "k1:not*base64",
        f"k1:{base64.b64encode(b'short').decode()}",
        "k1:AA==,k1:AA==",
    ):
        with pytest.raises(ConfigurationError, match="KEYS"):
            RedisStore.keys_from_env("KEYS", {"KEYS": text})
    with pytest.raises(ConfigurationError, match="MISSING"):
        RedisStore.keys_from_env("MISSING", {})
    store = RedisStore("redis://127.0.0.1", encryption_keys=RedisStore.keys_from_env("KEYS", env))
    assert store.key_ids == ["new", "old"]
    assert store.encrypted


def test_keys_depend_on_the_identity_and_the_secret(emulator: EmulatorProcess) -> None:
    base = keys_of(generic(emulator))
    assert keys_of(generic(emulator)) == base
    assert keys_of(generic(emulator, refresh=RefreshPolicy(ratio=0.5))) == base
    assert keys_of(generic(emulator, scope="other")).digest != base.digest
    assert keys_of(generic(emulator, client_secret="another-secret-value")).digest != base.digest
    assert keys_of(generic(emulator), prefix="other").token != base.token
    assert base.token == f"tokenpool:{{{base.digest}}}:token"
    assert {base.lease, base.gen, base.channel} == {
        f"tokenpool:{{{base.digest}}}:{part}" for part in ("lease", "gen", "chan")
    }


def test_store_outcomes_are_the_fixed_vocabulary() -> None:
    assert STORE_OUTCOMES == (
        "read",
        "hit",
        "lease_won",
        "lease_wait",
        "published",
        "fenced",
        "fallback",
        "deferred",
        "error",
        "recovered",
    )


def test_import_tokenpool_loads_neither_the_fleet_nor_redis() -> None:
    code = (
        "import sys, tokenpool\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('redis', 'cryptography')"
        " or m.startswith('tokenpool.fleet')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.anyio
async def test_a_reply_that_arrived_while_the_loop_ran_late_is_not_a_timeout() -> None:
    """A busy worker's loop wakes past the deadline with the reply already there: taken, not a timeout.

    The store bounds every round trip with ``anyio.fail_after``; this pins the
    property it relies on.  The loop is blocked (``time.sleep``) across both
    the reply's arrival and the deadline, so both are due in the same
    iteration: anyio does not cancel a task whose awaited future is already
    done, and the reply wins.  A reply that really is late still times out.
    """
    import asyncio

    loop = asyncio.get_running_loop()

    async def reply() -> str:
        arrived: asyncio.Future[str] = loop.create_future()
        loop.call_later(0.01, arrived.set_result, "answer")
        return await arrived

    loop.call_later(0.005, time.sleep, 0.2)  # the loop runs late past the 50 ms deadline
    with anyio.fail_after(0.05):
        assert await reply() == "answer"

    with pytest.raises(TimeoutError), anyio.fail_after(0.05):
        await anyio.sleep(1.0)


@pytest.mark.anyio
async def test_key_names_are_the_keys_the_store_writes(
    emulator: EmulatorProcess, server: RedisServer
) -> None:
    store = store_at(server.url, key_prefix="payouts")
    provider = generic(emulator)
    names = store.key_names(provider)
    async with opened(store, emulator) as source:
        await fetch(source, provider)
    with server.client() as admin:
        assert admin.exists(names["token"]) == 1
        assert admin.get(names["gen"]) == b"1"
    assert set(names) == {"token", "lease", "gen", "channel"}
    assert all(name.startswith("payouts:{") for name in names.values())
    assert not any(provider.client_id in name for name in names.values())
