"""The one 401 flow (refresh once, replay once) and its drivers, against the real emulator on loopback.

The flow itself is sans-IO (``tokenpool._auth_flow.unauthorized_flow``), so its
decisions are checked step by step first; the rest drives it through
``TokenPool.auth()`` (httpx.AsyncClient, asyncio and trio) and
``BlockingTokenPool.auth()`` (httpx.Client) against the emulator, whose
counters say what the server really saw: how many token requests, how many
resource calls refused with 401.  The requests/Locust driver runs in a
gevent-patched subprocess (tests/integrations/test_locust.py).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from _transports import BoundedTransport
from prometheus_client import CollectorRegistry

from tokenpool import (
    BlockingTokenPool,
    InsecureTransportError,
    RefreshPolicy,
    Token,
    TokenEndpointError,
    TokenPool,
)
from tokenpool._auth_flow import (
    NEED_TOKEN,
    CannotReplay,
    Invalidate,
    ReplaySkipped,
    Report,
    SendRequest,
    unauthorized_flow,
)
from tokenpool._replay import MAX_REPLAY_BODY_BYTES
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LogEvents = list[MutableMapping[str, Any]]


# -- helpers --------------------------------------------------------------------------------------


def generic(emulator: EmulatorProcess, **kwargs: Any) -> ClientCredentials:
    client_id, client_secret = emulator.credentials("generic")
    return ClientCredentials(
        token_url=emulator.token_url("generic"), client_id=client_id, client_secret=client_secret, **kwargs
    )


def provider_stats(emulator: EmulatorProcess, provider: str = "generic") -> dict[str, Any]:
    stats: dict[str, Any] = emulator.stats(events=False)["providers"][provider]
    return stats


def token_requests(emulator: EmulatorProcess) -> int:
    return int(provider_stats(emulator)["token_requests"])


def resource_401s(emulator: EmulatorProcess, provider: str = "generic") -> int:
    return sum(int(n) for n in provider_stats(emulator, provider)["resource_401"].values())


def counter(registry: CollectorRegistry, name: str) -> float:
    """A counter's total over all its label values (the label scheme is the pool's business)."""
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == f"{name}_total"
    )


def unauthorized(registry: CollectorRegistry) -> float:
    return counter(registry, "tokenpool_downstream_unauthorized")


def retries(registry: CollectorRegistry) -> float:
    return counter(registry, "tokenpool_downstream_retries")


def api_url(emulator: EmulatorProcess, provider: str = "generic") -> str:
    return f"{emulator.url(provider)}/api/resource"


def ssl_context(emulator: EmulatorProcess) -> Any:
    return emulator.ssl_context()


def body_of(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def chunks(body: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def sync_stream(body: bytes) -> Iterator[bytes]:
    """A generator body: httpx sends it chunked and cannot rewind it by itself."""
    yield from chunks(body)


async def async_stream(body: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks(body):
        await anyio.lowlevel.checkpoint()  # a real async source yields to others between chunks
        yield chunk


class _Passthrough(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Hands a request stream on unchanged and keeps a copy of what went out."""

    def __init__(self, inner: Any, sent: list[bytes]) -> None:
        self._inner = inner
        self._sent = sent
        self._seen: list[bytes] = []

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._seen.append(chunk)
            yield chunk
        self._sent.append(b"".join(self._seen))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._seen.append(chunk)
            yield chunk
        self._sent.append(b"".join(self._seen))


@dataclass
class WireRecorder(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A real HTTP transport that records each request body as it went on the wire.

    It forwards a copy of the request (same method, URL, headers, extensions)
    whose stream passes through a recorder, so the auth's own request object is
    never touched.
    """

    verify: Any
    sent: list[bytes] = field(default_factory=list)
    _sync: httpx.HTTPTransport | None = None
    _async: httpx.AsyncHTTPTransport | None = None

    def _copy(self, request: httpx.Request) -> httpx.Request:
        return httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            stream=_Passthrough(request.stream, self.sent),
            extensions=request.extensions,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._sync is None:
            self._sync = httpx.HTTPTransport(verify=self.verify)
        return self._sync.handle_request(self._copy(request))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._async is None:
            self._async = httpx.AsyncHTTPTransport(verify=self.verify)
        return await self._async.handle_async_request(self._copy(request))

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()


def skipped_events(log_events: LogEvents) -> list[MutableMapping[str, Any]]:
    return [event for event in log_events if event["event"] == "token.replay_skipped"]


def assert_nothing_secret(events: LogEvents, token: Token, body: bytes) -> None:
    for event in events:
        for value in event.values():
            text = str(value)
            assert token.access_token not in text
            assert len(text) < 200  # never a body or a chunk of one
        assert body[:32] not in repr(event).encode()


# -- the flow, step by step (no I/O) ---------------------------------------------------------------


def _token(label: str) -> Token:
    return Token(
        access_token=f"secret-{label}",
        token_type="Bearer",
        scope=None,
        expires_in=600,
        sent_at=0,
        refresh_at=480,
        expires_at=600,
        usable_until=590,
    )


@dataclass
class _Resp:
    status_code: int


@dataclass
class _Adapter:
    """Requests are dicts; rewinding can be told to fail."""

    cannot: str | None = None
    rewound: int = 0

    def begin(self, request: dict[str, Any]) -> dict[str, Any]:
        request["begun"] = True
        return request

    def prepare(self, request: dict[str, Any], token: Token) -> None:
        request["authorization"] = token.authorization

    def rewind(self, request: dict[str, Any]) -> dict[str, Any] | CannotReplay:
        self.rewound += 1
        if self.cannot is not None:
            return CannotReplay(self.cannot)
        return {**request, "replay": True}


def test_flow_without_a_401_sends_once() -> None:
    flow = unauthorized_flow({}, _Adapter())
    assert next(flow) is NEED_TOKEN
    sent = flow.send(_token("a"))
    assert isinstance(sent, SendRequest)
    assert sent.request == {"begun": True, "authorization": "Bearer secret-a"}
    with pytest.raises(StopIteration):
        flow.send(_Resp(200))


def test_flow_replays_once_with_the_new_token_and_counts_it_when_sent() -> None:
    first, fresh = _token("a"), _token("b")
    flow = unauthorized_flow({}, _Adapter())
    next(flow)
    flow.send(first)
    assert flow.send(_Resp(401)) == Invalidate(first)
    assert flow.send(True) is NEED_TOKEN
    assert flow.send(fresh) == Report(retried=True)
    replay = flow.send(None)
    assert isinstance(replay, SendRequest)
    assert replay.request["authorization"] == "Bearer secret-b"
    assert replay.request["replay"] is True
    # A second 401 is counted and returned: the flow ends, it never loops.
    assert flow.send(_Resp(401)) == Report(retried=False)
    with pytest.raises(StopIteration):
        flow.send(None)


def test_flow_returns_the_401_when_the_pool_hands_back_the_same_token() -> None:
    token = _token("a")
    flow = unauthorized_flow({}, _Adapter())
    next(flow)
    flow.send(token)
    assert flow.send(_Resp(401)) == Invalidate(token)
    assert flow.send(False) is NEED_TOKEN  # the pool declined (cooldown) …
    assert flow.send(token) == Report(retried=False)  # … and the same token is no reason to replay
    with pytest.raises(StopIteration):
        flow.send(None)


def test_flow_counts_no_replay_when_the_new_token_cannot_be_had() -> None:
    token = _token("a")
    flow = unauthorized_flow({}, _Adapter())
    next(flow)
    flow.send(token)
    flow.send(_Resp(401))
    flow.send(True)
    failure = TokenEndpointError("token endpoint answered 503", status_code=503)
    assert flow.throw(failure) == Report(retried=False)
    with pytest.raises(TokenEndpointError):
        flow.send(None)


def test_flow_skips_a_replay_it_cannot_send_without_fetching_a_token() -> None:
    token = _token("a")
    adapter = _Adapter(cannot="body_too_large")
    flow = unauthorized_flow({}, adapter)
    next(flow)
    flow.send(token)
    assert flow.send(_Resp(401)) == Invalidate(token)  # the refused token is still dropped
    assert flow.send(True) == ReplaySkipped("body_too_large")
    assert flow.send(None) == Report(retried=False)
    with pytest.raises(StopIteration):
        flow.send(None)
    assert adapter.rewound == 1


# -- async: TokenPool.auth() with httpx.AsyncClient -------------------------------------------------


def async_pool(emulator: EmulatorProcess, registry: CollectorRegistry, **kwargs: Any) -> TokenPool:
    provider = kwargs.pop("provider", None) or generic(emulator)
    return TokenPool({"acme": provider}, ca_file=emulator.ca_file, metrics=registry, **kwargs)


async def test_async_one_replay_after_revocation(emulator: EmulatorProcess) -> None:
    registry = CollectorRegistry()
    async with async_pool(emulator, registry) as pool:
        first = await pool.token("acme")
        emulator.revoke_tokens("generic")
        async with httpx.AsyncClient(auth=pool.auth("acme"), verify=ssl_context(emulator)) as client:
            response = await client.post(api_url(emulator), json={"amount": 1})
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        assert (await pool.token("acme")) is not first
    assert token_requests(emulator) == 2
    assert resource_401s(emulator) == 1
    assert unauthorized(registry) == 1
    assert retries(registry) == 1


@pytest.mark.parametrize("size", [256 * 1024, MAX_REPLAY_BODY_BYTES], ids=["256KiB", "at-bound"])
async def test_async_streaming_body_is_replayed_with_the_same_bytes(
    emulator: EmulatorProcess, size: int
) -> None:
    body = body_of(size)
    registry = CollectorRegistry()
    wire = WireRecorder(verify=ssl_context(emulator))
    async with async_pool(emulator, registry) as pool:
        await pool.token("acme")
        emulator.revoke_tokens("generic")
        async with httpx.AsyncClient(auth=pool.auth("acme"), transport=wire) as client:
            # Before the tee this raised httpx.StreamConsumed from inside httpx.
            response = await client.post(api_url(emulator), content=async_stream(body))
    assert response.status_code == 200
    assert response.json()["body_bytes"] == size
    assert wire.sent == [body, body]  # the 401'd attempt and the replay, byte for byte
    assert resource_401s(emulator) == 1
    assert retries(registry) == 1


async def test_async_streaming_body_over_the_bound_returns_the_401(
    emulator: EmulatorProcess, log_events: LogEvents
) -> None:
    body = body_of(MAX_REPLAY_BODY_BYTES + 1)
    registry = CollectorRegistry()
    wire = WireRecorder(verify=ssl_context(emulator))
    async with async_pool(emulator, registry) as pool:
        first = await pool.token("acme")
        emulator.revoke_tokens("generic")
        async with httpx.AsyncClient(auth=pool.auth("acme"), transport=wire) as client:
            response = await client.post(api_url(emulator), content=async_stream(body))
            assert response.status_code == 401
            # The refused token was dropped all the same: the next call has a fresh one.
            again = await client.post(api_url(emulator), content=b"small")
        assert again.status_code == 200
    assert wire.sent == [body, b"small"]  # sent once, never replayed
    assert resource_401s(emulator) == 1
    assert token_requests(emulator) == 2
    assert unauthorized(registry) == 1
    assert retries(registry) == 0
    (skipped,) = skipped_events(log_events)
    assert skipped["provider"] == "acme"
    assert skipped["reason"] == "body_too_large"
    assert skipped["log_level"] == "warning"
    assert_nothing_secret(log_events, first, body)


async def test_async_replay_is_not_counted_when_the_new_token_fails(emulator: EmulatorProcess) -> None:
    registry = CollectorRegistry()
    async with async_pool(emulator, registry) as pool:
        await pool.token("acme")
        emulator.revoke_tokens("generic")
        emulator.fault("generic", status=503, count=100)  # every refresh fails
        async with httpx.AsyncClient(auth=pool.auth("acme"), verify=ssl_context(emulator)) as client:
            with pytest.raises(TokenEndpointError):
                await client.post(api_url(emulator), content=b"payout")
    assert resource_401s(emulator) == 1
    assert unauthorized(registry) == 1  # the 401 was seen…
    assert retries(registry) == 0  # …and no replay went out, so none is counted


async def test_async_second_401_is_returned_and_the_same_token_is_not_replayed(
    emulator: EmulatorProcess,
) -> None:
    # Long tokens and a long cooldown: the test does not depend on how fast it runs.
    emulator.set_lifetime("generic", expires_in=86_400)
    provider = generic(emulator, refresh=RefreshPolicy(unauthorized_cooldown=3_600))
    registry = CollectorRegistry()
    seen: list[tuple[int, int]] = []  # per call: replays sent, token requests caused
    async with async_pool(emulator, registry, provider=provider) as pool:
        await pool.token("acme")
        # A generic token is unknown to Navro's API: every attempt gets a 401.
        navro = api_url(emulator, "navro")
        async with httpx.AsyncClient(auth=pool.auth("acme"), verify=ssl_context(emulator)) as client:
            # Bounded: the pool refreshes for young replacements only a small, fixed
            # number of times before it declines and hands back the refused token.
            for _ in range(5):
                before = token_requests(emulator)
                response = await client.get(navro)
                assert response.status_code == 401
                assert [r.status_code for r in response.history] in ([], [401])  # never more than one replay
                seen.append((len(response.history), token_requests(emulator) - before))
                if not response.history:
                    break
            # Declined once, declined again: an API that refuses every token costs no more requests.
            before = token_requests(emulator)
            response = await client.get(navro)
            assert (response.status_code, response.history) == (401, [])
            assert token_requests(emulator) == before
    assert seen[0] == (1, 1)  # the first 401: one refresh, one replay, whose 401 is the answer
    assert seen[-1] == (0, 0)  # the pool declined and gave back the same token: no replay
    # A replay only ever went out with a new token.
    assert all(replays == new_tokens for replays, new_tokens in seen)
    replays = sum(replays for replays, _ in seen)
    calls = len(seen) + 1
    assert resource_401s(emulator, "navro") == calls + replays
    assert (unauthorized(registry), retries(registry)) == (calls + replays, replays)


async def test_thousand_concurrent_401s_on_one_token_cost_one_refresh(emulator: EmulatorProcess) -> None:
    calls = 1_000
    registry = CollectorRegistry()
    async with async_pool(emulator, registry) as pool:
        await pool.token("acme")
        emulator.revoke_tokens("generic")
        emulator.fault("generic", latency=0.3, count=1)  # the refresh stays in flight while 401s arrive
        transport = BoundedTransport(httpx.AsyncHTTPTransport(verify=ssl_context(emulator)), 50)
        results: list[tuple[int, int, int]] = []
        async with httpx.AsyncClient(auth=pool.auth("acme"), transport=transport, timeout=60) as client:

            async def call(i: int) -> None:
                body = f"payout-{i}".encode()
                # Half of them stream their body, so the tee is under the same load.
                content: Any = body if i % 2 else async_stream(body)
                response = await client.post(api_url(emulator), content=content)
                results.append((response.status_code, response.json().get("body_bytes", -1), len(body)))

            async with anyio.create_task_group() as tg:
                for i in range(calls):
                    tg.start_soon(call, i)
    assert len(results) == calls
    assert all(status == 200 and got == want for status, got, want in results)
    assert token_requests(emulator) == 2
    assert resource_401s(emulator) == calls
    assert retries(registry) == calls


async def test_plain_http_is_refused_before_a_token_is_fetched(emulator: EmulatorProcess) -> None:
    async with (
        async_pool(emulator, CollectorRegistry(), warm_up="lazy") as pool,
        httpx.AsyncClient(auth=pool.auth("acme")) as client,
    ):
        with pytest.raises(InsecureTransportError):
            await client.get("http://example.invalid/api")
    assert token_requests(emulator) == 0


# -- sync: BlockingTokenPool.auth() with httpx.Client ----------------------------------------------


def blocking_pool(emulator: EmulatorProcess, registry: CollectorRegistry, **kwargs: Any) -> BlockingTokenPool:
    provider = kwargs.pop("provider", None) or generic(emulator)
    return BlockingTokenPool({"acme": provider}, ca_file=emulator.ca_file, metrics=registry, **kwargs)


def test_sync_one_replay_after_revocation(emulator: EmulatorProcess) -> None:
    registry = CollectorRegistry()
    with blocking_pool(emulator, registry) as pool:
        first = pool.token("acme")
        emulator.revoke_tokens("generic")
        with httpx.Client(auth=pool.auth("acme"), verify=ssl_context(emulator)) as client:
            response = client.post(api_url(emulator), data={"amount": "1"})
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        assert pool.token("acme") is not first
    assert token_requests(emulator) == 2
    assert resource_401s(emulator) == 1
    assert (unauthorized(registry), retries(registry)) == (1, 1)


def test_sync_hits_are_served_on_the_callers_thread_and_counted(emulator: EmulatorProcess) -> None:
    with blocking_pool(emulator, CollectorRegistry()) as pool:
        before = pool.statistics().cells["acme"].hits
        with ThreadPoolExecutor(max_workers=8) as executor:
            tokens = list(executor.map(lambda _: pool.token("acme"), range(400)))
        assert len({id(token) for token in tokens}) == 1
        # Every call was a hit, counted exactly although eight threads raced.
        assert pool.statistics().cells["acme"].hits - before == 400
    assert token_requests(emulator) == 1


@pytest.mark.parametrize("size", [256 * 1024, MAX_REPLAY_BODY_BYTES], ids=["256KiB", "at-bound"])
def test_sync_streaming_body_is_replayed_with_the_same_bytes(emulator: EmulatorProcess, size: int) -> None:
    body = body_of(size)
    registry = CollectorRegistry()
    wire = WireRecorder(verify=ssl_context(emulator))
    with blocking_pool(emulator, registry) as pool:
        pool.token("acme")
        emulator.revoke_tokens("generic")
        with httpx.Client(auth=pool.auth("acme"), transport=wire) as client:
            response = client.post(api_url(emulator), content=sync_stream(body))
    assert response.status_code == 200
    assert response.json()["body_bytes"] == size
    assert wire.sent == [body, body]
    assert resource_401s(emulator) == 1
    assert retries(registry) == 1


def test_sync_streaming_body_over_the_bound_returns_the_401(
    emulator: EmulatorProcess, log_events: LogEvents
) -> None:
    body = body_of(MAX_REPLAY_BODY_BYTES + 1)
    registry = CollectorRegistry()
    wire = WireRecorder(verify=ssl_context(emulator))
    with blocking_pool(emulator, registry) as pool:
        first = pool.token("acme")
        emulator.revoke_tokens("generic")
        with httpx.Client(auth=pool.auth("acme"), transport=wire) as client:
            response = client.post(api_url(emulator), content=sync_stream(body))
    assert response.status_code == 401
    assert wire.sent == [body]
    assert resource_401s(emulator) == 1
    assert (unauthorized(registry), retries(registry)) == (1, 0)
    (skipped,) = skipped_events(log_events)
    assert (skipped["provider"], skipped["reason"]) == ("acme", "body_too_large")
    assert_nothing_secret(log_events, first, body)


def test_sync_replay_is_not_counted_when_the_new_token_fails(emulator: EmulatorProcess) -> None:
    registry = CollectorRegistry()
    with blocking_pool(emulator, registry) as pool:
        pool.token("acme")
        emulator.revoke_tokens("generic")
        emulator.fault("generic", status=503, count=100)
        with (
            httpx.Client(auth=pool.auth("acme"), verify=ssl_context(emulator)) as client,
            pytest.raises(TokenEndpointError),
        ):
            client.post(api_url(emulator), content=b"payout")
    assert resource_401s(emulator) == 1
    assert (unauthorized(registry), retries(registry)) == (1, 0)


def test_sync_second_401_is_returned_not_looped(emulator: EmulatorProcess) -> None:
    registry = CollectorRegistry()
    with blocking_pool(emulator, registry) as pool:
        pool.token("acme")
        with httpx.Client(auth=pool.auth("acme"), verify=ssl_context(emulator)) as client:
            response = client.get(api_url(emulator, "navro"))
    assert response.status_code == 401
    assert [r.status_code for r in response.history] == [401]
    assert token_requests(emulator) == 2
    assert resource_401s(emulator, "navro") == 2
    assert (unauthorized(registry), retries(registry)) == (2, 1)


def test_sync_concurrent_401s_from_threads_cost_one_refresh(emulator: EmulatorProcess) -> None:
    calls = 200
    registry = CollectorRegistry()
    with blocking_pool(emulator, registry) as pool:
        pool.token("acme")
        emulator.revoke_tokens("generic")
        emulator.fault("generic", latency=0.3, count=1)
        with (
            httpx.Client(
                auth=pool.auth("acme"),
                verify=ssl_context(emulator),
                limits=httpx.Limits(max_connections=20),
                timeout=60,
            ) as client,
            ThreadPoolExecutor(max_workers=20) as executor,
        ):
            statuses = list(
                executor.map(
                    lambda i: client.post(api_url(emulator), content=b"x" * i).status_code, range(calls)
                )
            )
    assert statuses == [200] * calls
    assert token_requests(emulator) == 2
    # Only the calls sent before the new token landed (at most one per thread) met a 401;
    # each of them was replayed exactly once.
    assert 1 <= resource_401s(emulator) <= 20
    assert retries(registry) == resource_401s(emulator)
