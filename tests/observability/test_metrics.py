"""Metrics bookkeeping (registration, hit/miss folding, a silent hit path) and the /metrics helpers.

Token requests go to an in-process ``httpx.MockTransport``: these tests are
about counting, not about HTTP.
"""

from __future__ import annotations

import gzip
import json
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

import tokenpool.metrics
from tokenpool import (
    CredentialsRejected,
    InvalidTokenResponse,
    TokenEndpointError,
    TokenEndpointUnreachable,
    TokenPool,
    TokenRequestError,
)
from tokenpool._metrics import FAILURE_REASONS, OUTCOMES, PoolMetrics
from tokenpool._observe import failure_reason, outcome_of
from tokenpool.providers import ClientCredentials

TOKEN_URL = "http://127.0.0.1:1/oauth/token"


class _Body(httpx.AsyncByteStream):
    """A body still to be read, as from a network transport."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._body


def token_endpoint(request: httpx.Request) -> httpx.Response:
    body = json.dumps({"access_token": "at-unit-test", "token_type": "Bearer", "expires_in": 300}).encode()
    # A streamed body: the pool reads token answers with aiter_raw(), which refuses the
    # already-read body that httpx.Response(json=...) would carry.
    return httpx.Response(200, headers={"Content-Type": "application/json"}, stream=_Body(body))


def provider() -> ClientCredentials:
    return ClientCredentials(token_url=TOKEN_URL, client_id="unit", client_secret="unit-secret")


def mock_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint))


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def families(registry: CollectorRegistry) -> list[str]:
    return [family.name for family in registry.collect()]


# -- registration -----------------------------------------------------------------------------


def test_series_are_registered_once_per_registry() -> None:
    registry = CollectorRegistry()
    pools = [TokenPool({"a": provider()}, metrics=registry, metrics_label="name") for _ in range(3)]
    names = families(registry)
    assert (
        len(names) == len(set(names)) == 12
    )  # 11 per-pool series and the fleet store's (registered always, children only with a store)
    assert all(name.startswith("tokenpool_") for name in names)
    # A pool with another registry registers there, and only there.
    other = CollectorRegistry()
    TokenPool({"b": provider()}, metrics=other)
    assert families(other) == names
    assert families(registry) == names
    assert len(pools) == 3


def test_metric_series_follow_prometheus_naming() -> None:
    registry = CollectorRegistry()
    PoolMetrics(registry)
    for family in registry.collect():
        assert family.name.startswith("tokenpool_")
        if family.type == "counter":
            assert not family.name.endswith("_total")  # prometheus-client appends it
        if family.type == "histogram":
            assert family.name.endswith("_seconds")


def test_metrics_false_registers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    for cls in (Counter, Gauge, Histogram):
        original = cls.__init__

        def spy(self: Any, name: str, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            made.append(name)
            __original(self, name, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", spy)
    before = families(REGISTRY)
    TokenPool({"silent": provider()}, metrics=False)
    assert made == []
    assert families(REGISTRY) == before


@pytest.mark.anyio
async def test_metrics_false_pool_records_nothing_while_running() -> None:
    async with (
        mock_client() as client,
        TokenPool({"silent-run": provider()}, metrics=False, client=client) as pool,
    ):
        for _ in range(5):
            await pool.token("silent-run")
    for family in REGISTRY.collect():
        for s in family.samples:
            assert s.labels.get("provider") != "silent-run"


def test_touch_exports_every_series_of_a_provider_at_zero() -> None:
    """A counter born at 1 is no increase to rate(): every label value must exist from the start."""
    registry = CollectorRegistry()
    PoolMetrics(registry).touch("acme")
    for reason in FAILURE_REASONS:
        assert sample(registry, "tokenpool_refresh_failures_total", provider="acme", reason=reason) == 0
    for outcome in OUTCOMES:
        assert (
            sample(registry, "tokenpool_refresh_duration_seconds_count", provider="acme", outcome=outcome)
            == 0
        )
    for name in (
        "tokenpool_cache_hits_total",
        "tokenpool_cache_misses_total",
        "tokenpool_refresh_attempts_total",
        "tokenpool_downstream_unauthorized_total",
        "tokenpool_downstream_retries_total",
        "tokenpool_waiting_callers",
        "tokenpool_refresh_backoff_seconds",
        "tokenpool_refresh_consecutive_failures",
    ):
        assert sample(registry, name, provider="acme") == 0, name
    # No token yet: no expiry to report (0 would read as "expired in 1970").
    assert sample(registry, "tokenpool_token_expiry_timestamp_seconds", provider="acme") is None


@pytest.mark.parametrize(
    "error",
    [
        CredentialsRejected("no", status_code=401),
        InvalidTokenResponse("bad"),
        TokenEndpointError("busy", status_code=503),
        TokenEndpointError("slow down", status_code=429),
        TokenEndpointUnreachable("token request timed out after 15 s"),
        TokenEndpointUnreachable("cannot reach the token endpoint"),
        TokenRequestError("other"),
    ],
)
def test_every_reason_and_outcome_is_in_the_exported_vocabulary(error: TokenRequestError) -> None:
    assert failure_reason(error) in FAILURE_REASONS
    assert outcome_of(error) in OUTCOMES


# -- hits and misses --------------------------------------------------------------------------


@dataclass
class FakeCell:
    group: str
    hits: int = 0
    misses: int = 0
    foreign_hits: int = 0
    folded_hits: int = 0
    folded_misses: int = 0


def fakes(*cells: FakeCell) -> list[Any]:
    """Stand-ins for cells: without a clock reading, fold() reads only the counters and the group."""
    return list(cells)


def test_fold_adds_only_the_deltas() -> None:
    registry = CollectorRegistry()
    metrics = PoolMetrics(registry)
    a, b = FakeCell("a"), FakeCell("b")
    metrics.fold(fakes(a, b))
    assert sample(registry, "tokenpool_cache_hits_total", provider="a") is None  # nothing to add yet
    a.hits, a.misses, b.hits = 10, 1, 3
    metrics.fold(fakes(a, b))
    metrics.fold(fakes(a, b))  # nothing new: nothing added
    a.hits += 5
    metrics.fold(fakes(a, b))
    assert sample(registry, "tokenpool_cache_hits_total", provider="a") == 15
    assert sample(registry, "tokenpool_cache_misses_total", provider="a") == 1
    assert sample(registry, "tokenpool_cache_hits_total", provider="b") == 3


def test_two_pools_on_one_registry_add_up() -> None:
    registry = CollectorRegistry()
    first, second = PoolMetrics(registry), PoolMetrics(registry)
    first.fold(fakes(FakeCell("a", hits=4, misses=1)))
    second.fold(fakes(FakeCell("a", hits=6, misses=2)))
    assert sample(registry, "tokenpool_cache_hits_total", provider="a") == 10
    assert sample(registry, "tokenpool_cache_misses_total", provider="a") == 3


@pytest.mark.anyio
async def test_hits_and_misses_folded_at_shutdown_equal_the_calls_made() -> None:
    registry = CollectorRegistry()
    async with mock_client() as client:
        pool = TokenPool(
            {"acme": provider()},
            metrics=registry,
            metrics_label="name",
            client=client,
            warm_up="lazy",
            metrics_interval=3600,
        )
        async with pool:
            token = await pool.token("acme")  # cold: a miss
            for _ in range(99):
                await pool.token("acme")  # 99 hits
            assert await pool.invalidate("acme", token)
            await pool.token("acme")  # invalidated: a miss
            for _ in range(50):
                await pool.token("acme")  # 50 more hits
            # The periodic fold has not run yet (an hour away): counters untouched.
            assert sample(registry, "tokenpool_cache_hits_total", provider="acme") == 0
            stats = pool.statistics()
        assert (stats.hits, stats.misses) == (149, 2)
        assert sample(registry, "tokenpool_cache_hits_total", provider="acme") == 149
        assert sample(registry, "tokenpool_cache_misses_total", provider="acme") == 2
        assert sample(registry, "tokenpool_refresh_attempts_total", provider="acme") == 2
        assert (
            sample(registry, "tokenpool_refresh_duration_seconds_count", provider="acme", outcome="success")
            == 2
        )


@pytest.mark.anyio
async def test_periodic_folds_and_the_final_fold_do_not_double_count() -> None:
    registry = CollectorRegistry()
    async with mock_client() as client:
        pool = TokenPool(
            {"acme": provider()}, metrics=registry, metrics_label="name", client=client, metrics_interval=0.01
        )
        async with pool:
            for round_ in range(5):
                for _ in range(20):
                    await pool.token("acme")
                expected = 20 * (round_ + 1)
                with anyio.fail_after(5):
                    # The publisher task folds every 10 ms; wait for it (bounded).
                    while sample(registry, "tokenpool_cache_hits_total", provider="acme") != expected:  # noqa: ASYNC110
                        await anyio.sleep(0.005)
            stats = pool.statistics()
    assert sample(registry, "tokenpool_cache_hits_total", provider="acme") == stats.hits == 100
    # The warm-up waited for the first token, and the pool counts that as a miss.
    assert sample(registry, "tokenpool_cache_misses_total", provider="acme") == stats.misses == 1


# -- the hit path -----------------------------------------------------------------------------


@pytest.fixture
def prometheus_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call into prometheus-client's metric objects, by method name."""
    calls: list[str] = []

    def wrap(cls: type, method: str) -> None:
        original = getattr(cls, method)

        def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(f"{cls.__name__}.{method}")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, counting)

    for cls, methods in (
        (Counter, ("inc", "labels")),
        (Gauge, ("inc", "dec", "set", "labels")),
        (Histogram, ("observe", "labels")),
    ):
        for method in methods:
            wrap(cls, method)
    return calls


@pytest.mark.anyio
async def test_the_hit_path_makes_no_prometheus_call(prometheus_calls: list[str]) -> None:
    registry = CollectorRegistry()
    async with mock_client() as client:
        pool = TokenPool(
            {"acme": provider()}, metrics=registry, metrics_label="name", client=client, metrics_interval=3600
        )
        async with pool:
            prometheus_calls.clear()  # warm-up made its calls; from here on only hits
            for _ in range(1000):
                await pool.token("acme")
            assert prometheus_calls == []
    # The wrappers do see the fold at shutdown, so the silence above means something.
    assert "Counter.inc" in prometheus_calls
    assert sample(registry, "tokenpool_cache_hits_total", provider="acme") == 1000


# -- serving /metrics -------------------------------------------------------------------------


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - a loopback http URL
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def registry_with_samples() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = PoolMetrics(registry)
    metrics.touch("acme")
    metrics.fold(fakes(FakeCell("acme", hits=7, misses=2)))
    metrics.refreshed("acme", "acme", 0.02)
    metrics.series.expiry.labels("acme").set(2_000_000_000.0)
    return registry


def parse(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def test_start_http_server_serves_metrics(registry_with_samples: CollectorRegistry) -> None:
    with tokenpool.metrics.start_http_server(0, registry=registry_with_samples) as server:
        assert server.host == "127.0.0.1"
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        status, headers, body = fetch(server.url)
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        values = parse(body)
        assert values[("tokenpool_cache_hits_total", (("provider", "acme"),))] == 7
        assert values[("tokenpool_token_expiry_timestamp_seconds", (("provider", "acme"),))] == 2e9
        # gzip, OpenMetrics and name[] filtering, as prometheus-client's own server offers.
        status, headers, body = fetch(server.url, **{"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"
        assert parse(gzip.decompress(body)) == values
        status, headers, body = fetch(server.url, Accept="application/openmetrics-text; version=1.0.0")
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")
        status, _, body = fetch(server.url + "?name[]=tokenpool_cache_misses_total")
        assert {name for name, _ in parse(body)} == {"tokenpool_cache_misses_total"}
        status, _, _ = fetch(server.url.replace("/metrics", "/elsewhere"))
        assert status == 404
    # Closed: the port is released.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)  # noqa: S310


def test_start_http_server_serves_the_global_registry_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    PoolMetrics().touch("default-registry-provider")
    with tokenpool.metrics.start_http_server(0) as server:
        _, _, body = fetch(server.url)
    assert b'provider="default-registry-provider"' in body


def test_post_is_refused(registry_with_samples: CollectorRegistry) -> None:
    with tokenpool.metrics.start_http_server(0, registry=registry_with_samples) as server:
        request = urllib.request.Request(server.url, data=b"x", method="POST")  # noqa: S310
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310
        info.value.close()
    assert info.value.code == 405
    assert info.value.headers["Allow"] == "GET, HEAD"


def test_multiprocess_dir_is_read_at_scrape_time_and_never_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    environ_before = dict(os.environ)
    with tokenpool.metrics.start_http_server(0) as server:
        _, _, body = fetch(server.url)
        assert b"tokenpool_" in body or b"python_" in body  # the global registry
        # Set after the server started: the next scrape merges the (empty) directory instead.
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        status, _, body = fetch(server.url)
        assert status == 200
        assert body == b""
        # The directory disappears: a clean 500, no traceback.
        tmp_path.rmdir()
        status, _, body = fetch(server.url)
        assert status == 500
        assert b"Traceback" not in body
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert dict(os.environ) == environ_before


def test_a_multiprocess_dir_that_is_not_a_directory_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(tokenpool.ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR"):
        tokenpool.metrics.start_http_server(0)
    with pytest.raises(tokenpool.ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR"):
        tokenpool.metrics.make_asgi_app()


def test_mark_process_dead_without_multiprocess_mode_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    tokenpool.metrics.mark_process_dead(12345)


def test_mark_process_dead_removes_live_gauge_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name in ("gauge_livemin_4242.db", "gauge_livesum_4242.db", "counter_4242.db", "gauge_livemax_7.db"):
        (tmp_path / name).write_bytes(b"")
    tokenpool.metrics.mark_process_dead(4242)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_4242.db", "gauge_livemax_7.db"]


ASGICall = Callable[..., Any]


@pytest.mark.anyio
async def test_asgi_app_serves_metrics(registry_with_samples: CollectorRegistry) -> None:
    app = tokenpool.metrics.make_asgi_app(registry=registry_with_samples)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert parse(response.content)[("tokenpool_cache_misses_total", (("provider", "acme"),))] == 2
        response = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert response.headers["content-encoding"] == "gzip"
        assert parse(response.content)[("tokenpool_cache_hits_total", (("provider", "acme"),))] == 7
        response = await client.post("/metrics")
        assert response.status_code == 405


@pytest.mark.anyio
async def test_asgi_app_answers_lifespan_events() -> None:
    app = tokenpool.metrics.make_asgi_app(registry=CollectorRegistry())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_public_surface() -> None:
    assert sorted(tokenpool.metrics.__all__) == [
        "ASGIApp",
        "MetricsServer",
        "make_asgi_app",
        "mark_process_dead",
        "start_http_server",
    ]
    assert json.dumps(tokenpool.metrics.__all__)
