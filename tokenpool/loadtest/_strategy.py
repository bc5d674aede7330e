"""Auth strategies, the pluggable part: the base class and loading one by import path in a worker.

tokenpool's own strategy is in ``_pool_strategy.py``; the peers are in ``benchmarks/peers.py``.
"""

from __future__ import annotations

import abc
import importlib
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from .._exceptions import ConfigurationError
from ._histogram import Histogram
from ._settings import FleetSettings, StrategySpec

__all__ = ["AuthStrategy", "load_strategy"]


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
        #: Tokens dropped because the API refused them with 401, per cell (each one is replaced).
        self.token_invalidations: dict[str, int] = defaultdict(int)

    def count_token_request(self, name: str) -> None:
        self.token_request_times[name].append(time.monotonic())

    def count_invalidation(self, name: str) -> None:
        self.token_invalidations[name] += 1

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

    def has_token(self, name: str) -> bool:
        """Whether cell *name* holds a usable token now (``False``: its next call waits for one)."""
        return False

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


def load_strategy(spec: StrategySpec) -> type[AuthStrategy]:
    module_name, _, attr = spec.path.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, AuthStrategy)):
        raise ConfigurationError(f"{spec.path} is not an AuthStrategy")
    return cls
