"""Settings of a fleet run: plain, picklable values only (they travel to the workers over a pipe)."""

from __future__ import annotations

import dataclasses
import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import httpx

from .._exceptions import ConfigurationError
from .._timing import RefreshPolicy
from .._urls import is_loopback_host

__all__ = ["ALL_PROVIDERS", "FIVE_PROVIDERS", "FleetSettings", "ProviderSpec", "StrategySpec"]

#: The providers ``tokenpool demo`` runs by default (the emulator also has ``generic``).
FIVE_PROVIDERS: tuple[str, ...] = ("ntxmx", "ntxpix", "payme", "zertiban", "navro")
ALL_PROVIDERS: tuple[str, ...] = (*FIVE_PROVIDERS, "generic")


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

    path: str = "tokenpool.loadtest:TokenPoolStrategy"
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
