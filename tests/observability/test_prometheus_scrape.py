"""A real Prometheus scrapes a real pool at work; every dashboard expression must return data.

The pool runs against the loopback emulator with 4-second tokens, so it
refreshes every few seconds; the run adds a burst of 503s (retried), a
revocation that a resource call recovers from through ``pool.auth()`` (a 401,
an invalidation, a miss, a replay), and steady traffic for hits.  Prometheus
(the ``prometheus`` binary, Debian package ``prometheus``) scrapes
``tokenpool.metrics.start_http_server`` every second and loads
``dashboards/alerts.yml``; then each PromQL expression of
``dashboards/tokenpool.json``, variables substituted as Grafana would, is sent
to ``/api/v1/query``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

import tokenpool.metrics
from tokenpool import TokenPool, TokenRequestError
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "tokenpool.json"
ALERTS = ROOT / "dashboards" / "alerts.yml"
JOB = "tokenpool-demo"
#: What Grafana substitutes for $__rate_interval with a 1 s scrape interval is
#: max(4 x scrape interval, step + scrape interval); 15 s is the common default.
RATE_INTERVAL = "15s"


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "the prometheus binary is not installed (Debian package 'prometheus'); CI must have it"
            )
        pytest.skip("the prometheus binary is not installed (Debian package 'prometheus')")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"prometheus not ready within {timeout} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


@pytest.fixture
def metrics_registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics_server(metrics_registry: CollectorRegistry) -> Iterator[tokenpool.metrics.MetricsServer]:
    with tokenpool.metrics.start_http_server(0, registry=metrics_registry) as server:
        yield server


@pytest.fixture
def prometheus(tmp_path: Path, metrics_server: tokenpool.metrics.MetricsServer) -> Iterator[str]:
    """A Prometheus on loopback scraping the metrics server every second; yields its base URL."""
    binary = prometheus_binary()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    # JSON is YAML; the config is written at run time because the ports are.
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "static_configs": [{"targets": [f"{metrics_server.host}:{metrics_server.port}"]}],
                    }
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def dashboard_queries(instance: str) -> list[tuple[str, str, str]]:
    """(panel title, legend, PromQL) for every target, variables substituted for one job and instance."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$job", JOB)
                .replace("$instance", instance)
            )
            assert "$" not in expr, expr
            queries.append((panel["title"], target["legendFormat"], expr))
    return queries


async def query(client: httpx.AsyncClient, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    response = await client.get("/api/v1/query", params=params)
    body = response.json()
    assert response.status_code == 200, f"{expr}: {body}"
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(series["value"][1]) for series in result]


async def poll(
    client: httpx.AsyncClient, expr: str, *, timeout: float, at: float | None = None, positive: bool = False
) -> list[dict[str, Any]]:
    """Query *expr* until it returns a finite sample (a positive one if asked), bounded by *timeout*."""

    def good(result: list[dict[str, Any]]) -> bool:
        return any(math.isfinite(v) and (v > 0 or not positive) for v in values(result))

    with anyio.move_on_after(timeout):
        while not good(result := await query(client, expr, at)):  # noqa: ASYNC110 - polls another process
            await anyio.sleep(0.5)
    return result


def provider(emulator: EmulatorProcess) -> ClientCredentials:
    client_id, client_secret = emulator.credentials("generic")
    return ClientCredentials(
        token_url=emulator.token_url("generic", tls=False),
        client_id=client_id,
        client_secret=client_secret,
    )


async def test_every_dashboard_expression_returns_data_from_a_real_prometheus(
    emulator: EmulatorProcess,
    prometheus: str,
    metrics_registry: CollectorRegistry,
    metrics_server: tokenpool.metrics.MetricsServer,
) -> None:
    instance = f"{metrics_server.host}:{metrics_server.port}"
    for name in ("generic",):
        emulator.set_lifetime(name, expires_in=4)
    resource = f"{emulator.url('generic', tls=False)}/api/resource"

    def sample(name: str, **labels: str) -> float:
        return metrics_registry.get_sample_value(name, labels) or 0.0

    async def until(condition: Any, what: str, timeout: float = 30.0) -> None:
        with anyio.move_on_after(timeout):
            while not condition():  # noqa: ASYNC110 - polls state other processes change
                await anyio.sleep(0.05)
        assert condition(), f"timed out waiting for {what}"

    pool = TokenPool(
        {"acme": provider(emulator), "globex": provider(emulator)},
        metrics=metrics_registry,
        metrics_label="name",
        metrics_interval=0.25,
    )
    async with (
        pool,
        httpx.AsyncClient(auth=pool.auth("acme"), timeout=10) as api,
        httpx.AsyncClient(base_url=prometheus, timeout=10) as prom,
        anyio.create_task_group() as traffic,
    ):
        failed_calls: list[str] = []

        async def steady_traffic() -> None:
            while True:
                try:
                    for _ in range(50):
                        await pool.token("acme")
                        await pool.token("globex")
                    response = await api.get(resource)
                    assert response.status_code == 200
                except TokenRequestError as exc:
                    # 4 s tokens leave under a second between renewal and expiry: two
                    # 503s and their backoff can outlast it, and callers then fail fast.
                    failed_calls.append(type(exc).__name__)
                await anyio.sleep(0.02)

        traffic.start_soon(steady_traffic)
        # Prometheus discovers its targets a few seconds after it starts; let it see
        # the healthy pool before things go wrong, as it would in production.
        await poll(prom, f'tokenpool_refresh_attempts_total{{job="{JOB}"}}', timeout=30)

        # A burst of 503s: the next scheduled refresh fails twice and is retried.
        emulator.fault("generic", status=503, count=2)
        await until(
            lambda: (
                sample("tokenpool_refresh_failures_total", provider="acme", reason="endpoint_error")
                + sample("tokenpool_refresh_failures_total", provider="globex", reason="endpoint_error")
                >= 2
            ),
            "two failed refreshes",
        )
        # Both retried successfully.  (A 401 while a cell is backing off would fail
        # fast with the last error instead of recovering, so the revocation waits.)
        await until(
            lambda: (
                sample("tokenpool_refresh_consecutive_failures", provider="acme")
                == sample("tokenpool_refresh_consecutive_failures", provider="globex")
                == 0
            ),
            "the retries to succeed",
        )
        # Revoked tokens: the next API call gets a 401; the pool invalidates and
        # refreshes the token, and the call is replayed.
        emulator.fault("generic", latency=0.3, count=1)  # callers pile up while that refresh is in flight
        emulator.revoke_tokens("generic")
        await until(
            lambda: sample("tokenpool_downstream_retries_total", provider="acme") >= 1, "a 401 recovery"
        )

        # An instant shortly after all that: its 15 s rate windows hold the 503s and the 401.
        incident = time.time() + 1.5

        # Prometheus has the data: every dashboard expression returns a finite sample now...
        results: dict[str, list[dict[str, Any]]] = {}
        for title, legend, expr in dashboard_queries(instance):
            result = await poll(prom, expr, timeout=60)
            assert result, f"panel {title!r} ({legend}): no data for {expr}"
            assert any(math.isfinite(v) for v in values(result)), f"{title!r} ({legend}): {result}"
        # ...and at the incident, the panels that count events show them (the gauges of
        # waiting callers, backoff and consecutive failures are 0 between scrapes' luck),
        # once Prometheus has scraped past that instant.
        latest = f'min(timestamp(tokenpool_refresh_attempts_total{{job="{JOB}"}})) > {incident:.3f}'
        assert await poll(prom, latest, timeout=30), "no scrape after the incident"
        instantaneous = {"Waiting callers", "Backoff", "Consecutive refresh failures"}
        for title, legend, expr in dashboard_queries(instance):
            result = await poll(prom, expr, timeout=30, at=incident, positive=title not in instantaneous)
            if title not in instantaneous:
                assert any(v > 0 for v in values(result)), f"{title!r} ({legend}) at the incident: {result}"
            results[f"{title} / {legend}"] = result

        # The variables' own queries find this job and instance.
        jobs = (
            await prom.get("/api/v1/label/job/values", params={"match[]": "tokenpool_refresh_attempts_total"})
        ).json()
        assert JOB in jobs["data"]
        instances = (
            await prom.get(
                "/api/v1/label/instance/values",
                params={"match[]": f'tokenpool_refresh_attempts_total{{job=~"{JOB}"}}'},
            )
        ).json()
        assert instance in instances["data"]

        # The alert rules load and evaluate; the 401 fired TokenpoolDownstream401, nothing else fires.
        rules = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
        expected_rules = len(yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"])
        assert [r["health"] for g in rules for r in g["rules"]] == ["ok"] * expected_rules
        firing: set[str] = set()
        with anyio.move_on_after(30):
            while "TokenpoolDownstream401" not in firing:
                alerts = (await prom.get("/api/v1/alerts")).json()["data"]["alerts"]
                firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
                await anyio.sleep(0.5)
        assert firing == {"TokenpoolDownstream401"}

        traffic.cancel_scope.cancel()

    summary = {
        key: {
            s["metric"].get("provider", "") + " " + s["metric"].get("reason", ""): s["value"][1]
            for s in result
        }
        for key, result in results.items()
    }
    print(json.dumps(summary, indent=1))  # what each panel showed, for the curious (-s)
    print(f"calls failed during the 503 burst: {len(failed_calls)}")
    assert set(failed_calls) <= {"TokenEndpointError"}
    # The values make sense, not just exist.
    ratio = {s["metric"]["provider"]: float(s["value"][1]) for s in results["Hit ratio / {{provider}}"]}
    assert all(0.9 < value <= 1.0 for value in ratio.values()), ratio
    assert ratio["acme"] < 1.0  # the 401 recovery waited
    remaining = [float(s["value"][1]) for s in results["Remaining token lifetime / {{provider}}"]]
    assert all(0 < value <= 4 for value in remaining), remaining
