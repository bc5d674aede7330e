"""Celery: one token pool per worker process, created in that process.

In the module that defines your Celery app::

    import os
    from celery import Celery
    from tokenpool.contrib import celery as tokenpool_celery
    from tokenpool.providers import ClientCredentials

    app = Celery("payouts", broker="redis://127.0.0.1:6379/0")

    def providers():  # runs in each worker process: read the secrets there
        return {
            "acme": ClientCredentials(
                token_url="https://auth.acme.example/oauth/token",
                client_id=os.environ["ACME_CLIENT_ID"],
                client_secret=os.environ["ACME_CLIENT_SECRET"],
            )
        }

    tokenpool_celery.install(app, providers)

    @app.task
    def pay(payout_id: str) -> int:
        client = tokenpool_celery.client("acme")  # an httpx.Client with the pool's auth
        return client.post("https://api.acme.example/payouts", json={"id": payout_id}).status_code

Or from a TOML file (the format of ``tokenpool check``, read in each worker
process): ``tokenpool_celery.install(app, config="tokenpool.toml")``; a
``[pool.store]`` table there makes all the children share one token per client.

Where the pool lives, per Celery pool type:

- **prefork** (the default): each child opens its own pool in
  ``worker_process_init`` and closes it in ``worker_process_shutdown``.  The
  parent never opens one, so nothing is inherited through ``fork()``; a
  replaced child (``--max-tasks-per-child``) opens a fresh pool.  The first
  token is fetched in the background (``warm_up="background"``) because
  Celery kills a child whose init takes longer than 4 s; a task that runs
  before it arrives waits for that single request.
- **solo**: Celery sends ``worker_process_init`` in the worker process itself,
  so the same hook opens the pool; ``worker_shutdown`` closes it.
- **threads**: no per-process signal exists; the pool opens on
  ``worker_ready`` (or on the first task, whichever is first) and is shared by
  all task threads; ``worker_shutdown`` closes it.

The gevent and eventlet pools are not supported yet.  Outside a worker (a
script calling the accessors, ``task_always_eager``) the pool opens on first
use and closes at interpreter exit.

Metrics with prefork: prometheus-client keeps each process's samples in files
when ``PROMETHEUS_MULTIPROC_DIR`` names an empty directory in the
environment that *starts* the worker (set it before the first import of
``prometheus_client``; tokenpool never sets it).  This module then drops each
child's live gauges when the child exits (``mark_process_dead``); serve the
totals with :func:`tokenpool.metrics.start_http_server` in any one process.

Logging: as long as your application has not called ``structlog.configure``,
tokenpool's events (``pool.opened``, ``token.refresh.success``...) go to the
standard library's ``tokenpool`` logger at their own level, and so to the
handler ``celery worker`` puts on the root logger, filtered by its
``--loglevel``: ``[...: INFO/ForkPoolWorker-1] token.refresh.success
provider=acme ...``, with no debug events at ``--loglevel INFO``.  An
application that uses structlog should route it through the standard library
from Celery's ``after_setup_logger`` signal.  Otherwise structlog's default
logger prints to the children's standard output, which Celery logs line by
line at ``WARNING``, whatever the event's level, debug events included.  The recipe is
``examples/celery_logging.py``, explained in ``docs/integrations.md``
("Logging under Celery").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .._blocking import BlockingTokenPool
from .._exceptions import ConfigurationError
from .._extras import require_extra
from .._token import Token
from ._common import (
    PoolRecipe,
    ProvidersFactory,
    forget_process_metrics,
    log_closed,
    log_opened,
    logger_from,
    pool_recipe,
)

with require_extra("celery", feature="tokenpool.contrib.celery"):
    from celery import Celery, signals

__all__ = [
    "ClientFactory",
    "auth",
    "client",
    "get_pool",
    "install",
    "shutdown",
    "token",
    "uninstall",
]

#: Builds the ``httpx.Client`` returned by :func:`client` for provider *name*,
#: given the pool's auth for it.  Runs in the worker process.
ClientFactory = Callable[[str, httpx.Auth], httpx.Client]

_INTEGRATION = "celery"


@dataclass(frozen=True, slots=True)
class _Installation:
    app: Celery
    recipe: PoolRecipe
    client_factory: ClientFactory | None
    #: The keyword arguments given to install() (the logger comes from there).
    pool_options: dict[str, Any]


@dataclass(slots=True)
class _ProcessPool:
    """This process's pool and the clients built on it."""

    pid: int
    pool: BlockingTokenPool
    logger: Any
    clients: dict[str, httpx.Client] = field(default_factory=dict)


# Module state is per process by nature: a forked child inherits the parent's
# objects, which is why every access compares ``pid`` with ``os.getpid()``.
_lock = threading.RLock()
_installation: _Installation | None = None
_current: _ProcessPool | None = None


def install(
    app: Celery,
    providers: ProvidersFactory | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    client_factory: ClientFactory | None = None,
    **pool_options: Any,
) -> None:
    """Give every worker process of *app* its own token pool.

    Call it once, at import time of the module that defines *app* (the worker
    imports it in the parent before forking; only settings are stored here).

    Args:
        app: The Celery application; the worker-level signals are filtered on it.
        providers: A callable returning ``{name: provider}``, run in each
            worker process when its pool opens.
        config: Instead of *providers*: a TOML file (the format of
            ``tokenpool check``) with the providers and ``[pool]`` options,
            ``[pool.store]`` included; read in each worker process when its
            pool opens, with that process's environment for ``${VARIABLE}``.
        client_factory: Builds what :func:`client` returns for a provider,
            e.g. ``lambda name, auth: httpx.Client(auth=auth, base_url=...)``.
            The default is ``httpx.Client(auth=auth)``.
        **pool_options: :class:`~tokenpool.TokenPool` keyword arguments
            (``ca_file=``, ``store=``, ``metrics=``…; they override the
            file's ``[pool]``).  ``warm_up`` defaults to ``"background"``;
            ``"wait"`` risks Celery's 4 s init deadline.
    """
    global _installation
    recipe = pool_recipe(
        providers,
        config,
        defaults={"warm_up": "background"},
        options=pool_options,
        call="install(app, providers)",
    )
    with _lock:
        if _installation is not None:
            raise ConfigurationError("tokenpool.contrib.celery is already installed in this process")
        _installation = _Installation(app, recipe, client_factory, dict(pool_options))
    # weak=False: the receivers are module functions, but be explicit; dispatch_uid
    # makes a repeated install (after uninstall) connect each receiver once.
    signals.worker_process_init.connect(_on_worker_process_init, weak=False, dispatch_uid=_uid("wpi"))
    signals.worker_process_shutdown.connect(_on_worker_process_shutdown, weak=False, dispatch_uid=_uid("wps"))
    signals.worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid=_uid("wr"))
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False, dispatch_uid=_uid("ws"))


def uninstall() -> None:
    """Close this process's pool and disconnect the signal receivers (mainly for tests)."""
    global _installation
    shutdown()
    signals.worker_process_init.disconnect(dispatch_uid=_uid("wpi"))
    signals.worker_process_shutdown.disconnect(dispatch_uid=_uid("wps"))
    signals.worker_ready.disconnect(dispatch_uid=_uid("wr"))
    signals.worker_shutdown.disconnect(dispatch_uid=_uid("ws"))
    with _lock:
        _installation = None


def get_pool() -> BlockingTokenPool:
    """This process's pool, opening it if the worker's signals have not (threads, scripts)."""
    current = _current
    if current is not None and current.pid == os.getpid():
        return current.pool
    return _open_for_this_process(reason="first use").pool


def token(name: str, *, timeout: float | None = None) -> Token:
    """A usable token for provider *name* from this process's pool."""
    return get_pool().token(name, timeout=timeout)


def auth(name: str) -> httpx.Auth:
    """An ``httpx.Auth`` for ``httpx.Client``: bearer header, provider headers, one retry on 401."""
    return get_pool().auth(name)


def client(name: str) -> httpx.Client:
    """This process's ``httpx.Client`` for provider *name* (built once, closed at shutdown).

    Safe to share between the threads of the ``threads`` pool.
    """
    current = _current
    if current is None or current.pid != os.getpid():
        current = _open_for_this_process(reason="first use")
    found = current.clients.get(name)
    if found is not None:
        return found
    with _lock:
        found = current.clients.get(name)
        if found is None:
            installation = _require_installation()
            provider_auth = current.pool.auth(name)
            factory = installation.client_factory
            found = factory(name, provider_auth) if factory is not None else httpx.Client(auth=provider_auth)
            current.clients[name] = found
        return found


def shutdown() -> None:
    """Close this process's clients and pool.  Idempotent; the signal receivers call it."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is None:
        return
    if current.pid != os.getpid():
        # Inherited through fork(): its loop thread does not exist here, and its
        # sockets belong to the parent.  Drop the reference, touch nothing.
        return
    for open_client in current.clients.values():
        open_client.close()
    current.pool.close()
    log_closed(current.logger, _INTEGRATION, current.pool.statistics())


# -- internals ------------------------------------------------------------------------------------


def _uid(name: str) -> str:
    return f"tokenpool.contrib.celery.{name}"


def _require_installation() -> _Installation:
    installation = _installation
    if installation is None:
        raise ConfigurationError(
            "tokenpool.contrib.celery is not installed: call install(app, providers) where the app is defined"
        )
    return installation


def _open_for_this_process(*, reason: str) -> _ProcessPool:
    global _current
    with _lock:
        current = _current
        if current is not None and current.pid == os.getpid():
            return current
        # A pool inherited from the parent (current.pid differs) is dropped
        # untouched, see shutdown().
        installation = _require_installation()
        logger = logger_from(installation.pool_options)
        providers, options = installation.recipe.build()
        pool = BlockingTokenPool(providers, **options).start()
        current = _current = _ProcessPool(os.getpid(), pool, logger)
        if reason == "first use":
            # Not opened by a worker signal, so nothing else will close it.  An
            # open BlockingTokenPool's loop thread would keep the interpreter
            # from exiting; threading's own exit hooks run before it joins
            # threads (plain atexit runs after, too late).
            threading._register_atexit(shutdown)  # type: ignore[attr-defined]  # private, stable since 3.9
    log_opened(logger, _INTEGRATION, list(providers), reason=reason)
    return current


def _open_quietly(reason: str) -> None:
    """Open the pool from a signal receiver; never let an error kill the worker process.

    An exception escaping ``worker_process_init`` makes the child exit, and
    Celery respawns it at once: a crash loop.  Instead the error is logged and
    the pool opens on first use, where each task sees the error itself.
    """
    try:
        _open_for_this_process(reason=reason)
    except Exception as exc:
        installation = _installation
        logger = logger_from(installation.pool_options if installation else {})
        # Not logger.exception(): a rendered traceback (rich shows locals) could
        # carry whatever secrets the providers factory had in hand.
        logger.error(  # noqa: TRY400
            "pool.open_failed",
            integration=_INTEGRATION,
            pid=os.getpid(),
            reason=reason,
            error_type=type(exc).__name__,
            error=str(exc),
        )


def _on_worker_process_init(**_: Any) -> None:
    # Prefork: in each child, right after fork.  Solo: in the worker process.
    _open_quietly("worker_process_init")


def _on_worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    shutdown()
    forget_process_metrics(pid if pid is not None else os.getpid())


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # sender is the worker's Consumer.  Only the threads pool runs tasks in this
    # process without sending worker_process_init; the prefork parent must not
    # open a pool (its children would inherit it).
    installation = _installation
    if installation is None or getattr(sender, "app", None) is not installation.app:
        return
    task_pool = getattr(sender, "pool", None)
    if type(task_pool).__module__ == "celery.concurrency.thread":
        _open_quietly("worker_ready")


def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    # The main worker process, after its task pool stopped (solo, threads); in
    # the prefork parent there is no pool and this does nothing.
    installation = _installation
    if installation is None or getattr(sender, "app", None) is not installation.app:
        return
    shutdown()
