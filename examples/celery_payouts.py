"""A Celery app whose tasks get tokens from a per-process pool.

In production the module is the worker's app (``celery -A celery_payouts worker``
run from ``examples/``, with Redis as the broker): every prefork child opens
its own pool, configured by ``acme_pool.toml`` beside it.  Run as a script,
it starts the loopback emulator, points the environment at it and runs three
tasks eagerly (``task_always_eager``: no broker, no worker), which opens the
pool on first use and closes it at exit::

    python examples/celery_payouts.py

Needs the ``celery`` and ``testing`` extras.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import httpx
from celery import Celery

from tokenpool.contrib import celery as tokenpool_celery

app = Celery("payouts", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))


CONFIG = Path(__file__).with_name("acme_pool.toml")  # read in each worker process


def api_client(name: str, auth: httpx.Auth) -> httpx.Client:
    """What ``tokenpool_celery.client(name)`` returns: built in the worker process, on first use."""
    ca_file = os.environ.get("ACME_CA_FILE")
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    return httpx.Client(auth=auth, base_url=os.environ["ACME_API_URL"], verify=verify)


tokenpool_celery.install(app, config=CONFIG, client_factory=api_client)


@app.task  # type: ignore[untyped-decorator]  # celery ships no type hints
def pay(payout_id: str) -> int:
    response = tokenpool_celery.client("acme").post("/api/resource", json={"id": payout_id})
    return response.status_code


def demo() -> None:
    from tokenpool.testing import EmulatorProcess

    with EmulatorProcess() as emulator:
        client_id, client_secret = emulator.credentials("generic")
        os.environ.update(
            ACME_TOKEN_URL=emulator.token_url("generic"),
            ACME_CLIENT_ID=client_id,
            ACME_CLIENT_SECRET=client_secret,
            ACME_API_URL=emulator.url("generic"),
            ACME_CA_FILE=emulator.ca_file,
        )
        app.conf.task_always_eager = True
        statuses = [pay.delay(f"p-{n}").get() for n in range(3)]
        print(f"task results: {statuses}")
        print(f"token requests: {tokenpool_celery.get_pool().statistics().token_requests}")


if __name__ == "__main__":
    demo()
