"""TokenPool's arguments checked (each error names the argument at fault) and resolved to what they mean."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Literal

import httpx
from prometheus_client import CollectorRegistry

from ._exceptions import ConfigurationError
from ._http import HttpTokenSource
from ._lifecycle import WarmUp
from ._metrics import LABEL_MODES
from ._source import TokenSource
from .providers import Provider

__all__ = ["MetricsLabel", "check_provider", "check_settings", "metrics_group", "token_source"]

MetricsLabel = Literal["kind", "name"] | Callable[[str, Provider], str]


def check_settings(
    providers: object,
    *,
    warm_up: WarmUp,
    warm_up_timeout: float,
    metrics_interval: float,
    metrics_label: MetricsLabel,
    metrics: bool | CollectorRegistry,
) -> None:
    """Refuse a wrong type or value of any of these arguments, in this order."""
    if not isinstance(providers, Mapping):
        raise ConfigurationError(
            f"providers must be a mapping of name to Provider, got {type(providers).__name__}"
        )
    if warm_up not in ("wait", "background", "lazy"):
        raise ConfigurationError(f"warm_up must be 'wait', 'background' or 'lazy', got {warm_up!r}")
    if not _positive(warm_up_timeout):
        raise ConfigurationError(
            f"warm_up_timeout must be a positive number of seconds, got {warm_up_timeout!r}"
        )
    if not _positive(metrics_interval) or math.isinf(metrics_interval):
        raise ConfigurationError(
            f"metrics_interval must be a positive number of seconds, got {metrics_interval!r}"
        )
    if not (metrics_label in LABEL_MODES or callable(metrics_label)):
        raise ConfigurationError(
            "metrics_label must be 'kind', 'name' or a callable (name, provider) -> str, "
            f"got {metrics_label!r}"
        )
    if not isinstance(metrics, bool | CollectorRegistry):
        raise ConfigurationError(
            f"metrics must be True, False or a CollectorRegistry, got {type(metrics).__name__}"
        )


def token_source(
    source: TokenSource | None,
    *,
    client: httpx.AsyncClient | None,
    ca_file: str | os.PathLike[str] | None,
    max_concurrent_requests: int,
    max_requests_per_host: int,
) -> TokenSource:
    """*source*, or by default the HTTP source that the other arguments configure."""
    if source is None:
        return HttpTokenSource(
            client=client,
            ca_file=ca_file,
            max_concurrent_requests=max_concurrent_requests,
            max_requests_per_host=max_requests_per_host,
        )
    if client is not None or ca_file is not None:
        raise ConfigurationError("pass either source= or client=/ca_file= (they configure the HTTP source)")
    if not isinstance(source, TokenSource):
        raise ConfigurationError(f"source must be a TokenSource, got {type(source).__name__}")
    return source


def check_provider(name: object, provider: object) -> None:
    """Refuse a provider name that is not a non-empty str, or a provider that is not a Provider."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError("provider names must be non-empty strings")
    if not isinstance(provider, Provider):
        raise ConfigurationError(
            f"provider {name!r}: expected a tokenpool.providers.Provider, got {type(provider).__name__}"
        )


def metrics_group(label: MetricsLabel, name: str, provider: Provider) -> str:
    """The ``provider`` label value of *name*'s series, as ``metrics_label`` says (see ``_metrics``)."""
    if label == "kind":
        return provider.kind
    if label == "name":
        return name
    assert callable(label)
    group = label(name, provider)
    if not isinstance(group, str) or not group:
        raise ConfigurationError(f"metrics_label({name!r}, ...) must return a non-empty str")
    return group


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
