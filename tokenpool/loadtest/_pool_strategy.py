"""tokenpool as a fleet auth strategy: one ``TokenPool`` per worker, its events counted, not printed."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from .._exceptions import TokenPoolError
from ._client import make_client
from ._emulator import build_provider
from ._settings import FleetSettings, StrategySpec
from ._strategy import AuthStrategy

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .._pool import TokenPool
    from .._token import Token
    from ..providers import Provider

__all__ = ["TokenPoolStrategy", "store_counts"]


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
        elif event == "token.invalidated" and isinstance(provider, str):
            self._strategy.count_invalidation(provider)
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

        from .._pool import TokenPool

        settings = self.settings
        self.providers = {s.name: build_provider(s, settings.policy) for s in settings.specs}
        self.registry = CollectorRegistry() if self.spec.option("metrics", True) else None
        metrics: bool | CollectorRegistry = False if self.registry is None else self.registry
        extra: dict[str, Any] = {}
        if settings.store_url is not None:
            from ..fleet import RedisStore

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

    def has_token(self, name: str) -> bool:
        return self.pool is not None and self.pool.usable_token(name) is not None

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
