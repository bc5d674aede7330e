"""tokenpool.contrib.locust in a real headless Locust run against the emulator.

50 users in 2 Locust worker processes (``--processes 2``, forked after the
locustfile is imported), 8 s of load with 3 s tokens: no request may fail,
the emulator must see no 401, and each process must send one token request
per refresh window however many users it runs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from _workers import (
    APPS,
    LIFETIME,
    Worker,
    app_env,
    closed_by_pid,
    ideal_token_requests,
    in_ci,
    python_module,
    resource_401s,
)

from tokenpool.testing import EmulatorProcess

# Not imported here: importing locust monkey-patches this process with gevent.
if importlib.util.find_spec("locust") is None:
    if in_ci():
        pytest.fail("locust is not installed; CI must run the real-worker tests", pytrace=False)
    pytest.skip("locust is not installed (pip install 'tokenpool[locust]')", allow_module_level=True)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = 50
PROCESSES = 2


def test_headless_locust_shares_one_pool_per_process(emulator: EmulatorProcess, tmp_path: Path) -> None:
    emulator.set_lifetime("generic", expires_in=LIFETIME)
    report = tmp_path / "locust-stats"
    argv = python_module(
        "locust",
        "-f",
        str(APPS / "locust_app.py"),
        "--headless",
        "--users",
        str(USERS),
        "--spawn-rate",
        str(USERS),
        "--run-time",
        "8s",
        "--host",
        emulator.url("generic"),
        "--processes",
        str(PROCESSES),
        "--json-file",
        str(report),
        "--loglevel",
        "WARNING",
    )
    with Worker(argv, env=app_env(emulator)) as run:
        code = run.wait(timeout=90)
    assert code == 0, run.output.tail()

    stats = emulator.stats(events=False)["providers"]["generic"]
    (endpoint,) = json.loads(report.with_suffix(".json").read_text())
    opened = {int(event["pid"]) for event in run.output.events("pool.opened")}
    closed = closed_by_pid(run.output)
    per_process = {pid: int(event["token_requests"]) for pid, event in closed.items()}
    ideal = ideal_token_requests(run.lifetime)
    print(
        f"\nlocust: requests={endpoint['num_requests']} failures={endpoint['num_failures']} "
        f"401s={resource_401s(emulator.stats(events=False))} "
        f"token requests per process={per_process} (ideal ≤ {ideal} over {run.lifetime:.1f} s)"
    )

    # Two worker processes, each with its own pool; the master (run.pid) has none.
    assert len(opened) == PROCESSES
    assert run.pid not in opened
    assert set(closed) == opened
    assert run.output.problems() == []
    # Every request succeeded first time.
    assert endpoint["num_requests"] > 0
    assert endpoint["num_failures"] == 0
    assert resource_401s(emulator.stats(events=False)) == 0
    # (A user stopped at the end may have been killed after the server answered.)
    assert stats["resource_calls"] == stats["resource_ok"] >= endpoint["num_requests"]
    # One token request per refresh window per process, not per user.
    assert sum(per_process.values()) == stats["token_requests"]
    for pid, count in per_process.items():
        assert 2 <= count <= ideal + 2, f"process {pid} sent {count} token requests (ideal {ideal})"


def test_requests_auth_replays_once_after_tokens_are_revoked(emulator: EmulatorProcess) -> None:
    # Greenlets in a gevent-patched process (as under Locust) call through
    # requests_auth while the emulator revokes every token: each 401 is
    # replayed once with a new token, and the concurrent 401s cost one refresh.
    env = app_env(emulator, TOKENPOOL_TEST_ADMIN_URL=emulator.admin_url)
    with Worker(python_module("gevent_revocation"), env=env) as run:
        assert run.wait(timeout=90) == 0, run.output.tail()

    (summary,) = run.output.events("summary")
    stats = emulator.stats(events=False)["providers"]["generic"]
    print(
        f"\nrevocation: calls={len(summary['statuses'])} "
        f"401s answered={resource_401s(emulator.stats(events=False))} "
        f"token requests={summary['token_requests']}"
    )
    assert run.output.problems() == []
    assert summary["statuses"] == [200] * 300
    assert resource_401s(emulator.stats(events=False)) >= 1  # the revocation did bite…
    assert stats["token_requests"] == summary["token_requests"] == 2  # …and cost one refresh
    assert len(run.output.events("token.invalidated")) == 1
    unauthorized = run.output.events("token.downstream_unauthorized")
    assert unauthorized
    assert all(event["retried"] for event in unauthorized)


def test_requests_auth_replays_bodies_within_the_bound_and_returns_a_second_401(
    emulator: EmulatorProcess,
) -> None:
    # The requests driver and httpx.Client through the gevent pool run the
    # same 401 flow as pool.auth(): a generator body is replayed byte for
    # byte, one over the replay bound gets its 401 back, a second 401 is the answer.
    env = app_env(emulator, TOKENPOOL_TEST_ADMIN_URL=emulator.admin_url)
    with Worker(python_module("gevent_revocation", "bodies"), env=env) as run:
        assert run.wait(timeout=90) == 0, run.output.tail()

    (summary,) = run.output.events("summary")
    assert run.output.problems() == []
    assert summary["small"] == {
        "status": 200,
        "history": [401],
        "body_bytes": 256 * 1024,
        "wire_matches": True,
    }
    assert summary["large"] == {"status": 401, "history": [], "wire_matches": True}
    assert summary["after_large"] == {"status": 200, "history": 0}
    assert summary["second_401"] == {"status": 401, "history": [401]}
    assert summary["httpx_small"] == {"status": 200, "history": [401], "body_bytes": 256 * 1024}
    (skipped,) = run.output.events("token.replay_skipped")
    assert (skipped["provider"], skipped["reason"]) == ("generic", "body_too_large")
    # Revocations: small, large, httpx; the navro 401 causes one more refresh.
    stats = emulator.stats(events=False)["providers"]
    assert stats["generic"]["token_requests"] == summary["token_requests"] == 5
    assert sum(stats["navro"]["resource_401"].values()) == 2
    replays = [event["retried"] for event in run.output.events("token.downstream_unauthorized")]
    # small (replayed), large (not), second_401 (replayed, then the second 401), httpx_small (replayed).
    assert replays == [True, False, True, False, True]
