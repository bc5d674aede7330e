"""Run by tests/test_locust.py: greenlets keep calling the API while every token is revoked.

Monkey-patched first, as under the locust command, and using tokenpool.contrib.locust's
pool and requests auth: each greenlet's call must still come back 200, the
first 401s being replayed once with a new token.  Prints one JSON summary line.
"""

# ruff: noqa: E402  # the imports follow gevent's monkey-patching, as under the locust command

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json
import os
import sys

import applog
import gevent
import gevent.event
import httpx
import requests

from tokenpool import Secret
from tokenpool.contrib import locust as tokenpool_locust
from tokenpool.providers import ClientCredentials, Provider

GREENLETS = 20
CALLS = 15


def providers() -> dict[str, Provider]:
    return {
        "generic": ClientCredentials(
            token_url=httpx.URL(os.environ["TOKENPOOL_TEST_TOKEN_URL"]),
            client_id=os.environ["TOKENPOOL_TEST_CLIENT_ID"],
            client_secret=Secret(os.environ["TOKENPOOL_TEST_CLIENT_SECRET"]),
        )
    }


def user(statuses: list[int], revoke_at: gevent.event.Event) -> None:
    url = os.environ["TOKENPOOL_TEST_API_URL"] + "/api/resource"
    # Per request: a session-level verify loses to $REQUESTS_CA_BUNDLE when it is set.
    ca_file = os.environ["TOKENPOOL_TEST_CA_FILE"]
    with requests.Session() as session:
        for call in range(CALLS):
            if call == CALLS // 2:
                revoke_at.wait(timeout=30)
            with tokenpool_locust.in_flight():
                response = session.get(
                    url, auth=tokenpool_locust.requests_auth("generic"), verify=ca_file, timeout=10
                )
            statuses.append(response.status_code)
            gevent.sleep(0.01)


def main() -> int:
    applog.configure()
    tokenpool_locust.install(providers, max_in_flight=8, ca_file=os.environ["TOKENPOOL_TEST_CA_FILE"])
    pool = tokenpool_locust.get_pool()
    statuses: list[int] = []
    revoke_at = gevent.event.Event()
    users = [gevent.spawn(user, statuses, revoke_at) for _ in range(GREENLETS)]
    gevent.sleep(0.3)
    # Revoke every token the emulator issued; the pool still thinks its token is fresh.
    admin = httpx.post(f"{os.environ['TOKENPOOL_TEST_ADMIN_URL']}/revoke", json={"provider": "generic"})
    admin.raise_for_status()
    revoke_at.set()
    gevent.joinall(users, timeout=60, raise_error=True)
    stats = pool.statistics()
    tokenpool_locust.shutdown()
    summary = {"event": "summary", "statuses": statuses, "token_requests": stats.token_requests}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
