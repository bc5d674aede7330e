"""Pieces shared by the integrations: the providers factory, lifecycle log events, metrics hygiene."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._exceptions import ConfigurationError
from .._statistics import PoolStatistics
from ..logging import library_logger
from ..providers import Provider

__all__ = [
    "PoolRecipe",
    "ProvidersFactory",
    "build_providers",
    "forget_process_metrics",
    "log_closed",
    "log_opened",
    "pool_recipe",
]

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


@dataclass(frozen=True, slots=True)
class PoolRecipe:
    """How an integration builds a pool in the process that uses it: providers and keyword arguments.

    Either a providers factory or a TOML file (*config*, the format of
    ``tokenpool check``) giving the providers and the ``[pool]`` options,
    ``[pool.store]`` included.  Only settings are kept here: the factory runs,
    or the file is read (its ``${VARIABLE}`` secrets taken from the
    environment), in the process that opens the pool.  Options: the
    integration's *defaults*, overridden by the file's ``[pool]``, overridden
    by the keyword arguments (*options*).
    """

    providers: ProvidersFactory | None
    config: str | None
    defaults: Mapping[str, Any]
    options: Mapping[str, Any]

    def build(self) -> tuple[Mapping[str, Provider], dict[str, Any]]:
        """The providers and the pool's keyword arguments, for this process."""
        if self.config is None:
            assert self.providers is not None  # pool_recipe() made sure
            return build_providers(self.providers), {**self.defaults, **self.options}
        from .._config import load_config

        config = load_config(self.config)
        return config.providers, {**self.defaults, **config.pool_options, **self.options}


def pool_recipe(
    providers: ProvidersFactory | None,
    config: str | os.PathLike[str] | None,
    *,
    defaults: Mapping[str, Any],
    options: Mapping[str, Any],
    call: str,
) -> PoolRecipe:
    """Check what an integration was given (*call* names it in errors) and keep it for later.

    Raises:
        ConfigurationError: neither or both of *providers* and *config*, a
            factory that is not callable, or no file at *config*.
    """
    if config is None:
        if not callable(providers):
            raise ConfigurationError(
                f"{call}: providers must be a callable returning a mapping (or pass config=PATH)"
            )
        return PoolRecipe(providers, None, dict(defaults), dict(options))
    if providers is not None:
        raise ConfigurationError(
            f"{call}: pass a providers factory or config= (whose file has the [providers]), not both"
        )
    if not isinstance(config, str | os.PathLike):
        raise ConfigurationError(f"config must be the path of a TOML file, got {type(config).__name__}")
    # Absolute now, so that a later chdir (a daemonising worker) does not lose it.
    path = os.path.abspath(os.fspath(config))
    if not os.path.isfile(path):
        raise ConfigurationError(f"config: no such file: {path}")
    return PoolRecipe(None, path, dict(defaults), dict(options))


def logger_from(pool_options: Mapping[str, Any]) -> Any:
    """The logger the pool itself will use (the user's, or :func:`tokenpool.logging.library_logger`)."""
    logger = pool_options.get("logger")
    return logger if logger is not None else library_logger()


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
