"""Running a fleet: start the workers, start them together, run the actions, merge the results."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from .._timing import RefreshPolicy
from ._controller import Action, FleetController
from ._progress import ProgressPrinter
from ._results import FleetResult, WorkerResult
from ._settings import FleetSettings
from ._worker import _worker_main

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["run_fleet"]


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
    completed = False

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
        completed = True
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
        completed = True
    finally:
        if progress is not None and not completed:
            progress.finish()  # an error: end the line before the traceback
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
    result = FleetResult(
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
    if progress is not None:
        # The last line shows the merged results, so it agrees with any summary of them.
        progress.finish(result)
    return result


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
