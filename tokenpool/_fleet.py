"""The fleet engine behind ``tokenpool demo`` and ``benchmarks/``: worker processes hammering the emulator.

A *fleet run* starts W worker **processes** (multiprocessing ``spawn``); each
one opens an HTTP client and an auth strategy (a :class:`TokenPool` by
default) for its whole life and runs C concurrent tasks per provider, each
looping real resource calls against the loopback emulator until a call count
or a deadline ends it.  Workers stream progress snapshots to the parent and
send one :class:`WorkerResult` at the end, each over its own pipe (nothing is
shared between workers, so one that dies, or is killed on purpose by a
scenario, cannot block the others); the parent merges them into a
:class:`FleetResult`.

Things a reader of the figures should know:

- **In-flight bound.**  Every worker puts a FIFO semaphore (``max_in_flight``)
  in front of its HTTP calls, and the task acquires it *before* asking for a
  token.  Without it, httpcore's pool rescans every queued request on every
  event and the load generator, not the system under test, becomes the
  bottleneck (see ``PEERS.md``).  Time spent queueing for a slot is not
  counted in any latency figure.
- **Token wait** is the time spent in ``await pool.token(name)`` for each call,
  measured on its own before the request is sent (the auth flow's own lookup
  right after is then a hit).
- **Auth overhead** is the time from the call's start (slot held) to the
  moment the resource request reaches the transport: token wait, auth flow and
  httpx's request building.  It is measured the same way for every strategy.
- **Ideal token requests** per (worker, cell) is ``⌈T / (r·L)⌉`` with ``T`` the
  time the cell was in use and ``L`` the lifetime actually returned (piecewise
  when the provider changed it), ``r`` the refresh ratio.

Secrets: client secrets travel to the workers as plain strings inside the
pickled settings sent over each worker's pipe (``tokenpool.Secret`` refuses
pickling on purpose) and are wrapped in ``Secret`` again on arrival.  They are
never written to a file, a log line or a result.

Fleet store.  With ``FleetSettings.store_url`` set, every worker's pool gets
``store=tokenpool.fleet.RedisStore(store_url, **store_options)``: the workers
share one token per client through that Redis.  The pool then counts a token
adopted from the store as one of the cell's token requests (it is one fetch
from its token source), so per-(worker, cell) ``token_requests`` are source
fetches, not requests at the provider: count those at the emulator.  Each
worker reports its ``tokenpool_store_operations_total`` counters
(``WorkerResult.store``).

Killed workers.  A scenario action may SIGKILL a worker on purpose
(:meth:`FleetController.kill_worker`, by the process's own handle): its
results are missing by design, and the fleet result lists it under
``killed_workers`` (who, when, why), not as an error or a missing worker.

Everything binds to or targets 127.0.0.1 only: :func:`emulator_specs` refuses
any other host, and so does ``FleetSettings`` for the store.
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import contextvars
import dataclasses
import importlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

import anyio
import httpx

from ._exceptions import ConfigurationError, TokenPoolError
from ._timing import RefreshPolicy
from ._urls import is_loopback_host

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from prometheus_client import CollectorRegistry

    from ._pool import TokenPool
    from ._token import Token
    from .providers import Provider
    from .testing import EmulatorProcess

__all__ = [
    "AuthStrategy",
    "FleetController",
    "FleetResult",
    "FleetSettings",
    "GroupResult",
    "Histogram",
    "ProgressPrinter",
    "ProviderSpec",
    "StrategySpec",
    "TokenPoolStrategy",
    "WorkerResult",
    "build_provider",
    "emulator_providers",
    "emulator_specs",
    "ideal_requests",
    "run_fleet",
]

#: The providers ``tokenpool demo`` runs by default (the emulator also has ``generic``).
FIVE_PROVIDERS: tuple[str, ...] = ("ntxmx", "ntxpix", "payme", "zertiban", "navro")
ALL_PROVIDERS: tuple[str, ...] = (*FIVE_PROVIDERS, "generic")


# =============================================================================================
# Histograms: log-bucketed, mergeable, picklable
# =============================================================================================

_FLOOR = 1e-7  # 0.1 µs: anything below is bucket 0
_GROWTH = math.log(1.02)  # 2 % wide buckets, so percentiles are within 2 %


@dataclass
class Histogram:
    """Durations in seconds, in 2 %-wide logarithmic buckets; exact count, sum and max.

    Workers ship these to the parent instead of raw samples; they merge by adding.
    """

    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def add(self, value: float) -> None:
        index = 0 if value <= _FLOOR else 1 + int(math.log(value / _FLOOR) / _GROWTH)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float:
        """The *p*-th percentile (0–100); the geometric middle of its bucket, never above the max."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                if index == 0:
                    return 0.0
                middle = _FLOOR * math.exp((index - 0.5) * _GROWTH)
                return min(middle, self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary(self) -> dict[str, float]:
        """p50/p99/max/mean in milliseconds (for JSON)."""
        return {
            "count": self.count,
            "p50_ms": round(self.percentile(50) * 1e3, 4),
            "p99_ms": round(self.percentile(99) * 1e3, 4),
            "max_ms": round(self.max * 1e3, 4),
            "mean_ms": round(self.mean * 1e3, 4),
        }


# =============================================================================================
# Settings: plain, picklable values only
# =============================================================================================


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything a worker needs to configure one cell, as plain values.

    Attributes:
        name: The pool's name for the cell (``"navro"``, ``"zertiban-03"``).
        group: The emulator's provider key; results are summed per group.
        token_url: The token endpoint (for peers that take a URL).
        resource_url: The protected endpoint the load calls.
        client_id: Client identifier.
        client_secret: The raw secret; travels only inside the pickled
            settings on the worker's pipe and is hidden from ``repr``.
        options: Adapter-specific settings (``business_uuid``, ``company``,
            ``audience``, ``base_url``, ``api_version``).
        api_headers: Extra headers every resource call needs (for peers;
            tokenpool's adapters know them).
        form: Token request form fields besides ``grant_type`` (for peers).
        token_headers: Extra headers on token requests (for peers).
        cert_file: Client certificate for mutual TLS (NTX Pay MX).
        key_file: Its key.
        lifetime: The lifetime the emulator is expected to grant, in seconds.
    """

    name: str
    group: str
    token_url: str
    resource_url: str
    client_id: str
    client_secret: str = field(repr=False)
    options: tuple[tuple[str, str], ...] = ()
    api_headers: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] = ()
    token_headers: tuple[tuple[str, str], ...] = ()
    cert_file: str | None = None
    key_file: str | None = None
    lifetime: float | None = None

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    def with_secret(self, secret: str) -> ProviderSpec:
        return dataclasses.replace(self, client_secret=secret)


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """Which auth strategy the workers use: ``"module:Class"`` plus plain options."""

    path: str = "tokenpool._fleet:TokenPoolStrategy"
    label: str = "tokenpool"
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """One fleet run.

    Attributes:
        specs: The cells to run (see :func:`emulator_specs`).
        workers: Worker processes.
        tasks: Concurrent tasks per provider group in each worker.
        duration: Seconds of load after every worker is warm.
        max_calls_per_task: Upper bound on each task's calls (the other bound is *duration*).
        max_in_flight: FIFO bound on each worker's in-flight HTTP requests.
        http2: Resource calls over HTTP/2 (HTTP/1.1 otherwise).
        ca_file: CA that signed the emulator's certificate (``None`` for plain HTTP).
        policy: The refresh policy for every cell (``None``: the adapters' default).
        strategy: The auth strategy.
        progress_interval: Seconds between progress snapshots from each worker.
        warm_up_timeout: Longest wait for a worker to be ready.
        think_time: Pause after each call, per task (0: as fast as possible).
        store_url: ``redis://127.0.0.1:PORT``: every worker's pool shares tokens
            through this Redis (``TokenPool(store=RedisStore(store_url))``);
            ``None``: per-process pools.  Loopback only.
        store_options: Keyword arguments of ``RedisStore`` besides the URL
            (``operation_timeout``…), as plain values.
    """

    specs: tuple[ProviderSpec, ...]
    workers: int = 3
    tasks: int = 10
    duration: float = 30.0
    max_calls_per_task: int = 10_000_000
    max_in_flight: int = 32
    http2: bool = True
    ca_file: str | None = None
    policy: RefreshPolicy | None = None
    strategy: StrategySpec = field(default_factory=StrategySpec)
    progress_interval: float = 0.5
    warm_up_timeout: float = 60.0
    think_time: float = 0.0
    store_url: str | None = None
    store_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.workers < 1 or self.tasks < 1:
            raise ConfigurationError("a fleet needs at least one worker and one task")
        if not self.duration > 0 or not math.isfinite(self.duration):
            raise ConfigurationError("duration must be a positive number of seconds")
        if self.max_in_flight < 1 or self.max_calls_per_task < 1:
            raise ConfigurationError("max_in_flight and max_calls_per_task must be at least 1")
        if not self.specs:
            raise ConfigurationError("a fleet needs at least one provider")
        names = [spec.name for spec in self.specs]
        if len(set(names)) != len(names):
            raise ConfigurationError("provider spec names must be unique")
        for spec in self.specs:
            for url in (spec.token_url, spec.resource_url):
                host = httpx.URL(url).host
                if not is_loopback_host(host):
                    raise ConfigurationError(f"{spec.name}: the fleet only talks to loopback, not {host!r}")
        if self.store_url is not None:
            _check_store_url(self.store_url)
        elif self.store_options:
            raise ConfigurationError("store_options need a store_url")

    @property
    def groups(self) -> dict[str, list[ProviderSpec]]:
        groups: dict[str, list[ProviderSpec]] = {}
        for spec in self.specs:
            groups.setdefault(spec.group, []).append(spec)
        return groups


def _check_store_url(url: str) -> None:
    """A ``redis://`` or ``rediss://`` URL to a loopback host, without credentials (they would be pickled)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ConfigurationError("store_url is not a valid url") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError("store_url must be a redis:// or rediss:// url")
    if parts.username or parts.password:
        raise ConfigurationError("store_url must not carry credentials")
    if not host or not is_loopback_host(host):
        raise ConfigurationError(f"the fleet's store must be on loopback, not {host!r}")


# =============================================================================================
# The emulator → providers mapping
# =============================================================================================


def emulator_specs(
    emu: EmulatorProcess,
    *,
    providers: Sequence[str] = FIVE_PROVIDERS,
    tls: bool = True,
    zertiban_tenants: int = 1,
) -> list[ProviderSpec]:
    """Plain settings for every cell that runs against the emulator *emu*.

    Args:
        emu: A running ``tokenpool.testing.EmulatorProcess``.
        providers: Emulator provider keys to include.
        tls: HTTPS (NTX Pay MX over mutual TLS) or plain HTTP.
        zertiban_tenants: Zertiban cells, one per ``businessUuid`` of the
            emulator's Zertiban client (all with the same credentials).
    """
    if zertiban_tenants < 1:
        raise ConfigurationError("zertiban_tenants must be at least 1")
    lifetimes = {name: float(p["expires_in"]) for name, p in emu.stats(events=False)["providers"].items()}
    specs: list[ProviderSpec] = []
    for group in providers:
        info = emu.client_info(group)
        client_id, secret = str(info["client_id"]), str(info["client_secret"])
        base = emu.url(group, tls=tls)
        common: dict[str, Any] = {
            "group": group,
            "token_url": emu.token_url(group, tls=tls),
            "resource_url": f"{base}/api/resource",
            "client_id": client_id,
            "client_secret": secret,
            "lifetime": lifetimes.get(group),
        }
        options: dict[str, str] = {"base_url": base}
        if group == "ntxmx":
            cert = emu.client_cert
            specs.append(
                ProviderSpec(
                    name=group,
                    options=tuple(options.items()),
                    cert_file=cert.cert_file,
                    key_file=cert.key_file,
                    **common,
                )
            )
        elif group == "zertiban":
            tenants = [str(u) for u in info.get("business_uuids") or []][:zertiban_tenants]
            if len(tenants) < zertiban_tenants:
                raise ConfigurationError(
                    f"the emulator's Zertiban client has only {len(tenants)} businesses, "
                    f"{zertiban_tenants} tenants were asked for"
                )
            width = len(str(zertiban_tenants))
            for i, tenant in enumerate(tenants):
                name = group if zertiban_tenants == 1 else f"{group}-{i + 1:0{width}d}"
                specs.append(
                    ProviderSpec(
                        name=name,
                        options=(*options.items(), ("business_uuid", tenant)),
                        api_headers=(("x-tenant-id", tenant),),
                        **common,
                    )
                )
        elif group == "navro":
            specs.append(
                ProviderSpec(
                    name=group,
                    options=(*options.items(), ("company", str(info["company"]))),
                    api_headers=(("X-API-Version", "1"),),
                    token_headers=(("X-API-Version", "1"),),
                    form=(("scope", "openid"),),
                    **common,
                )
            )
        elif group == "payme":
            options["audience"] = str(info["audience"])
            if info.get("scope"):
                options["scope"] = str(info["scope"])
            specs.append(ProviderSpec(name=group, options=tuple(options.items()), **common))
        elif group in ("ntxpix", "generic"):
            specs.append(ProviderSpec(name=group, options=tuple(options.items()), **common))
        else:
            raise ConfigurationError(f"unknown emulator provider {group!r}")
    return specs


def build_provider(spec: ProviderSpec, policy: RefreshPolicy | None = None) -> Provider:
    """The tokenpool adapter configured from *spec* (in the process that uses it)."""
    from . import providers as p
    from ._secret import Secret

    extra: dict[str, Any] = {} if policy is None else {"refresh": policy}
    opts = dict(spec.options)
    base = opts.get("base_url")
    if spec.group == "ntxmx":
        assert spec.cert_file is not None
        cert = p.ClientCertificate(spec.cert_file, spec.key_file)
        return p.NtxPayMX(
            client_id=spec.client_id,
            client_secret=spec.client_secret,
            client_certificate=cert,
            base_url=base,
            **extra,
        )
    if spec.group == "ntxpix":
        assert base is not None
        return p.NtxPayPix(client_id=spec.client_id, client_secret=spec.client_secret, base_url=base, **extra)
    if spec.group == "payme":
        more: dict[str, Any] = {}
        if "api_version" in opts:
            more["api_version"] = opts["api_version"]
        if "scope" in opts:
            more["scope"] = opts["scope"]
        return p.PayMe(
            client_id=spec.client_id,
            client_secret=spec.client_secret,
            audience=opts["audience"],
            base_url=base,
            **more,
            **extra,
        )
    if spec.group == "zertiban":
        return p.Zertiban(
            client_id=spec.client_id,
            client_secret=spec.client_secret,
            business_uuid=opts["business_uuid"],
            base_url=base,
            **extra,
        )
    if spec.group == "navro":
        return p.Navro(
            client_id=spec.client_id,
            client_secret=spec.client_secret,
            company=opts["company"],
            base_url=base,
            **extra,
        )
    if spec.group == "generic":
        return p.ClientCredentials(
            token_url=httpx.URL(spec.token_url),
            client_id=spec.client_id,
            client_secret=Secret(spec.client_secret),
            scope=opts.get("scope"),
            **extra,
        )
    raise ConfigurationError(f"no tokenpool adapter for emulator provider {spec.group!r}")


def emulator_providers(
    emu: EmulatorProcess,
    *,
    providers: Sequence[str] = ALL_PROVIDERS,
    tls: bool = True,
    zertiban_tenants: int = 1,
    policy: RefreshPolicy | None = None,
) -> dict[str, Provider]:
    """Configured tokenpool providers for every cell of the running emulator *emu*, by pool name."""
    specs = emulator_specs(emu, providers=providers, tls=tls, zertiban_tenants=zertiban_tenants)
    return {spec.name: build_provider(spec, policy) for spec in specs}


# =============================================================================================
# Ideal token requests
# =============================================================================================


def ideal_requests(lifetimes: Sequence[tuple[float, float]], start: float, end: float, ratio: float) -> int:
    """``⌈∫ dt / (r·L(t))⌉`` over ``[start, end]``, ``L(t)`` the lifetime of the latest token sent before *t*.

    With a constant lifetime this is ``⌈T / (r·L)⌉``.  *lifetimes* holds
    ``(sent_at, expires_in)`` of every token the cell used, in any order.
    """
    if end <= start:
        return 1 if lifetimes else 0
    points = sorted(lifetimes)
    if not points:
        return 0
    total = 0.0
    for i, (sent_at, lifetime) in enumerate(points):
        seg_start = max(start, sent_at) if i else start
        seg_end = min(end, points[i + 1][0]) if i + 1 < len(points) else end
        if seg_end > seg_start and lifetime > 0:
            total += (seg_end - seg_start) / (ratio * lifetime)
    return max(1, math.ceil(total - 1e-9))


# =============================================================================================
# Auth strategies (the pluggable part: tokenpool here, peers in benchmarks/peers.py)
# =============================================================================================

#: Set by the load task when a call starts; read by the transport when the resource request arrives.
_CALL_PROBE: contextvars.ContextVar[_Probe | None] = contextvars.ContextVar(
    "tokenpool_fleet_probe", default=None
)


class _Probe:
    __slots__ = ("sink", "started")

    def __init__(self, started: float, sink: Histogram) -> None:
        self.started = started
        self.sink = sink


class TimingTransport(httpx.AsyncBaseTransport):
    """Records how long after the call's start a resource request reaches the wire, and counts token requests.

    Wraps the real transport; a request to one of *token_urls* counts as a
    token request for that cell (peers that send token requests through the
    same client are counted this way).
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        token_urls: Mapping[str, str] | None = None,
        on_token_request: Callable[[str], None] | None = None,
    ) -> None:
        self._inner = inner
        self._token_urls = {httpx.URL(url): name for name, url in (token_urls or {}).items()}
        self._on_token_request = on_token_request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._token_urls:
            name = self._token_urls.get(request.url.copy_with(query=None))
            if name is not None:
                if self._on_token_request is not None:
                    self._on_token_request(name)
                return await self._inner.handle_async_request(request)
        probe = _CALL_PROBE.get()
        if probe is not None:
            probe.sink.add(time.perf_counter() - probe.started)
            _CALL_PROBE.set(None)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_ssl_context(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def make_client(
    settings: FleetSettings,
    *,
    cert: tuple[str, str | None] | None = None,
    token_urls: Mapping[str, str] | None = None,
    on_token_request: Callable[[str], None] | None = None,
    headers: Mapping[str, str] | None = None,
    client_class: type[httpx.AsyncClient] = httpx.AsyncClient,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """An ``AsyncClient`` for resource calls, sized to the in-flight bound, with a timing transport."""
    verify: ssl.SSLContext | bool = (
        make_ssl_context(settings.ca_file, *(cert or (None, None))) if settings.ca_file else False
    )
    limits = httpx.Limits(
        max_connections=settings.max_in_flight,
        max_keepalive_connections=settings.max_in_flight,
        keepalive_expiry=30.0,
    )
    inner = httpx.AsyncHTTPTransport(verify=verify, http2=settings.http2, limits=limits, trust_env=False)
    transport = TimingTransport(inner, token_urls=token_urls, on_token_request=on_token_request)
    return client_class(
        transport=transport,
        timeout=httpx.Timeout(10.0),
        headers=dict(headers or {}),
        trust_env=False,
        follow_redirects=False,
        **kwargs,
    )


class AuthStrategy(abc.ABC):
    """How a worker authenticates its calls.  One instance per worker process, opened inside its loop.

    Subclasses: :class:`TokenPoolStrategy`; the peers in ``benchmarks/peers.py``.

    Attributes:
        label: Name in reports.
        supports: Emulator provider keys this strategy can speak (``None``: all).
    """

    label: ClassVar[str] = "strategy"
    supports: ClassVar[frozenset[str] | None] = None

    def __init__(self, settings: FleetSettings, spec: StrategySpec) -> None:
        self.settings = settings
        self.spec = spec
        #: Monotonic instants of token requests, per cell.
        self.token_request_times: dict[str, list[float]] = defaultdict(list)
        #: Monotonic instants at which a new token arrived, per cell.
        self.token_success_times: dict[str, list[float]] = defaultdict(list)
        #: Token endpoint round trips, per group.
        self.refresh_latency: dict[str, Histogram] = defaultdict(Histogram)

    def count_token_request(self, name: str) -> None:
        self.token_request_times[name].append(time.monotonic())

    @abc.abstractmethod
    async def open(self) -> None:
        """Create clients (and fetch first tokens, if that is how the library is used)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close everything :meth:`open` created."""

    async def token_wait(self, name: str) -> None:  # noqa: B027 - an optional hook: most peers have no such step
        """Make sure a token is at hand before the call, if the strategy has such a step."""

    @abc.abstractmethod
    async def call(self, name: str, url: str) -> httpx.Response:
        """One authenticated GET of *url* for cell *name*; return the final response."""

    def count_token_success(self, name: str) -> None:
        self.token_success_times[name].append(time.monotonic())

    def token_requests(self) -> dict[str, int]:
        """Token requests sent per cell so far."""
        return {name: len(times) for name, times in self.token_request_times.items()}

    def schedule(self) -> dict[str, float]:
        """When each cell will next renew its token (monotonic instants), if the strategy knows."""
        return {}

    def cell_info(self) -> dict[str, dict[str, Any]]:
        """Extra per-cell facts for the report (hits, misses, lifetimes seen)."""
        return {}

    async def control(self, command: str, payload: Mapping[str, Any]) -> str:
        """Handle a control message from the parent (credential swap…); return a short status."""
        return f"unsupported: {self.label} cannot {command}"

    def log_events(self) -> dict[str, int]:
        return {}

    def store_events(self) -> dict[str, dict[str, int]]:
        """Fleet-store outcomes as ``{provider: {outcome: count}}``, if the strategy has a store."""
        return {}


class _CountingLogger:
    """A structlog-shaped logger that counts events and keeps refresh latencies instead of printing.

    The worker is our application, so it decides where tokenpool's events go:
    here, into the result, not onto a terminal showing a progress line.
    """

    def __init__(self, strategy: TokenPoolStrategy) -> None:
        self.events: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._strategy = strategy

    def _log(self, event: str, **fields: Any) -> None:
        self.events[event] += 1
        provider = fields.get("provider")
        if event.startswith("fleet.store.") and isinstance(fields.get("error"), str):
            # Which store faults: the exception type (never a message or a value).
            self.events[f"{event}[{fields['error']}]"] += 1
        if event == "token.refresh.start" and isinstance(provider, str):
            self._strategy.count_token_request(provider)
        elif event in ("token.refresh.success", "token.refresh.retry", "token.refresh.failed"):
            group = self._strategy.group_of.get(str(provider), str(provider))
            if event == "token.refresh.success":
                self._strategy.count_token_success(str(provider))
            duration = fields.get("duration")
            if isinstance(duration, float | int):
                self._strategy.refresh_latency[group].add(float(duration))
            reason = fields.get("reason")
            if reason is not None:
                self.errors[f"{group}:{reason}"] += 1
        elif event == "token.refresh.credentials_rejected":
            group = self._strategy.group_of.get(str(provider), str(provider))
            self.errors[f"{group}:credentials_rejected"] += 1

    def debug(self, event: str, **fields: Any) -> None:
        self._log(event, **fields)

    info = warning = error = exception = critical = debug

    def bind(self, **fields: Any) -> _CountingLogger:
        return self


class TokenPoolStrategy(AuthStrategy):
    """tokenpool: one :class:`TokenPool` per worker, ``pool.auth(name)`` on every call.

    Options (``StrategySpec.options``): ``warm_up`` (default ``"wait"``),
    ``metrics`` (default ``True``: a private Prometheus registry, so the
    counting cost is paid as in production).

    Control commands: ``replace_credentials`` (``group``, ``client_secret``:
    swap the secret in the running pool) and ``store_counts`` (the fleet-store
    outcomes so far, as JSON).
    """

    label = "tokenpool"

    def __init__(self, settings: FleetSettings, spec: StrategySpec) -> None:
        super().__init__(settings, spec)
        self.pool: TokenPool | None = None
        self.providers: dict[str, Provider] = {}
        self.group_of = {s.name: s.group for s in settings.specs}
        self._auths: dict[str, httpx.Auth] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._owned: list[httpx.AsyncClient] = []
        self._exit: contextlib.AsyncExitStack | None = None
        self._last: dict[str, Token] = {}
        self._lifetimes: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.logger = _CountingLogger(self)
        self.registry: CollectorRegistry | None = None

    async def open(self) -> None:
        from prometheus_client import CollectorRegistry

        from ._pool import TokenPool

        settings = self.settings
        self.providers = {s.name: build_provider(s, settings.policy) for s in settings.specs}
        self.registry = CollectorRegistry() if self.spec.option("metrics", True) else None
        metrics: bool | CollectorRegistry = False if self.registry is None else self.registry
        extra: dict[str, Any] = {}
        if settings.store_url is not None:
            from .fleet import RedisStore

            extra["store"] = RedisStore(settings.store_url, **dict(settings.store_options))
        pool = TokenPool(
            self.providers,
            warm_up=self.spec.option("warm_up", "wait"),
            warm_up_timeout=settings.warm_up_timeout,
            ca_file=settings.ca_file,
            metrics=metrics,
            logger=self.logger,
            **extra,
        )
        self._exit = contextlib.AsyncExitStack()
        self.pool = await self._exit.enter_async_context(pool)
        by_cert: dict[tuple[str, str | None] | None, httpx.AsyncClient] = {}
        for spec in settings.specs:
            key = None if spec.cert_file is None else (spec.cert_file, spec.key_file)
            client = by_cert.get(key)
            if client is None:
                client = by_cert[key] = make_client(settings, cert=key)
                self._owned.append(client)
            self._clients[spec.name] = client
            self._auths[spec.name] = pool.auth(spec.name)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            for client in self._owned:
                await client.aclose()
        # Not inside the shield: the pool exits the task group it entered, which
        # must be the innermost cancel scope at that point.
        if self._exit is not None:
            await self._exit.aclose()

    async def token_wait(self, name: str) -> None:
        assert self.pool is not None
        token = await self.pool.token(name)
        if self._last.get(name) is not token:
            self._last[name] = token
            self._lifetimes[name].append((token.sent_at, token.expires_in))

    async def call(self, name: str, url: str) -> httpx.Response:
        return await self._clients[name].get(url, auth=self._auths[name])

    def token_requests(self) -> dict[str, int]:
        if self.pool is None:
            return super().token_requests()
        return {name: cell.token_requests for name, cell in self.pool.statistics().cells.items()}

    def schedule(self) -> dict[str, float]:
        if self.pool is None:
            return {}
        now = time.monotonic()
        return {
            name: now + cell.seconds_until_refresh
            for name, cell in self.pool.statistics().cells.items()
            if cell.seconds_until_refresh is not None
        }

    def cell_info(self) -> dict[str, dict[str, Any]]:
        if self.pool is None:
            return {}
        info: dict[str, dict[str, Any]] = {}
        for name, cell in self.pool.statistics().cells.items():
            info[name] = {
                "hits": cell.hits,
                "misses": cell.misses,
                "lifetimes": list(self._lifetimes.get(name, [])),
                "ratio": self.providers[name].refresh.ratio,
                "consecutive_failures": cell.consecutive_failures,
            }
        return info

    async def control(self, command: str, payload: Mapping[str, Any]) -> str:
        assert self.pool is not None
        if command == "replace_credentials":
            group = str(payload["group"])
            secret = str(payload["client_secret"])
            names = [s.name for s in self.settings.specs if s.group == group]
            errors: list[str] = []
            for name in names:
                provider = self.providers[name].with_credentials(client_secret=secret)
                self.providers[name] = provider
                try:
                    await self.pool.replace_provider(name, provider)
                except TokenPoolError as exc:
                    # tokenpool's messages never contain a secret.
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")
            status = f"replaced {len(names) - len(errors)}/{len(names)}"
            return status + (f" ({'; '.join(errors)})" if errors else "")
        if command == "store_counts":
            # The fleet-store outcomes so far, as JSON: a scenario tells which worker
            # won a lease by the change in its ``lease_won``.
            return json.dumps(self.store_events(), sort_keys=True)
        return await super().control(command, payload)

    def log_events(self) -> dict[str, int]:
        return dict(self.logger.events)

    def store_events(self) -> dict[str, dict[str, int]]:
        if self.registry is None:
            return {}
        # The series are labelled with the provider's kind (the pool's default label);
        # the report speaks of emulator groups.
        groups = {provider.kind: self.group_of[name] for name, provider in self.providers.items()}
        return store_counts(self.registry, groups)


def store_counts(
    registry: CollectorRegistry, groups: Mapping[str, str] | None = None
) -> dict[str, dict[str, int]]:
    """``tokenpool_store_operations_total`` of *registry*: ``{provider: {outcome: count}}``, non-zero only.

    *groups* renames the ``provider`` label's values (counts of the same new name add up).
    """
    out: dict[str, dict[str, int]] = {}
    for family in registry.collect():
        if family.name != "tokenpool_store_operations":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total") or sample.value <= 0:
                continue
            label = sample.labels.get("provider", "")
            provider = (groups or {}).get(label, label)
            outcome = sample.labels.get("outcome", "")
            counts = out.setdefault(provider, {})
            counts[outcome] = counts.get(outcome, 0) + int(sample.value)
    return out


def load_strategy(spec: StrategySpec) -> type[AuthStrategy]:
    module_name, _, attr = spec.path.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, AuthStrategy)):
        raise ConfigurationError(f"{spec.path} is not an AuthStrategy")
    return cls


# =============================================================================================
# Results
# =============================================================================================


@dataclass
class GroupResult:
    """One provider group's figures (all its cells), from one worker or merged."""

    calls: int = 0
    ok: int = 0
    unauthorized: int = 0
    recovered_401: int = 0
    #: Calls sent again after the server's graceful HTTP/2 GOAWAY had refused their stream.
    goaway_resends: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    token_wait: Histogram = field(default_factory=Histogram)
    latency: Histogram = field(default_factory=Histogram)
    overhead: Histogram = field(default_factory=Histogram)
    refresh_latency: Histogram = field(default_factory=Histogram)
    #: Offsets (s from the start of the load) of responses that were 401, first attempts included.
    unauthorized_at: list[float] = field(default_factory=list)
    #: Offsets of failed calls (anything but a 2xx in the end).
    failed_at: list[float] = field(default_factory=list)
    #: Offsets of token requests.
    token_requests_at: list[float] = field(default_factory=list)
    #: Per (worker, cell): token requests, ideal, hits, misses.
    cells: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def token_requests(self) -> int:
        return sum(int(c["token_requests"]) for c in self.cells)

    @property
    def ideal(self) -> int:
        return sum(int(c["ideal"]) for c in self.cells)

    @property
    def hits(self) -> int:
        return sum(int(c.get("hits") or 0) for c in self.cells)

    @property
    def misses(self) -> int:
        return sum(int(c.get("misses") or 0) for c in self.cells)

    @property
    def hit_ratio(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total and any("hits" in c for c in self.cells) else None

    def merge(self, other: GroupResult) -> None:
        self.calls += other.calls
        self.ok += other.ok
        self.unauthorized += other.unauthorized
        self.recovered_401 += other.recovered_401
        self.goaway_resends += other.goaway_resends
        self.failures.update(other.failures)
        self.token_wait.merge(other.token_wait)
        self.latency.merge(other.latency)
        self.overhead.merge(other.overhead)
        self.refresh_latency.merge(other.refresh_latency)
        self.unauthorized_at.extend(other.unauthorized_at)
        self.failed_at.extend(other.failed_at)
        self.token_requests_at.extend(other.token_requests_at)
        self.cells.extend(other.cells)


@dataclass
class WorkerResult:
    """Everything one worker measured."""

    index: int
    pid: int
    strategy: str
    load_seconds: float = 0.0
    groups: dict[str, GroupResult] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    control: list[str] = field(default_factory=list)
    #: Fleet-store outcomes per provider (``{provider: {outcome: count}}``), from the pool's metrics.
    store: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class FleetResult:
    """The merged outcome of one fleet run."""

    strategy: str
    settings: dict[str, Any]
    workers: list[WorkerResult]
    duration: float
    interrupted: bool = False
    missing_workers: list[int] = field(default_factory=list)
    #: Workers a scenario killed on purpose (``{"worker", "pid", "at", "reason", "exitcode"}``):
    #: their results are missing by design; not errors, not missing workers.
    killed_workers: list[dict[str, Any]] = field(default_factory=list)
    #: Monotonic instant of the start of the load (offsets in the result count from here).
    started: float = 0.0
    notes: list[dict[str, Any]] = field(default_factory=list)
    replies: dict[str, list[str]] = field(default_factory=dict)

    @property
    def groups(self) -> dict[str, GroupResult]:
        merged: dict[str, GroupResult] = {}
        for worker in self.workers:
            for name, group in worker.groups.items():
                merged.setdefault(name, GroupResult()).merge(group)
        return merged

    @property
    def total(self) -> GroupResult:
        total = GroupResult()
        for group in self.groups.values():
            total.merge(group)
        return total

    @property
    def lost_calls(self) -> int:
        """Calls that did not end in a 2xx (401s included)."""
        total = self.total
        return total.calls - total.ok

    @property
    def errors(self) -> list[str]:
        return [f"worker {w.index}: {w.error}" for w in self.workers if w.error]

    def per_worker(self, group: str) -> list[tuple[int, int, int]]:
        """``(worker, token requests, ideal)`` for *group*, one row per worker."""
        rows = []
        for worker in self.workers:
            g = worker.groups.get(group)
            if g is not None:
                rows.append((worker.index, g.token_requests, g.ideal))
        return rows

    def to_json(self) -> dict[str, Any]:
        groups = self.groups
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "settings": self.settings,
            "duration_s": round(self.duration, 3),
            "interrupted": self.interrupted,
            "missing_workers": self.missing_workers,
            "killed_workers": self.killed_workers,
            "errors": self.errors,
            "providers": {
                name: _group_json(g, self.duration, self.per_worker(name)) for name, g in groups.items()
            },
            "total": _group_json(self.total, self.duration, []),
            "lost_calls": self.lost_calls,
            "events": _sum_counters(w.events for w in self.workers),
            "control": [c for w in self.workers for c in w.control],
            "notes": self.notes,
            "store": self.store,
        }
        return out

    @property
    def store(self) -> dict[str, dict[str, int]]:
        """Fleet-store outcomes summed over the workers: ``{provider: {outcome: count}}``."""
        merged: dict[str, Counter[str]] = {}
        for worker in self.workers:
            for provider, counts in worker.store.items():
                merged.setdefault(provider, Counter()).update(counts)
        return {provider: dict(sorted(counts.items())) for provider, counts in sorted(merged.items())}

    def cells(self, group: str | None = None) -> list[dict[str, Any]]:
        """Every (worker, cell) row, optionally of one group."""
        return [cell for name, g in self.groups.items() if group is None or name == group for cell in g.cells]


def _sum_counters(items: Iterator[dict[str, int]] | Sequence[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for item in items:
        total.update(item)
    return dict(sorted(total.items()))


def _group_json(g: GroupResult, duration: float, per_worker: list[tuple[int, int, int]]) -> dict[str, Any]:
    hit_ratio = g.hit_ratio
    return {
        "calls": g.calls,
        "ok": g.ok,
        "unauthorized": g.unauthorized,
        "recovered_401": g.recovered_401,
        "goaway_resends": g.goaway_resends,
        "failed": g.failed,
        "failures": dict(g.failures),
        "calls_per_s": round(g.calls / duration, 1) if duration > 0 else 0.0,
        "token_requests": g.token_requests,
        "ideal_token_requests": g.ideal,
        "token_requests_per_worker": [
            {"worker": w, "token_requests": n, "ideal": i} for w, n, i in per_worker
        ],
        "cells": len(g.cells),
        "hit_ratio": None if hit_ratio is None else round(hit_ratio, 6),
        "token_wait": g.token_wait.summary(),
        "latency": g.latency.summary(),
        "auth_overhead": g.overhead.summary(),
        "refresh_latency": g.refresh_latency.summary(),
    }


# =============================================================================================
# The worker process
# =============================================================================================


@dataclass
class _Live:
    """A worker's running totals, for the progress line."""

    calls: int = 0
    ok: int = 0
    unauthorized: int = 0
    recovered: int = 0
    failed: int = 0
    wait_max: float = 0.0


def _worker_main(index: int, conn: Connection) -> None:
    """Entry point of a worker process (spawned)."""
    # The parent coordinates shutdown (Ctrl-C reaches the whole process group);
    # a worker stops when told to over its pipe, and sends what it measured.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        message = conn.recv()
    except (EOFError, OSError):
        return
    settings: FleetSettings = message[1]
    result = WorkerResult(index=index, pid=os.getpid(), strategy=settings.strategy.label)
    try:
        anyio.run(_Worker(index, settings, conn, result).run, backend="asyncio")
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {_short_error(exc)}"
        if os.environ.get("TOKENPOOL_FLEET_DEBUG"):
            traceback.print_exc()
    with contextlib.suppress(OSError, BrokenPipeError):
        conn.send(("result", result))
    conn.close()


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_short_error(e) for e in exc.exceptions[:3])
    return str(exc)[:300]


class _Worker:
    def __init__(self, index: int, settings: FleetSettings, conn: Connection, result: WorkerResult) -> None:
        self.index = index
        self.settings = settings
        self.conn = conn
        self.result = result
        self.live = _Live()
        self.stopping = False
        self.groups = {name: GroupResult() for name in settings.groups}
        self.start = 0.0
        self.deadline = 0.0
        self.baseline: dict[str, dict[str, Any]] = {}

    async def run(self) -> None:
        settings = self.settings
        strategy = load_strategy(settings.strategy)(settings, settings.strategy)
        opened = time.monotonic()
        try:
            await strategy.open()
            self.conn.send(("ready", self.index, strategy.schedule()))
            while True:
                message = await self._recv()
                if message is None:
                    return
                if message[0] == "go":
                    break
                if message[0] == "stop":
                    return
            # One time origin for the whole fleet: the parent's instant of "go"
            # (CLOCK_MONOTONIC is system-wide), unless it looks implausible.
            now = time.monotonic()
            origin = float(message[1]) if len(message) > 1 else now
            self.start = origin if abs(now - origin) < 5.0 else now
            self.deadline = self.start + settings.duration
            # Hits and misses of the warm-up are not the load's.
            self.baseline = strategy.cell_info()
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._control_loop, strategy)
                outer.start_soon(self._progress_loop, strategy)
                async with anyio.create_task_group() as load:
                    slots = anyio.Semaphore(settings.max_in_flight)
                    for group, specs in settings.groups.items():
                        for task in range(settings.tasks):
                            load.start_soon(self._task, strategy, slots, group, specs, task)
                outer.cancel_scope.cancel()
            ended = time.monotonic()
            self.result.load_seconds = ended - self.start
            self._collect(strategy, opened, ended)
        finally:
            await strategy.close()

    async def _recv(self) -> tuple[Any, ...] | None:
        # A multiprocessing pipe has no awaitable readiness; a short poll is cheap
        # next to the load and keeps the loop cancellable.
        while not self.conn.poll():  # noqa: ASYNC110
            await anyio.sleep(0.02)
        try:
            message: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError):
            return None
        return message

    async def _control_loop(self, strategy: AuthStrategy) -> None:
        while True:
            message = await self._recv()
            if message is None or message[0] == "stop":
                self.stopping = True
                return
            if message[0] == "control":
                _, ident, command, payload = message
                try:
                    status = await strategy.control(command, payload)
                except Exception as exc:
                    status = f"error: {type(exc).__name__}"
                self.result.control.append(f"worker {self.index}: {command}: {status}")
                self.conn.send(("reply", ident, self.index, status))

    async def _progress_loop(self, strategy: AuthStrategy) -> None:
        while True:
            await anyio.sleep(self.settings.progress_interval)
            self._send_progress(strategy)

    def _send_progress(self, strategy: AuthStrategy) -> None:
        live = self.live
        snapshot = (
            self.index,
            live.calls,
            live.ok,
            live.unauthorized,
            live.recovered,
            live.failed,
            sum(strategy.token_requests().values()),
            live.wait_max,
        )
        # Over the worker's own pipe: a shared queue's lock could be held by a worker
        # that a scenario kills, and would then block every other worker's progress.
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(("progress", snapshot))

    async def _task(
        self, strategy: AuthStrategy, slots: anyio.Semaphore, group: str, specs: list[ProviderSpec], task: int
    ) -> None:
        stats = self.groups[group]
        live = self.live
        think = self.settings.think_time
        cells = [(spec.name, spec.resource_url) for spec in specs]
        perf = time.perf_counter
        monotonic = time.monotonic
        n = 0
        while n < self.settings.max_calls_per_task and not self.stopping:
            if monotonic() >= self.deadline:
                break
            name, url = cells[(task + n) % len(cells)]
            n += 1
            async with slots:
                if monotonic() >= self.deadline:
                    break  # waited for a slot past the deadline: the run is over for this task
                started = perf()
                _CALL_PROBE.set(_Probe(started, stats.overhead))
                failure: str | None = None
                response: httpx.Response | None = None
                try:
                    await strategy.token_wait(name)
                    waited = perf() - started
                    stats.token_wait.add(waited)
                    if waited > live.wait_max:
                        live.wait_max = waited
                    sent = perf()
                    try:
                        response = await strategy.call(name, url)
                    except httpx.RemoteProtocolError as exc:
                        # A graceful HTTP/2 GOAWAY (hypercorn sends one after 1,000 requests
                        # on a connection): streams above its last_stream_id were never
                        # processed (RFC 9113 §6.8) and are safe to send again, which
                        # httpcore does not do.  Re-sent once, and counted.
                        if "ConnectionTerminated" not in str(exc) or "error_code:0" not in str(exc):
                            raise
                        stats.goaway_resends += 1
                        response = await strategy.call(name, url)
                    stats.latency.add(perf() - sent)
                except TokenPoolError as exc:
                    failure = f"token:{type(exc).__name__}"
                except httpx.HTTPError as exc:
                    failure = f"http:{type(exc).__name__}"
                except Exception as exc:
                    # A peer library's own errors (authlib's OAuthError…) count as failed calls.
                    failure = f"error:{type(exc).__name__}"
                finally:
                    _CALL_PROBE.set(None)
            stats.calls += 1
            live.calls += 1
            offset = monotonic() - self.start
            if response is not None:
                status = response.status_code
                retried_401 = any(r.status_code == 401 for r in response.history)
                if retried_401 or status == 401:
                    stats.unauthorized_at.append(offset)
                if 200 <= status < 300:
                    stats.ok += 1
                    live.ok += 1
                    if retried_401:
                        stats.recovered_401 += 1
                        live.recovered += 1
                    if think:
                        await anyio.sleep(think)
                    continue
                if status == 401:
                    stats.unauthorized += 1
                    live.unauthorized += 1
                    failure = "http_401"
                else:
                    failure = f"http_{status}"
            assert failure is not None
            if failure != "http_401":
                stats.failures[failure] += 1
                live.failed += 1
            stats.failed_at.append(offset)
            # A failing call must not become a busy loop.
            await anyio.sleep(max(think, 0.01))

    def _collect(self, strategy: AuthStrategy, opened: float, ended: float) -> None:
        requests = strategy.token_requests()
        info = strategy.cell_info()
        ratio_default = (self.settings.policy or RefreshPolicy()).ratio
        for group, specs in self.settings.groups.items():
            stats = self.groups[group]
            stats.refresh_latency.merge(strategy.refresh_latency.get(group, Histogram()))
            for spec in specs:
                cell = info.get(spec.name, {})
                lifetimes: list[tuple[float, float]] = list(cell.get("lifetimes") or [])
                if not lifetimes and spec.lifetime:
                    lifetimes = [(opened, spec.lifetime)]
                first = min((sent for sent, _ in lifetimes), default=opened)
                ratio = float(cell.get("ratio", ratio_default))
                stats.cells.append(
                    {
                        "worker": self.index,
                        "cell": spec.name,
                        "token_requests": int(requests.get(spec.name, 0)),
                        "ideal": ideal_requests(lifetimes, min(first, opened), ended, ratio),
                        # What the ideal was computed from, as offsets from the start of the
                        # load, so that a fleet-wide ideal can be computed over every worker.
                        "span": [round(min(first, opened) - self.start, 4), round(ended - self.start, 4)],
                        "lifetimes_at": [[round(sent - self.start, 4), life] for sent, life in lifetimes],
                        "ratio": ratio,
                        "lifetime": lifetimes[-1][1] if lifetimes else None,
                        "lifetimes_seen": sorted({round(life, 3) for _, life in lifetimes}),
                        "hits": _delta(cell, self.baseline.get(spec.name, {}), "hits"),
                        "misses": _delta(cell, self.baseline.get(spec.name, {}), "misses"),
                        "requests_at": [
                            round(t - self.start, 4) for t in strategy.token_request_times.get(spec.name, [])
                        ],
                        "refreshed_at": [
                            round(t - self.start, 4) for t in strategy.token_success_times.get(spec.name, [])
                        ],
                    }
                )
                stats.token_requests_at.extend(
                    t - self.start for t in strategy.token_request_times.get(spec.name, [])
                )
        self.result.groups = self.groups
        self.result.events = strategy.log_events()
        self.result.store = strategy.store_events()


def _delta(now: Mapping[str, Any], before: Mapping[str, Any], key: str) -> int | None:
    value = now.get(key)
    if value is None:
        return None
    return int(value) - int(before.get(key) or 0)


# =============================================================================================
# The parent side
# =============================================================================================


class FleetController:
    """What scenario actions can do while a fleet runs (in the parent process).

    Actions run on the parent's loop, between reads of the workers' pipes, so
    they should be quick; one that needs to wait for something (a key in
    Redis, a worker's reply) schedules a follow-up with :meth:`at` instead of
    sleeping.
    """

    def __init__(self, conns: dict[int, Connection], procs: Mapping[int, BaseProcess] | None = None) -> None:
        self._conns = conns
        self._procs: Mapping[int, BaseProcess] = procs if procs is not None else {}
        self._next = 0
        self.replies: dict[int, list[str]] = {}
        self.started = 0.0
        #: Next renewal of each (worker, cell), as offsets from the start of the load (when known).
        self.refresh_at: dict[tuple[int, str], float] = {}
        self._schedules: dict[int, dict[str, float]] = {}
        #: Notes the actions leave for the report (fault windows…).
        self.notes: list[dict[str, Any]] = []
        #: Workers killed on purpose by an action, by index: ``{"worker", "pid", "at", "reason"}``.
        self.killed: dict[int, dict[str, Any]] = {}
        self._pending: list[tuple[float, int, Callable[[FleetController], None]]] = []
        self._order = itertools.count()

    def next_refresh(self, cells: Callable[[str], bool] | None = None) -> list[float]:
        """Sorted offsets of the cells' first renewals after the start (``cells`` filters by name)."""
        return sorted(t for (_, name), t in self.refresh_at.items() if cells is None or cells(name))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def pids(self) -> dict[int, int]:
        """Process id of every worker that was started, by index."""
        return {index: proc.pid for index, proc in self._procs.items() if proc.pid is not None}

    def worker_of(self, pid: int) -> int | None:
        """The index of the worker with process id *pid* (``None``: not one of this fleet's workers)."""
        return next((index for index, p in self.pids.items() if p == pid), None)

    def at(self, offset: float, action: Callable[[FleetController], None]) -> None:
        """Run *action* once the load is *offset* seconds old (at once if that is past)."""
        # The counter breaks ties, so actions themselves are never compared.
        bisect.insort(self._pending, (offset, next(self._order), action))

    def after(self, delay: float, action: Callable[[FleetController], None]) -> None:
        """Run *action* *delay* seconds from now."""
        self.at(self.elapsed + max(0.0, delay), action)

    def _due(self) -> list[Callable[[FleetController], None]]:
        now = self.elapsed
        due = []
        while self._pending and self._pending[0][0] <= now:
            due.append(self._pending.pop(0)[2])
        return due

    def kill_worker(self, index: int, reason: str) -> bool:
        """SIGKILL worker *index* by its process handle, on purpose: its results will be missing.

        The run goes on with the others; the result lists the worker under
        ``killed_workers`` instead of reporting an error.  Returns whether the
        worker was alive (and is now killed).
        """
        proc = self._procs.get(index)
        if proc is None or index in self.killed or not proc.is_alive():
            return False
        self.killed[index] = {
            "worker": index,
            "pid": proc.pid,
            "at": round(self.elapsed, 3),
            "reason": reason,
        }
        proc.kill()
        return True

    def broadcast(self, command: str, **payload: Any) -> int:
        """Send a control command to every live worker; returns its id (replies land in ``replies[id]``)."""
        self._next += 1
        ident = self._next
        self.replies[ident] = []
        for index, conn in self._conns.items():
            if index in self.killed:
                continue
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(("control", ident, command, payload))
        return ident


#: A scenario action: runs in the parent at ``at`` seconds into the load (``at`` may be computed
#: from the controller once every worker is ready, e.g. from the cells' renewal times).
Action = tuple[float | Callable[[FleetController], float], Callable[[FleetController], None]]


class ProgressPrinter:
    """Renders worker snapshots as one live line (``\\r`` on a TTY, a line every few seconds otherwise)."""

    def __init__(self, label: str, duration: float, out: TextIO | None = None, *, every: float = 5.0) -> None:
        self.label = label
        self.duration = duration
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty()
        self.every = every if not self.tty else 0.25
        self.last_print = 0.0
        self.snapshots: dict[int, tuple[Any, ...]] = {}
        self.history: list[tuple[float, int]] = []
        self.width = 0

    def update(self, snapshot: tuple[Any, ...]) -> None:
        self.snapshots[int(snapshot[0])] = snapshot

    def render(self, elapsed: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_print < self.every:
            return
        self.last_print = now
        snaps = list(self.snapshots.values())
        calls = sum(s[1] for s in snaps)
        self.history.append((now, calls))
        self.history = [h for h in self.history if now - h[0] <= max(3.0, 2.5 * self.every)]
        rate = 0.0
        if len(self.history) >= 2 and self.history[-1][0] > self.history[0][0]:
            rate = (self.history[-1][1] - self.history[0][1]) / (self.history[-1][0] - self.history[0][0])
        wait_max = max((s[7] for s in snaps), default=0.0)
        line = (
            f"{self.label}: {min(elapsed, self.duration):5.1f}/{self.duration:g} s  "
            f"calls {calls:,} ({rate:,.0f}/s)  401s {sum(s[3] for s in snaps)}  "
            f"recovered {sum(s[4] for s in snaps)}  failed {sum(s[5] for s in snaps)}  "
            f"token requests {sum(s[6] for s in snaps)}  max token wait {wait_max * 1e3:.1f} ms"
        )
        if self.tty:
            pad = max(0, self.width - len(line))
            self.width = len(line)
            self.out.write("\r" + line + " " * pad)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def finish(self) -> None:
        if self.tty and self.width:
            self.out.write("\n")
            self.out.flush()


def run_fleet(
    settings: FleetSettings,
    *,
    actions: Sequence[Action] = (),
    progress: ProgressPrinter | None = None,
    ready_timeout: float | None = None,
) -> FleetResult:
    """Run one fleet to completion and return the merged result.

    Ctrl-C (``KeyboardInterrupt``) stops the workers cleanly and returns a
    partial result with ``interrupted=True``; no worker process outlives this
    call (stragglers are terminated by their own handle).  A worker an action
    killed on purpose (:meth:`FleetController.kill_worker`) ends the run for
    itself only: the result lists it in ``killed_workers``.
    """
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, BaseProcess] = {}
    conns: dict[int, Connection] = {}
    results: dict[int, WorkerResult] = {}
    controller = FleetController(conns, procs)
    interrupted = False
    started = time.monotonic()

    def finished() -> bool:
        # A worker killed on purpose is done once it is gone (its result, if it
        # managed to send one, still counts).
        return all(i in results or (i in controller.killed and not p.is_alive()) for i, p in procs.items())

    try:
        for index in range(settings.workers):
            parent_conn, child_conn = ctx.Pipe(duplex=True)
            proc: BaseProcess = ctx.Process(
                target=_worker_main,
                args=(index, child_conn),
                name=f"tokenpool-fleet-worker-{index}",
                daemon=True,
            )
            # Workers start with SIGINT ignored (inherited across exec, so even
            # their interpreter start-up cannot be interrupted): on Ctrl-C the
            # parent tells them to stop and collects what they measured.
            with _sigint_ignored():
                proc.start()
            child_conn.close()
            procs[index] = proc
            conns[index] = parent_conn
            # The settings (secrets included) go over the pipe, never a file or argv.
            parent_conn.send(("settings", settings))
        # Wait for every worker to be warm, then start them together.
        limit = time.monotonic() + (ready_timeout or settings.warm_up_timeout + 30.0)
        ready: set[int] = set()
        while len(ready) < len(procs):
            if time.monotonic() > limit:
                raise TimeoutError("workers did not become ready in time")
            for index, conn in conns.items():
                if index in ready or index in results:
                    continue
                if conn.poll(0.02):
                    message = conn.recv()
                    if message[0] == "ready":
                        ready.add(index)
                        controller._schedules[index] = dict(message[2]) if len(message) > 2 else {}
                    elif message[0] == "result":
                        results[index] = message[1]
                        ready.add(index)
            if any(not p.is_alive() for i, p in procs.items() if i not in ready):
                dead = [i for i, p in procs.items() if i not in ready and not p.is_alive()]
                raise RuntimeError(f"worker(s) {dead} exited before becoming ready")
        controller.started = time.monotonic()
        for index, conn in conns.items():
            if index not in results:
                conn.send(("go", controller.started))
        for index, schedule in controller._schedules.items():
            for name, instant in schedule.items():
                controller.refresh_at[(index, name)] = instant - controller.started
        for at, action in actions:
            controller.at(at(controller) if callable(at) else float(at), action)
        end = controller.started + settings.duration + settings.warm_up_timeout + 60.0
        while not finished():
            _pump(conns, results, controller, progress)
            for action in controller._due():
                action(controller)
            now = time.monotonic()
            if progress is not None:
                progress.render(now - controller.started)
            if now > end:
                break
            for index, worker in procs.items():
                if index in results or index in controller.killed:
                    continue
                if not worker.is_alive() and not conns[index].poll():
                    results[index] = WorkerResult(
                        index=index,
                        pid=worker.pid or 0,
                        strategy=settings.strategy.label,
                        error=f"worker exited with code {worker.exitcode} without a result",
                    )
    except KeyboardInterrupt:
        interrupted = True
        for index, conn in conns.items():
            if index in controller.killed:
                continue
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(("stop",))
        limit = time.monotonic() + 10.0
        with contextlib.suppress(KeyboardInterrupt):
            while not finished() and time.monotonic() < limit:
                _pump(conns, results, controller, None)
    finally:
        if progress is not None:
            progress.render(time.monotonic() - (controller.started or started), force=True)
            progress.finish()
        for worker in procs.values():
            worker.join(timeout=5.0)
        for worker in procs.values():
            # Stragglers are ended by their own handle, never by name.
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5.0)
            if worker.is_alive():
                worker.kill()
                worker.join()
        for conn in conns.values():
            conn.close()
    workers = [results[i] for i in sorted(results)]
    missing = [i for i in procs if i not in results and i not in controller.killed]
    killed = [
        {**controller.killed[i], "exitcode": procs[i].exitcode}
        for i in sorted(controller.killed)
        if i not in results
    ]
    load = max((w.load_seconds for w in workers), default=0.0)
    return FleetResult(
        strategy=settings.strategy.label,
        settings=_settings_json(settings),
        workers=workers,
        duration=load,
        interrupted=interrupted,
        missing_workers=missing,
        killed_workers=killed,
        started=controller.started,
        notes=controller.notes,
        replies={str(k): v for k, v in controller.replies.items()},
    )


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _pump(
    conns: dict[int, Connection],
    results: dict[int, WorkerResult],
    controller: FleetController,
    progress: ProgressPrinter | None,
) -> None:
    for index, conn in conns.items():
        if index in results:
            continue
        try:
            # Bounded, so that one chatty worker cannot starve the others or the actions.
            for _ in range(200):
                if not conn.poll():
                    break
                message = conn.recv()
                if message[0] == "progress":
                    if progress is not None:
                        progress.update(message[1])
                elif message[0] == "result":
                    results[index] = message[1]
                    break
                elif message[0] == "reply":
                    _, ident, worker, status = message
                    controller.replies.setdefault(ident, []).append(f"worker {worker}: {status}")
        except (EOFError, OSError):
            # A worker that is gone (killed on purpose, or crashed: see run_fleet's loop).
            continue
    time.sleep(0.02)


def _settings_json(settings: FleetSettings) -> dict[str, Any]:
    """The run's settings for reports: never a secret."""
    groups = settings.groups
    return {
        "workers": settings.workers,
        "tasks_per_provider": settings.tasks,
        "duration_s": settings.duration,
        "max_in_flight_per_worker": settings.max_in_flight,
        "http2": settings.http2,
        "tls": settings.ca_file is not None,
        "strategy": settings.strategy.label,
        "strategy_options": {
            k: v for k, v in settings.strategy.options if isinstance(v, str | int | float | bool)
        },
        "providers": {
            group: {"cells": len(specs), "lifetime_s": specs[0].lifetime} for group, specs in groups.items()
        },
        "refresh_ratio": (settings.policy or RefreshPolicy()).ratio,
        "store": None
        if settings.store_url is None
        else {
            "url": settings.store_url,
            "options": {k: v for k, v in settings.store_options if isinstance(v, str | int | float | bool)},
        },
    }
