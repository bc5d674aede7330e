"""The pool's lifecycle: entered, warmed up and closed from any task, inside any cancel scope.

A ``TokenPool`` runs its refresh loops in a task group of its own, which is
entered and left in a host task of its own, not in the caller's task.  So a
pool can be opened in one task and closed in another, entered inside a cancel
scope that ends long before the pool does, closed inside an already-cancelled
scope, and several pools can be opened and closed in any order.  A
cancellation that arrives while ``async with TokenPool(...)`` waits for its
first tokens propagates to the scope that asked for it and leaves the pool
closed, its connections closed, and the event loop healthy.

Real servers only, all on 127.0.0.1: the project's emulator for real tokens,
and :class:`HangingServer`, a TCP listener that accepts token requests and
never answers, and counts the connections it accepted and the ones the client
closed.  Nothing here asserts how long anything took: progress is observed
through events and the hanging server's counts, and every wait is bounded by
a generous deadline that only exists so that a regression fails instead of
hanging CI.

The user shapes at the end (``asyncio.run``, ``uvloop``, ``trio.run``,
``anyio.run``, an ``asyncio.TaskGroup``, a Starlette app served by hypercorn)
each run on a fresh event loop of their own: in a fresh thread, or for the web
app in a real server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
import trio
import uvloop
from _workers import APPS, app_env

from tokenpool import PoolStateError, RefreshPolicy, Token, TokenPool, TokenRequestError
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# On trio, a token request cancelled while its body is being sent leaves httpx's
# ByteStream async generator unexhausted, and trio warns when it is collected:
# httpx issue #3686 (see tests/pool/test_no_leaks.py).  Nothing of ours; applied only
# to the tests that cancel a request in flight, and nothing else is ignored.
cancels_a_request_in_flight = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in.*ByteStream\.__aiter__:pytest.PytestUnraisableExceptionWarning"
)

T = TypeVar("T")

#: Bound on every wait.  Only there so that a regression fails instead of hanging CI.
WAIT = 60.0

#: asyncio, asyncio on uvloop and trio, for the tests where the event loop implementation matters.
ALL_LOOPS = pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param("asyncio", id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param("trio", id="trio"),
    ],
)

#: A hanging request must outlast every test; the deadline is never what ends it.
PATIENT = RefreshPolicy(request_timeout=WAIT)


# -- servers ------------------------------------------------------------------------------------


class HangingServer:
    """A loopback token endpoint that accepts connections, reads them, and never answers.

    It runs on a thread of its own (so no event loop under test owns it) and
    counts the connections it accepted and the ones the client closed (end of
    stream or reset).
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._changed = threading.Condition()
        self._accepted = 0
        self._closed_by_client = 0
        self._thread = threading.Thread(target=self._serve, name="hanging-token-endpoint", daemon=True)

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def provider(self) -> ClientCredentials:
        return ClientCredentials(
            token_url=self.token_url, client_id="hang-client", client_secret="hang-secret", refresh=PATIENT
        )

    @property
    def accepted(self) -> int:
        with self._changed:
            return self._accepted

    @property
    def closed_by_client(self) -> int:
        with self._changed:
            return self._closed_by_client

    def counts(self) -> tuple[int, int]:
        """``(accepted, closed by the client)``, read together."""
        with self._changed:
            return self._accepted, self._closed_by_client

    def wait_for(self, condition: Callable[[int, int], bool], timeout: float) -> bool:
        """Block until ``condition(accepted, closed by the client)`` holds; ``False`` after *timeout*.

        The serving thread notifies on every change, so this wakes on the change itself.
        """
        with self._changed:
            return self._changed.wait_for(lambda: condition(self._accepted, self._closed_by_client), timeout)

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, "listener")
        selector.register(self._wake_reader, selectors.EVENT_READ, "stop")
        open_connections: dict[int, socket.socket] = {}
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "stop":
                        return
                    if key.data == "listener":
                        try:
                            connection, _ = self._listener.accept()
                        except BlockingIOError:
                            continue
                        connection.setblocking(False)
                        selector.register(connection, selectors.EVENT_READ, "connection")
                        open_connections[connection.fileno()] = connection
                        with self._changed:
                            self._accepted += 1
                            self._changed.notify_all()
                        continue
                    connection = open_connections[key.fd]
                    try:
                        data = connection.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""  # reset by the client: closed as well
                    if data:
                        continue  # the request; it is never answered
                    selector.unregister(connection)
                    del open_connections[key.fd]
                    connection.close()
                    with self._changed:
                        self._closed_by_client += 1
                        self._changed.notify_all()
        finally:
            for connection in open_connections.values():
                connection.close()
            selector.close()

    def __enter__(self) -> HangingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._wake_writer.send(b"x")
        self._thread.join(WAIT)
        for sock in (self._listener, self._wake_reader, self._wake_writer):
            sock.close()


@pytest.fixture
def hanging() -> Iterator[HangingServer]:
    with HangingServer() as server:
        yield server


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback token URL on a port that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/token"


# -- helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the emulator's generic provider is; plain data, so it can cross to another thread."""

    token_url: str
    client_id: str
    client_secret: str
    ca_file: str

    @classmethod
    def of(cls, emulator: EmulatorProcess) -> Target:
        client_id, client_secret = emulator.credentials("generic")
        return cls(emulator.token_url("generic"), client_id, client_secret, emulator.ca_file)

    def provider(self) -> ClientCredentials:
        return ClientCredentials(
            token_url=self.token_url, client_id=self.client_id, client_secret=self.client_secret
        )


def emulator_pool(emulator: EmulatorProcess, **kwargs: Any) -> TokenPool:
    providers = {"acme": Target.of(emulator).provider(), **kwargs.pop("extra", {})}
    kwargs.setdefault("metrics", False)
    return TokenPool(providers, ca_file=emulator.ca_file, **kwargs)


def token_requests(emulator: EmulatorProcess) -> int:
    return int(emulator.stats(events=False)["providers"]["generic"]["token_requests"])


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll *condition* (the emulator's counters, in another process); bounded by WAIT."""
    try:
        with anyio.fail_after(WAIT):
            while not condition():  # noqa: ASYNC110 - the condition is changed by another process
                await anyio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


async def until_counts(server: HangingServer, condition: Callable[[int, int], bool], what: str) -> None:
    """Wait (in a worker thread, on the server's condition variable) until *condition* holds; bounded."""
    if not await anyio.to_thread.run_sync(server.wait_for, condition, WAIT):
        pytest.fail(f"never happened: {what} (accepted, closed by the client: {server.counts()})")


async def in_flight(server: HangingServer, count: int = 1) -> None:
    await until_counts(
        server, lambda accepted, closed: accepted >= count, f"{count} connection(s) to the hanging server"
    )


async def all_closed_by_client(server: HangingServer) -> None:
    """Every connection the hanging server accepted (at least one) was closed by the client."""
    await until_counts(
        server,
        lambda accepted, closed: accepted >= 1 and closed == accepted,
        "the client closing its connections to the hanging server",
    )


def asyncio_tasks() -> set[asyncio.Task[Any]] | None:
    """The tasks alive on the running asyncio loop, or ``None`` when the loop is not asyncio's."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return asyncio.all_tasks()


def assert_no_tasks_left(before: set[asyncio.Task[Any]] | None) -> None:
    """On asyncio, no task that was not alive at *before* is still alive (the test's own are done)."""
    if before is None:
        return
    left = {task for task in asyncio.all_tasks() - before if not task.done()}
    assert not left, f"tasks left running: {sorted(task.get_name() for task in left)}"


async def assert_closed(pool: TokenPool, name: str = "acme") -> None:
    with pytest.raises(PoolStateError):
        await pool.token(name)


async def assert_loop_healthy(emulator: EmulatorProcess) -> None:
    """The current task awaits normally, and can open another pool that works."""
    await anyio.lowlevel.checkpoint()
    with anyio.fail_after(WAIT):
        await anyio.sleep(0.001)
        requests = token_requests(emulator)
        async with emulator_pool(emulator) as pool:
            token = await pool.token("acme")
        assert token.access_token
        assert token_requests(emulator) == requests + 1
    await assert_closed(pool)


# -- entering and closing from any task, inside any cancel scope ------------------------------------


@ALL_LOOPS
async def test_a_pool_opened_in_one_task_is_closed_from_another(emulator: EmulatorProcess) -> None:
    before = asyncio_tasks()
    pool = emulator_pool(emulator)
    tokens: list[Token] = []
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.__aenter__, name="opener")  # returns as soon as the pool is open
        # The opener task has finished; the pool stays open and serves this task.
        tokens.append(await pool.token("acme"))

        async def closer() -> None:
            tokens.append(await pool.token("acme"))
            await pool.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(closer, name="closer")
    assert tokens[0] == tokens[1]
    assert token_requests(emulator) == 1
    await assert_closed(pool)
    assert_no_tasks_left(before)
    await assert_loop_healthy(emulator)


@ALL_LOOPS
async def test_a_pool_entered_inside_a_scope_outlives_it_and_closes_inside_fail_after(
    emulator: EmulatorProcess,
) -> None:
    before = asyncio_tasks()
    pool = emulator_pool(emulator)
    with anyio.fail_after(WAIT):
        await pool.__aenter__()
    # That scope is gone; the pool is still open.
    with anyio.move_on_after(WAIT) as scope:
        token = await pool.token("acme")
    assert not scope.cancelled_caught
    assert token.access_token
    with anyio.fail_after(WAIT):
        await pool.aclose()
    await assert_closed(pool)
    assert_no_tasks_left(before)
    await assert_loop_healthy(emulator)


@ALL_LOOPS
@cancels_a_request_in_flight
async def test_aclose_inside_an_already_cancelled_scope_still_closes(
    emulator: EmulatorProcess, hanging: HangingServer
) -> None:
    before = asyncio_tasks()
    # "hang" keeps a token request open, so there is a live connection for aclose() to close.
    pool = emulator_pool(emulator, extra={"hang": hanging.provider()}, warm_up="background")
    with anyio.fail_after(WAIT):
        await pool.__aenter__()
        await in_flight(hanging)
        assert (await pool.token("acme")).access_token
    with anyio.CancelScope() as scope:
        scope.cancel()
        await pool.aclose()
    await assert_closed(pool)
    await assert_closed(pool, "hang")
    await all_closed_by_client(hanging)
    assert_no_tasks_left(before)
    await assert_loop_healthy(emulator)


@pytest.mark.parametrize("closing_order", ["first-opened-first", "last-opened-first"])
async def test_pools_close_in_any_order(emulator: EmulatorProcess, closing_order: str) -> None:
    before = asyncio_tasks()
    a, b = emulator_pool(emulator), emulator_pool(emulator)
    with anyio.fail_after(WAIT):
        await a.__aenter__()
        await b.__aenter__()
        token_a, token_b = await a.token("acme"), await b.token("acme")
        first, second = (a, b) if closing_order == "first-opened-first" else (b, a)
        await first.aclose()
        await assert_closed(first)
        # The other one is still open and serving its own token.
        assert await second.token("acme") == (token_b if second is b else token_a)
        await second.aclose()
    await assert_closed(second)
    assert token_a.access_token != token_b.access_token
    assert token_requests(emulator) == 2
    assert_no_tasks_left(before)
    await assert_loop_healthy(emulator)


async def test_pools_opened_and_closed_interleaved_across_tasks(emulator: EmulatorProcess) -> None:
    """Task one opens A, task two opens B, task two closes A, task one closes B."""
    before = asyncio_tasks()
    a, b = emulator_pool(emulator), emulator_pool(emulator)
    a_open, b_open, a_closed = anyio.Event(), anyio.Event(), anyio.Event()
    tokens: dict[str, Token] = {}

    async def task_one() -> None:
        await a.__aenter__()
        a_open.set()
        await b_open.wait()
        await a_closed.wait()
        tokens["b, from one"] = await b.token("acme")
        await b.aclose()

    async def task_two() -> None:
        await a_open.wait()
        await b.__aenter__()
        b_open.set()
        tokens["a, from two"] = await a.token("acme")
        await a.aclose()
        a_closed.set()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(task_one, name="task one")
            tg.start_soon(task_two, name="task two")
    assert set(tokens) == {"b, from one", "a, from two"}
    await assert_closed(a)
    await assert_closed(b)
    assert token_requests(emulator) == 2
    assert_no_tasks_left(before)
    await assert_loop_healthy(emulator)


async def test_aclose_is_idempotent(emulator: EmulatorProcess) -> None:
    before = asyncio_tasks()
    with anyio.fail_after(WAIT):
        async with emulator_pool(emulator) as pool:
            await pool.token("acme")
            await pool.aclose()
            await assert_closed(pool)
            await pool.aclose()
        # __aexit__ closed it a third time.
        await pool.aclose()
        await assert_closed(pool)

        # Two tasks closing one pool at once.
        other = emulator_pool(emulator)
        await other.__aenter__()
        await other.token("acme")
        async with anyio.create_task_group() as tg:
            tg.start_soon(other.aclose, name="closer one")
            tg.start_soon(other.aclose, name="closer two")
        await assert_closed(other)
    assert_no_tasks_left(before)
    await assert_loop_healthy(emulator)


async def test_entering_a_pool_twice_raises_pool_state_error(emulator: EmulatorProcess) -> None:
    with anyio.fail_after(WAIT):
        pool = emulator_pool(emulator)
        async with pool:
            with pytest.raises(PoolStateError):
                await pool.__aenter__()
            assert (await pool.token("acme")).access_token  # still open and serving
        with pytest.raises(PoolStateError):
            await pool.__aenter__()
        await assert_closed(pool)
    assert token_requests(emulator) == 1


async def test_warm_up_from_another_task_inside_a_scope(emulator: EmulatorProcess) -> None:
    results: list[dict[str, TokenRequestError | None]] = []

    async def warm(pool: TokenPool) -> None:
        with anyio.fail_after(WAIT):
            results.append(await pool.warm_up())

    with anyio.fail_after(WAIT):
        async with emulator_pool(emulator, warm_up="lazy") as pool:
            assert token_requests(emulator) == 0
            async with anyio.create_task_group() as tg:
                tg.start_soon(warm, pool, name="warmer")
            assert results == [{"acme": None}]
            warmed = pool.statistics().cells["acme"]
            assert (await pool.token("acme")).access_token
            after = pool.statistics().cells["acme"]
            assert (after.hits, after.misses) == (warmed.hits + 1, warmed.misses)  # served at once
    assert token_requests(emulator) == 1


async def test_warm_up_wait_logs_a_provider_that_is_down_and_still_enters(
    emulator: EmulatorProcess, refused_url: str, log_events: list[dict[str, Any]]
) -> None:
    down = ClientCredentials(token_url=refused_url, client_id="down-client", client_secret="down-secret")
    with anyio.fail_after(WAIT):
        async with emulator_pool(emulator, extra={"down": down}, warm_up="wait") as pool:
            # Entering waited for both warm-ups: acme's token is there, down's failure is logged.
            assert pool.statistics().cells["acme"].has_token
            failures = [
                event
                for event in log_events
                if event.get("provider") == "down" and str(event["event"]).startswith("token.refresh.")
                if event["event"] != "token.refresh.start"
            ]
            assert failures, log_events
            assert all(event["log_level"] in ("warning", "error") for event in failures)
            assert (await pool.token("acme")).access_token
            with pytest.raises(TokenRequestError):
                await pool.token("down")
    await assert_closed(pool)


# -- cancellation while entering --------------------------------------------------------------------


@ALL_LOOPS
@cancels_a_request_in_flight
@pytest.mark.parametrize("how", ["deadline", "cancel"])
async def test_cancellation_during_warm_up_closes_the_pool_and_leaves_the_loop_healthy(
    emulator: EmulatorProcess, hanging: HangingServer, how: Literal["deadline", "cancel"]
) -> None:
    """``async with TokenPool(...)`` waits for a token endpoint that never answers, and is cancelled.

    ``deadline``: the enclosing ``move_on_after`` runs out.  ``cancel``: another
    task calls ``CancelScope.cancel()`` on an outer scope, through an inner
    ``fail_after`` that must not turn it into a timeout.
    """
    before = asyncio_tasks()
    pool = TokenPool({"hang": hanging.provider()}, warm_up="wait", metrics=False)
    entered = False

    async def cancel_once_in_flight(scope: anyio.CancelScope) -> None:
        await in_flight(hanging)
        if how == "deadline":
            # Shortly after the request is in flight: the scope's own timer fires.
            scope.deadline = anyio.current_time() + 0.05
        else:
            scope.cancel()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            if how == "deadline":
                with anyio.move_on_after(WAIT) as scope:
                    tg.start_soon(cancel_once_in_flight, scope, name="canceller")
                    async with pool:
                        entered = True
            else:
                with anyio.CancelScope() as scope:
                    tg.start_soon(cancel_once_in_flight, scope, name="canceller")
                    with anyio.fail_after(WAIT):
                        async with pool:
                            entered = True
    assert scope.cancelled_caught
    assert not entered
    assert hanging.accepted == 1
    await assert_closed(pool, "hang")
    await all_closed_by_client(hanging)
    await assert_loop_healthy(emulator)
    assert_no_tasks_left(before)


@ALL_LOOPS
@cancels_a_request_in_flight
async def test_cancellation_during_warm_up_of_several_providers(
    emulator: EmulatorProcess, hanging: HangingServer
) -> None:
    """One provider answers, one never does; the enclosing scope is cancelled mid-warm-up."""
    before = asyncio_tasks()
    pool = emulator_pool(emulator, extra={"hang": hanging.provider()}, warm_up="wait")
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:

                async def cancel_once_in_flight() -> None:
                    await in_flight(hanging)
                    await eventually(lambda: token_requests(emulator) == 1, "acme's token request")
                    scope.cancel()

                tg.start_soon(cancel_once_in_flight, name="canceller")
                async with pool:
                    pytest.fail("entered a pool whose warm-up was cancelled")
    assert scope.cancelled_caught
    await assert_closed(pool, "acme")
    await assert_closed(pool, "hang")
    await all_closed_by_client(hanging)
    await assert_loop_healthy(emulator)
    assert_no_tasks_left(before)


# -- user shapes, each on an event loop of its own ------------------------------------------------


def run_in_fresh_thread(run: Callable[[], T]) -> T:
    """Call *run* in a new thread (so it starts its own event loop) and return or raise its outcome."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(run())
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="user-shape", daemon=True)
    thread.start()
    thread.join(WAIT)
    if thread.is_alive():
        pytest.fail(f"the event loop in the user's shape did not finish within {WAIT:g} s")
    if errors:
        raise errors[0]
    return results[0]


async def open_get_close(target: Target) -> str:
    """What every user shape does: open a pool, get a token, close; with the library's defaults."""
    pool = TokenPool({"x": target.provider()}, ca_file=target.ca_file)
    async with pool:
        token = await pool.token("x")
    with pytest.raises(PoolStateError):
        await pool.token("x")
    current = asyncio_tasks()
    if current is not None:
        assert current == {asyncio.current_task()}, f"tasks left running: {current}"
    return token.access_token


def assert_one_real_token(emulator: EmulatorProcess, access_token: str) -> None:
    assert access_token
    assert token_requests(emulator) == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_shape_anyio_run(emulator: EmulatorProcess, backend: str) -> None:
    target = Target.of(emulator)
    access_token = run_in_fresh_thread(lambda: anyio.run(open_get_close, target, backend=backend))
    assert_one_real_token(emulator, access_token)


def test_shape_asyncio_run(emulator: EmulatorProcess) -> None:
    target = Target.of(emulator)
    access_token = run_in_fresh_thread(lambda: asyncio.run(open_get_close(target)))
    assert_one_real_token(emulator, access_token)


@pytest.mark.parametrize("runner", ["uvloop.run", "asyncio.Runner"])
def test_shape_uvloop(emulator: EmulatorProcess, runner: str) -> None:
    target = Target.of(emulator)

    async def main() -> str:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        return await open_get_close(target)

    def run() -> str:
        if runner == "uvloop.run":
            result: str = uvloop.run(main())
            return result
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
            return loop_runner.run(main())

    assert_one_real_token(emulator, run_in_fresh_thread(run))


def test_shape_trio_run(emulator: EmulatorProcess) -> None:
    target = Target.of(emulator)
    access_token = run_in_fresh_thread(lambda: trio.run(open_get_close, target))
    assert_one_real_token(emulator, access_token)


def test_shape_asyncio_task_group_opens_in_one_task_and_closes_in_another(
    emulator: EmulatorProcess,
) -> None:
    target = Target.of(emulator)

    async def main() -> str:
        pool = TokenPool({"x": target.provider()}, ca_file=target.ca_file)
        opened, used = asyncio.Event(), asyncio.Event()
        tokens: list[Token] = []

        async def opener() -> None:
            await pool.__aenter__()
            opened.set()

        async def user() -> None:
            await opened.wait()
            tokens.append(await pool.token("x"))
            used.set()

        async def closer() -> None:
            await used.wait()
            await pool.aclose()

        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            tg.create_task(opener(), name="opener")
            tg.create_task(user(), name="user")
            tg.create_task(closer(), name="closer")
        with pytest.raises(PoolStateError):
            await pool.token("x")
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return tokens[0].access_token

    assert_one_real_token(emulator, run_in_fresh_thread(lambda: asyncio.run(main())))


@pytest.mark.parametrize("worker_class", ["asyncio", "uvloop", "trio"])
def test_shape_starlette_lifespan_served_by_hypercorn(emulator: EmulatorProcess, worker_class: str) -> None:
    """tests/apps/lifespan_app.py under ``hypercorn -k WORKER_CLASS``: a GET, then SIGTERM."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "hypercorn",
            "--bind",
            f"fd://{listener.fileno()}",
            "--worker-class",
            worker_class,
            "--graceful-timeout",
            "5",
            "lifespan_app:app",
        ]
        server = subprocess.Popen(
            command,
            cwd=APPS,
            env=app_env(emulator),
            pass_fds=(listener.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        # The socket listens already: the request waits in its backlog until the server is up.
        with httpx.Client(timeout=WAIT, trust_env=False) as client:
            response = client.get(f"http://127.0.0.1:{port}/token")
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=WAIT)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert response.status_code == 200, (response.text, err)
    assert response.json()["token_type"] == "Bearer"
    steps = []
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "lifespan" in record:
                steps.append(record["lifespan"])
    assert steps == ["opened", "closing", "closed", "refuses tokens after close"], (out, err)
    assert server.returncode == 0, err
    assert "Traceback" not in err, err
    assert token_requests(emulator) == 1
