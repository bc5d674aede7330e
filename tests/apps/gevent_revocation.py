"""Run by tests/integrations/test_locust.py: greenlets keep calling the API while every token is revoked.

Monkey-patched first, as under the locust command, and using tokenpool.contrib.locust's
pool and requests auth: each greenlet's call must still come back 200, the
first 401s being replayed once with a new token.  Prints one JSON summary line.

With the argument ``bodies`` it checks the same flow with request bodies
instead: a generator body is replayed byte for byte after a 401 (requests and
``httpx.Client`` through the gevent pool), one over the replay bound is not,
and a second 401 is returned.
"""

# ruff: noqa: E402  # the imports follow gevent's monkey-patching, as under the locust command

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import hashlib
import json
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import applog
import gevent
import gevent.event
import httpx
import requests

from tokenpool import RefreshPolicy, Secret
from tokenpool._replay import MAX_REPLAY_BODY_BYTES
from tokenpool.contrib import locust as tokenpool_locust
from tokenpool.providers import ClientCredentials, Provider

GREENLETS = 20
CALLS = 15


def providers(refresh: RefreshPolicy | None = None) -> dict[str, Provider]:
    return {
        "generic": ClientCredentials(
            token_url=httpx.URL(os.environ["TOKENPOOL_TEST_TOKEN_URL"]),
            client_id=os.environ["TOKENPOOL_TEST_CLIENT_ID"],
            client_secret=Secret(os.environ["TOKENPOOL_TEST_CLIENT_SECRET"]),
            refresh=refresh or RefreshPolicy(),
        )
    }


class Halfway:
    """Every user's first half of calls is done: a count, and an event set when it reaches GREENLETS."""

    def __init__(self) -> None:
        self.count = 0
        self.everyone = gevent.event.Event()

    def arrive(self) -> None:
        self.count += 1
        if self.count == GREENLETS:
            self.everyone.set()


def user(statuses: list[int], halfway: Halfway, revoke_at: gevent.event.Event) -> None:
    url = os.environ["TOKENPOOL_TEST_API_URL"] + "/api/resource"
    # Per request: a session-level verify loses to $REQUESTS_CA_BUNDLE when it is set.
    ca_file = os.environ["TOKENPOOL_TEST_CA_FILE"]
    with requests.Session() as session:
        for call in range(CALLS):
            if call == CALLS // 2:
                halfway.arrive()
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
    halfway, revoke_at = Halfway(), gevent.event.Event()
    users = [gevent.spawn(user, statuses, halfway, revoke_at) for _ in range(GREENLETS)]
    # Once every user is halfway through its calls (bounded, so a stuck user fails the run),
    # revoke every token the emulator issued; the pool still thinks its token is fresh.
    if not halfway.everyone.wait(timeout=60):
        raise RuntimeError(f"only {halfway.count} of {GREENLETS} users got halfway")
    admin = httpx.post(f"{os.environ['TOKENPOOL_TEST_ADMIN_URL']}/revoke", json={"provider": "generic"})
    admin.raise_for_status()
    revoke_at.set()
    gevent.joinall(users, timeout=60, raise_error=True)
    stats = pool.statistics()
    tokenpool_locust.shutdown()
    summary = {"event": "summary", "statuses": statuses, "token_requests": stats.token_requests}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def revoke() -> None:
    """Revoke every token the emulator issued; the pool still thinks its token is fresh."""
    admin = httpx.post(f"{os.environ['TOKENPOOL_TEST_ADMIN_URL']}/revoke", json={"provider": "generic"})
    admin.raise_for_status()


class RecordingAdapter(requests.adapters.HTTPAdapter):
    """Records each request body as it goes on the wire, without touching the auth's own request."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []  # sha256 of each body that was sent in full

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        wire = request.copy()
        body = request.body
        if isinstance(body, bytes | str) or body is None:
            data = body.encode() if isinstance(body, str) else (body or b"")
            self.sent.append(hashlib.sha256(data).hexdigest())
        else:
            wire.body = self._tee(body)
        return super().send(wire, *args, **kwargs)

    def _tee(self, body: Any) -> Iterator[bytes]:
        digest = hashlib.sha256()
        for chunk in body:
            digest.update(chunk)
            yield chunk
        self.sent.append(digest.hexdigest())


def generator(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def bodies() -> int:
    applog.configure()
    ca_file = os.environ["TOKENPOOL_TEST_CA_FILE"]
    api = os.environ["TOKENPOOL_TEST_API_URL"]
    url = api + "/api/resource"
    # The scenarios revoke tokens seconds apart; without a cooldown every
    # revocation is met with a refresh, however young the revoked token.
    no_cooldown = RefreshPolicy(unauthorized_cooldown=0)
    tokenpool_locust.install(lambda: providers(no_cooldown), ca_file=ca_file)
    pool = tokenpool_locust.get_pool()
    auth = tokenpool_locust.requests_auth("generic")
    rng = random.Random(7)
    small = rng.randbytes(256 * 1024)
    large = rng.randbytes(MAX_REPLAY_BODY_BYTES + 1)
    summary: dict[str, Any] = {"event": "summary"}
    with requests.Session() as session:
        wire = RecordingAdapter()
        session.mount("https://", wire)

        revoke()
        response = session.post(url, data=generator(small), auth=auth, verify=ca_file, timeout=30)
        summary["small"] = {
            "status": response.status_code,
            "history": [r.status_code for r in response.history],
            "body_bytes": response.json().get("body_bytes"),
            "wire_matches": wire.sent == [sha(small), sha(small)],
        }

        wire.sent.clear()
        revoke()
        response = session.post(url, data=generator(large), auth=auth, verify=ca_file, timeout=30)
        summary["large"] = {
            "status": response.status_code,
            "history": [r.status_code for r in response.history],
            "wire_matches": wire.sent == [sha(large)],
        }
        # The refused token was invalidated all the same: the next call succeeds first time.
        response = session.post(url, data=b"after", auth=auth, verify=ca_file, timeout=30)
        summary["after_large"] = {"status": response.status_code, "history": len(response.history)}

        # A generic token is unknown to Navro's API: the replay gets a 401 too, and that is the answer.
        navro = api.rsplit("/", 1)[0] + "/navro/api/resource"
        response = session.get(navro, auth=auth, verify=ca_file, timeout=30)
        summary["second_401"] = {
            "status": response.status_code,
            "history": [r.status_code for r in response.history],
        }

    # httpx.Client through the gevent pool: the same flow, the same recording.
    revoke()
    with httpx.Client(auth=tokenpool_locust.auth("generic"), verify=ca_file, timeout=30) as client:
        answer = client.post(url, content=generator(small))
    summary["httpx_small"] = {
        "status": answer.status_code,
        "history": [r.status_code for r in answer.history],
        "body_bytes": answer.json().get("body_bytes"),
    }
    summary["token_requests"] = pool.statistics().token_requests
    tokenpool_locust.shutdown()
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(bodies() if sys.argv[1:] == ["bodies"] else main())
