"""``tokenpool.testing.RedisServerProcess``: a real redis-server, started, crashed, restarted, stopped."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from _workers import require_binary

from tokenpool.testing import RedisServerProcess

_REDIS_PY = importlib.util.find_spec("redis") is not None


@pytest.fixture
def server() -> Iterator[RedisServerProcess]:
    require_binary("redis-server", "Debian: apt-get install redis-server")
    with RedisServerProcess(startup_timeout=10.0) as started:
        yield started


def raw_ping(port: int) -> bytes:
    """PING over a plain socket, without any client library."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.integration
def test_it_answers_ping_on_its_loopback_url(server: RedisServerProcess) -> None:
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.running
    assert raw_ping(server.port) == b"+PONG\r\n"
    assert server.command("PING") == "PONG"
    if _REDIS_PY:  # redis-py's blocking client (the redis extra), set up for this server
        with server.client() as client:
            assert client.ping() is True
    assert server.command("SET", "tokenpool:{t}:lease", "4242-feed", "PX", "60000") == "OK"
    assert server.keys("tokenpool:*:lease") == ["tokenpool:{t}:lease"]
    assert server.get("tokenpool:{t}:lease") == "4242-feed"
    assert 0 < server.pttl("tokenpool:{t}:lease") <= 60_000
    assert server.commands_processed() > 0
    server.flush()
    assert server.keys("*") == []
    # No persistence, whatever the machine's redis.conf says.
    assert server.command("CONFIG", "GET", "save") == ["save", ""]
    assert server.command("CONFIG", "GET", "appendonly") == ["appendonly", "no"]


@pytest.mark.integration
def test_kill_then_restart_serves_again_on_the_same_port_empty(server: RedisServerProcess) -> None:
    port, first_pid = server.port, server.pid
    assert server.command("SET", "key", "value") == "OK"
    running = [server.running]
    server.kill()
    running.append(server.running)
    assert gone(first_pid)
    with pytest.raises(ConnectionRefusedError):
        raw_ping(port)
    with pytest.raises(RuntimeError, match="not running"):
        server.kill()
    server.restart()
    running.append(server.running)
    assert running == [True, False, True]
    assert (server.port, server.url) == (port, f"redis://127.0.0.1:{port}/0")
    assert server.pid != first_pid
    assert raw_ping(port) == b"+PONG\r\n"
    assert server.get("key") is None  # a crash without persistence loses everything
    assert (server.kills, server.restarts) == (1, 1)


@pytest.mark.integration
def test_stop_leaves_no_process_and_no_directory(tmp_path: Path) -> None:
    require_binary("redis-server", "Debian: apt-get install redis-server")
    with RedisServerProcess() as temporary:
        pid = temporary.pid
        directory = Path(temporary.command("CONFIG", "GET", "dir")[1])  # type: ignore[index]
        assert directory.is_dir()
    assert not temporary.running
    assert gone(pid)
    assert not directory.exists()  # its own temporary directory is removed
    temporary.stop()  # idempotent
    with pytest.raises(RuntimeError, match="never started"):
        temporary.restart()
    # A directory it was given is kept, with the server's output in it.
    with RedisServerProcess(directory=tmp_path / "redis") as kept:
        pid = kept.pid
    assert gone(pid)
    assert (tmp_path / "redis" / "redis.log").is_file()


@pytest.mark.integration
def test_a_server_that_cannot_start_says_why_with_its_output(tmp_path: Path) -> None:
    require_binary("redis-server", "Debian: apt-get install redis-server")
    # The certificate files do not exist: redis-server refuses to start and says so.
    broken = RedisServerProcess(
        tls_cert_file=str(tmp_path / "missing.pem"),
        tls_key_file=str(tmp_path / "missing.key"),
        tls_ca_file=str(tmp_path / "missing-ca.pem"),
        startup_timeout=5.0,
    )
    with pytest.raises(RuntimeError, match=r"exited with status \d+ at start-up; its last output lines:\n"):
        broken.start()
    assert not broken.running


def test_no_redis_server_on_path_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(RuntimeError, match=r"redis-server not found on PATH: install it \(apt-get install"):
        RedisServerProcess()
