"""Where tokenpool's log events land under a real Celery prefork worker, and at which level.

Each test runs a real ``celery worker`` (prefork, two children) on a real
Redis broker; its children fetch 3 s tokens from the emulator and renew them.
Celery prints every log record as ``[asctime: LEVEL/processName] message``:

- the application configures no logging (``celery_plain_app``): tokenpool's
  events go to the standard library's ``tokenpool`` logger, and Celery's root
  handler prints each at the event's own level, ``--loglevel`` filtering them;
- the application uses structlog with the recipe of
  ``examples/celery_logging.py`` (``celery_structlog_app``): the same, the
  fields rendered by structlog, the application's own events alongside;
- for contrast, structlog left at its defaults (``celery_print_structlog_app``):
  the issue's ``WARNING/ForkPoolWorker-1`` lines, debug events included.

Every wait is for an outcome (tasks answered, tokens issued), bounded in time;
the assertions are on counts and levels.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from _workers import (
    EXAMPLES,
    LIFETIME,
    Worker,
    app_env,
    celery_app_worker_argv,
    redis_server,
    require_module,
    resource_401s,
    run_celery_tasks,
)

from tokenpool.testing import EmulatorProcess

celery = require_module("celery", "pip install 'tokenpool[celery]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Prefork children per worker.
CHILDREN = 2
#: ``expires_in`` switched to before the worker stops: each child's next renewal is its
#: last of the run, so no token request is in flight when the worker stops.
LONG_LIFETIME = 600

#: The level each event must be logged at: tokenpool's, then the test app's own.
EVENT_LEVELS: Mapping[str, str] = {
    "token.refresh.start": "DEBUG",
    "token.refresh.success": "INFO",
    "token.invalidated": "INFO",
    "pool.opened": "INFO",
    "pool.closed": "INFO",
    "payout.detail": "DEBUG",
    "payout.sent": "INFO",
    "payout.failed": "ERROR",
}

#: Celery's worker_log_format: "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s".
_RECORD = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: (?P<level>[A-Z]+)/(?P<process>[^\]]+)\] (?P<message>.*)$"
)
_EVENT = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, EVENT_LEVELS)) + r")(?![\w.])")
#: What an issued token looks like (``secrets.token_urlsafe``), to find any in the output.
_TOKENISH = re.compile(r"[A-Za-z0-9_-]{20,}")


@dataclass(frozen=True)
class Line:
    """One output line: a log record's first line (with its level and process) or anything else."""

    text: str
    level: str | None
    process: str | None
    message: str

    @classmethod
    def parse(cls, text: str) -> Line:
        match = _RECORD.match(text)
        if match is None:
            return cls(text, None, None, text)
        return cls(text, match["level"], match["process"], match["message"])

    @property
    def event(self) -> str:
        return self.message.split(" ", 1)[0]

    def fields(self) -> dict[str, str]:
        """The ``key=value`` words after the event (values without spaces, as in these events)."""
        words = self.message.split(" ")[1:]
        return dict(word.split("=", 1) for word in words if "=" in word)


@dataclass
class Run:
    """What one worker run left behind."""

    lines: list[Line]
    results: list[dict[str, Any]]
    exit_code: int
    token_requests: int  # answered by the emulator
    client_secret: str

    def records(self, event: str) -> list[Line]:
        """The log records of *event* (whose message starts with it)."""
        return [line for line in self.lines if line.level is not None and line.event == event]

    def mentions(self, text: str) -> list[str]:
        return [line.text for line in self.lines if text in line.text]

    def misfiled(self) -> list[str]:
        """Lines that carry a known event at another level than its own (or outside any record)."""
        bad = []
        for line in self.lines:
            found = _EVENT.search(line.message)
            if found is not None and line.level != EVENT_LEVELS[found[1]]:
                bad.append(line.text)
        return bad

    def leaks(self) -> list[str]:
        """Lines showing the client secret, a bearer credential or a token a task was given."""
        used = {str(result["token_sha256"]) for result in self.results}
        bad = []
        for line in self.lines:
            words = _TOKENISH.findall(line.text)
            if (
                self.client_secret in line.text
                or re.search(r"Bearer (?!\[redacted\])", line.text)
                or any(hashlib.sha256(word.encode()).hexdigest() in used for word in words)
            ):
                bad.append(line.text)
        return bad


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def database(redis_url: str, number: int) -> str:
    """The URL of Redis database *number*: each test gets its own broker state."""
    return f"{redis_url.rsplit('/', 1)[0]}/{number}"


def run_celery_task(broker_url: str, queue: str, name: str) -> dict[str, Any]:
    """Send one task *name* and return its result (bounded wait)."""
    producer = celery.Celery("producer", broker=broker_url, backend=broker_url)
    producer.conf.broker_connection_retry_on_startup = True
    try:
        result = producer.send_task(name, queue=queue)
        value = dict(result.get(timeout=60))
        # AsyncResult.__del__ talks to Redis: let it happen now, while Redis is up.
        del result
        gc.collect()
        return value
    finally:
        producer.close()


def wait_for_issued(emulator: EmulatorProcess, expires_in: int, *, count: int, timeout: float = 60) -> None:
    """Wait until the emulator has issued *count* ``generic`` tokens of that ``expires_in``."""
    deadline = time.monotonic() + timeout
    while True:
        events = emulator.stats(events=True)["events"]
        issued = sum(
            1
            for event in events
            if event["provider"] == "generic"
            and event["kind"] == "token_issued"
            and event["detail"] == str(expires_in)
        )
        if issued >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{issued} of {count} tokens of {expires_in} s issued after {timeout:g} s")
        time.sleep(0.1)


def lifetimes_by_child(lines: Sequence[Line]) -> dict[str | None, list[float]]:
    """The ``expires_in`` of each ``token.refresh.success`` logged, in order, by process name."""
    found: dict[str | None, list[float]] = {}
    for line in lines:
        if line.level is not None and line.event == "token.refresh.success":
            found.setdefault(line.process, []).append(float(line.fields()["expires_in"]))
    return found


def wait_for_lifetimes(worker: Worker, enough: Callable[[list[float]], bool], what: str) -> None:
    """Wait until the log shows, for each child, refreshes whose lifetimes are *enough*."""

    def done(texts: list[str]) -> bool:
        found = lifetimes_by_child([Line.parse(text) for text in list(texts)])
        return sum(1 for lifetimes in found.values() if enough(lifetimes)) >= CHILDREN

    worker.output.wait_for(done, timeout=60, what=f"{what} in each of {CHILDREN} children")


def run_worker(
    emulator: EmulatorProcess,
    redis_url: str,
    *,
    app: str,
    loglevel: str,
    queue: str,
    extra_tasks: Sequence[str] = (),
    watch_log: bool = False,
) -> Run:
    """Run a prefork worker of *app* through fetches and renewals of short tokens, then stop it.

    With *watch_log*, wait for the renewals in the worker's log (each child's, as
    ``check_refreshes`` expects), else at the emulator (all children's together).
    """
    emulator.set_lifetime("generic", expires_in=LIFETIME)
    env = app_env(emulator, TOKENPOOL_TEST_REDIS_URL=redis_url)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), env["PYTHONPATH"]])
    argv = celery_app_worker_argv(app, loglevel=loglevel, queue=queue, concurrency=CHILDREN)
    with Worker(argv, env=env) as worker:
        results = run_celery_tasks(redis_url, queue, per_tick=4, ticks=10, interval=0.2)
        results += [run_celery_task(redis_url, queue, name) for name in extra_tasks]
        # Each child fetched a token when it started and renews it every 0.8·L: wait for
        # a renewal in each, then for its long token.
        if watch_log:
            wait_for_lifetimes(worker, lambda lifetimes: lifetimes.count(LIFETIME) >= 2, "a renewal")
        else:
            wait_for_issued(emulator, LIFETIME, count=2 * CHILDREN)
        emulator.set_lifetime("generic", expires_in=LONG_LIFETIME)
        if watch_log:
            wait_for_lifetimes(worker, lambda lifetimes: LONG_LIFETIME in lifetimes, "a long token")
        else:
            wait_for_issued(emulator, LONG_LIFETIME, count=CHILDREN)
        exit_code = worker.stop(signal.SIGTERM)
    stats = emulator.stats(events=False)
    assert resource_401s(stats) == 0
    assert [result["status"] for result in results if "status" in result] == [200] * 40
    return Run(
        lines=[Line.parse(text) for text in worker.output.lines],
        results=results,
        exit_code=exit_code,
        token_requests=int(stats["providers"]["generic"]["token_requests"]),
        client_secret=emulator.credentials("generic")[1],
    )


def check_refreshes(run: Run, *, prefix: str) -> None:
    """Every token request was logged once, at INFO, by a child, its message starting with *prefix*."""
    successes = run.records("token.refresh.success")
    assert len(successes) == run.token_requests
    closed = run.records("pool.closed")
    assert len(closed) == CHILDREN
    assert sum(int(line.fields()["token_requests"]) for line in closed) == run.token_requests
    children = {line.process for line in run.records("pool.opened")}
    assert len(children) == CHILDREN
    for line in successes:
        assert line.level == "INFO", line.text
        assert line.message.startswith(prefix), line.text
        fields = line.fields()
        assert fields["provider"] == "generic", line.text
        assert {"duration", "expires_in", "refresh_in", "remaining"} <= set(fields), line.text
    by_child = lifetimes_by_child(run.lines)
    assert set(by_child) == children
    for child, lifetimes in by_child.items():
        assert str(child).startswith("ForkPoolWorker-")
        # Fetched at start, renewed at least once, then one long token and no more.
        assert lifetimes.count(LIFETIME) >= 2, (child, lifetimes)
        assert lifetimes[-1] == LONG_LIFETIME, (child, lifetimes)
        assert lifetimes.count(LONG_LIFETIME) == 1, (child, lifetimes)


def test_without_logging_configured_events_are_printed_at_their_level(
    emulator: EmulatorProcess, redis_url: str
) -> None:
    run = run_worker(
        emulator,
        database(redis_url, 1),
        app="celery_plain_app",
        loglevel="INFO",
        queue="info",
        watch_log=True,
    )
    assert run.exit_code == 0, "\n".join(line.text for line in run.lines[-60:])

    check_refreshes(run, prefix="token.refresh.success provider=generic duration=")
    assert run.mentions("token.refresh.start") == []  # debug: below --loglevel INFO
    assert run.misfiled() == []
    assert run.leaks() == []
    assert [line.text for line in run.lines if line.level in ("ERROR", "CRITICAL")] == []
    assert run.mentions("Traceback") == []


def test_without_logging_configured_loglevel_warning_hides_them(
    emulator: EmulatorProcess, redis_url: str
) -> None:
    run = run_worker(
        emulator, database(redis_url, 2), app="celery_plain_app", loglevel="WARNING", queue="warning"
    )
    assert run.exit_code == 0, "\n".join(line.text for line in run.lines[-60:])

    assert run.token_requests >= 2 * CHILDREN + CHILDREN  # fetched, renewed, renewed long
    assert run.mentions("token.refresh.success") == []
    assert run.mentions("pool.opened") == []
    assert [line.text for line in run.lines if line.level in ("DEBUG", "INFO")] == []
    assert run.misfiled() == []
    assert run.leaks() == []
    assert run.mentions("Traceback") == []


def check_logged_failure(run: Run) -> None:
    """``payout.failed`` at ERROR with its traceback, the token in the exception's message masked."""
    (failed,) = run.records("payout.failed")
    assert failed.level == "ERROR"
    assert failed.message == "payout.failed [payouts] amount=125"
    start = run.lines.index(failed)
    end = next(
        (n for n in range(start + 1, len(run.lines)) if run.lines[n].level is not None), len(run.lines)
    )
    traceback = [line.text for line in run.lines[start + 1 : end]]
    assert traceback[0] == "Traceback (most recent call last):", traceback
    assert "RuntimeError: the provider refused Bearer [redacted]" in traceback, traceback
    assert run.mentions("Traceback") == traceback[:1]


def test_structlog_recipe_logs_every_event_at_its_level_with_its_fields(
    emulator: EmulatorProcess, redis_url: str
) -> None:
    run = run_worker(
        emulator,
        database(redis_url, 3),
        app="celery_structlog_app",
        loglevel="INFO",
        queue="recipe-info",
        extra_tasks=["log_payout"],
        watch_log=True,
    )
    assert run.exit_code == 0, "\n".join(line.text for line in run.lines[-60:])

    # tokenpool's events: through structlog, then Celery's handler, fields rendered by structlog.
    check_refreshes(run, prefix="token.refresh.success [tokenpool] duration=")
    assert run.mentions("token.refresh.start") == []
    # The application's own: debug filtered out, info at INFO, the credential field redacted.
    assert run.mentions("payout.detail") == []
    (sent,) = run.records("payout.sent")
    assert (sent.level, sent.message) == ("INFO", "payout.sent [payouts] amount=125 authorization=[redacted]")
    check_logged_failure(run)
    assert [line.text for line in run.lines if line.level in ("ERROR", "CRITICAL")] == [
        run.records("payout.failed")[0].text
    ]
    # Celery's own records keep its format.
    assert any(line.level == "INFO" and line.message.endswith(" ready.") for line in run.lines)
    assert run.misfiled() == []
    assert run.leaks() == []


def test_structlog_recipe_follows_loglevel_warning(emulator: EmulatorProcess, redis_url: str) -> None:
    run = run_worker(
        emulator,
        database(redis_url, 4),
        app="celery_structlog_app",
        loglevel="WARNING",
        queue="recipe-warning",
        extra_tasks=["log_payout"],
    )
    assert run.exit_code == 0, "\n".join(line.text for line in run.lines[-60:])

    assert run.token_requests >= 2 * CHILDREN + CHILDREN
    assert run.mentions("token.refresh.success") == []
    assert run.mentions("payout.sent") == []
    assert [line.text for line in run.lines if line.level in ("DEBUG", "INFO")] == []
    check_logged_failure(run)
    assert run.misfiled() == []
    assert run.leaks() == []


def test_structlog_defaults_print_every_event_as_a_warning(emulator: EmulatorProcess, redis_url: str) -> None:
    # The issue, for contrast: what the recipe is for.
    run = run_worker(
        emulator, database(redis_url, 5), app="celery_print_structlog_app", loglevel="INFO", queue="print"
    )
    assert run.exit_code == 0, "\n".join(line.text for line in run.lines[-60:])

    started = [line for line in run.lines if "token.refresh.start" in line.message]
    assert started, "structlog's defaults print debug events too"
    assert {(line.level, str(line.process)[:15]) for line in started} == {("WARNING", "ForkPoolWorker-")}
    assert any("token.refresh.success" in text for text in run.misfiled())
