"""Load testing: the fleet engine behind ``tokenpool demo`` and ``benchmarks/``.

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
  bottleneck.  Time spent queueing for a slot is not
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

Layout.  The public surface is this package's ``__all__``; callers
(``benchmarks/``, ``tokenpool demo``, the tests) import from here only.  The
modules, private and one idea each:

- ``_settings``: :class:`FleetSettings`, :class:`ProviderSpec`,
  :class:`StrategySpec` (plain, picklable values; ``FIVE_PROVIDERS``,
  ``ALL_PROVIDERS``).
- ``_emulator``: :func:`emulator_specs` (the emulator's cells as settings),
  :func:`build_provider` (a cell's adapter, built by the config loader),
  :func:`emulator_providers`.
- ``_histogram``: :class:`Histogram` (log-bucketed, mergeable).
- ``_ideal``: :func:`ideal_requests`.
- ``_client``: :func:`make_client`, :func:`make_ssl_context` (the workers'
  HTTP clients, with the transport that times the auth overhead).
- ``_strategy``: :class:`AuthStrategy`, the base of every strategy, and its
  loading by import path (``"module:Class"``) inside a worker.
- ``_pool_strategy``: :class:`TokenPoolStrategy` (the default,
  ``"tokenpool.loadtest:TokenPoolStrategy"``); the peers are in
  ``benchmarks/peers.py``.
- ``_worker``: the worker process.
- ``_results``: :class:`GroupResult`, :class:`WorkerResult`,
  :class:`FleetResult`.
- ``_controller``: :class:`FleetController` and ``Action`` (timed scenario
  actions, in the parent).
- ``_progress``: :class:`ProgressPrinter`.
- ``_run``: :func:`run_fleet`.
- ``_text``: :class:`Text` (a stream's width, and ASCII where its encoding
  cannot show ``…``), plurals.
- ``_faults``: the demo's faults (a mass revocation, then an outage of every
  token endpoint), timed to the lifetimes, and what they did.
- ``_verdict``: :func:`build_report`, the demo's verdict and its criteria
  (:data:`TOKEN_WAIT_BOUND`).
- ``_summary``: :func:`render_summary`, the demo's summary as lines that fit
  the width.
- ``_demo``: ``tokenpool demo`` (:func:`add_demo_arguments`, :func:`run_demo`).

``import tokenpool`` does not import this package.
"""

from ._client import make_client, make_ssl_context
from ._controller import Action, FleetController
from ._demo import add_demo_arguments, run_demo
from ._emulator import build_provider, emulator_providers, emulator_specs
from ._histogram import Histogram
from ._ideal import ideal_requests
from ._pool_strategy import TokenPoolStrategy
from ._progress import ProgressPrinter
from ._results import FleetResult, GroupResult, WorkerResult
from ._run import run_fleet
from ._settings import ALL_PROVIDERS, FIVE_PROVIDERS, FleetSettings, ProviderSpec, StrategySpec
from ._strategy import AuthStrategy
from ._summary import render_summary
from ._text import Text
from ._verdict import TOKEN_WAIT_BOUND, build_report

__all__ = [
    "ALL_PROVIDERS",
    "FIVE_PROVIDERS",
    "TOKEN_WAIT_BOUND",
    "Action",
    "AuthStrategy",
    "FleetController",
    "FleetResult",
    "FleetSettings",
    "GroupResult",
    "Histogram",
    "ProgressPrinter",
    "ProviderSpec",
    "StrategySpec",
    "Text",
    "TokenPoolStrategy",
    "WorkerResult",
    "add_demo_arguments",
    "build_provider",
    "build_report",
    "emulator_providers",
    "emulator_specs",
    "ideal_requests",
    "make_client",
    "make_ssl_context",
    "render_summary",
    "run_demo",
    "run_fleet",
]
