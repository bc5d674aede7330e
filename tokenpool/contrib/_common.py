"""Pieces shared by the integrations: the providers factory, lifecycle log events, metrics hygiene."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from .._exceptions import ConfigurationError
from .._pool import PoolStatistics
from ..providers import Provider

__all__ = ["ProvidersFactory", "build_providers", "forget_process_metrics", "log_closed", "log_opened"]

#: Called in the process that will use the pool; returns ``{name: provider}``.
ProvidersFactory = Callable[[], Mapping[str, Provider]]


def build_providers(factory: ProvidersFactory) -> Mapping[str, Provider]:
    """Run the user's factory and check that it returned something a pool accepts."""
    if not callable(factory):
        raise ConfigurationError(
            "providers must be a callable returning {name: provider}; it runs in each worker "
            "process so that secrets are read there"
        )
    providers = factory()
    if not isinstance(providers, Mapping) or not providers:
        raise ConfigurationError("the providers factory must return a non-empty mapping {name: provider}")
    return providers


def logger_from(pool_options: Mapping[str, Any]) -> Any:
    """The logger the pool itself will use (the user's, or tokenpool's structlog logger)."""
    logger = pool_options.get("logger")
    return logger if logger is not None else structlog.get_logger("tokenpool")


def log_opened(logger: Any, integration: str, providers: list[str], **fields: Any) -> None:
    logger.info("pool.opened", integration=integration, pid=os.getpid(), providers=providers, **fields)


def log_closed(logger: Any, integration: str, stats: PoolStatistics, **fields: Any) -> None:
    """One line per process at shutdown: how many token requests it sent, per provider and in all.

    Counts only, never a token: enough to check "one token request per
    refresh window per process" from the logs of a real deployment.
    """
    logger.info(
        "pool.closed",
        integration=integration,
        pid=os.getpid(),
        token_requests=stats.token_requests,
        token_requests_by_provider={name: cell.token_requests for name, cell in stats.cells.items()},
        hits=stats.hits,
        misses=stats.misses,
        **fields,
    )


def forget_process_metrics(pid: int) -> None:
    """In prometheus-client's multiprocess mode, drop a finished process's live gauges.

    Counters and histograms stay (they keep adding to the totals, as counters
    should); ``live*`` gauges of a dead process would otherwise linger.
    Does nothing unless the user set ``PROMETHEUS_MULTIPROC_DIR``.
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from ..metrics import mark_process_dead

    mark_process_dead(pid)
