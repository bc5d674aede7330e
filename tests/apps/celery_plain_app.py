"""A Celery app that configures no logging at all: Celery's own setup governs tokenpool's events.

The app of ``tests/integrations/test_celery_logging.py``'s default-setup test:
unlike ``celery_app.py`` it never calls ``structlog.configure`` and keeps
Celery's logging defaults (the root logger hijacked at ``--loglevel``, the
children's standard output redirected to a logger at ``WARNING``), so
tokenpool's events take their default road, the standard library's
``logging.getLogger("tokenpool")``.  Configuration comes from the environment
(see ``tests/_workers.py:app_env``).
"""

from __future__ import annotations

import os

import emulator_env
import fleet_options
import httpx
from celery import Celery

from tokenpool.contrib import celery as tokenpool_celery

BROKER_URL = os.environ["TOKENPOOL_TEST_REDIS_URL"]

app = Celery("celery_plain_app", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(broker_connection_retry_on_startup=True, result_expires=600)


def make_client(name: str, auth: httpx.Auth) -> httpx.Client:
    return httpx.Client(auth=auth, **emulator_env.client_options())


tokenpool_celery.install(
    app, emulator_env.providers, client_factory=make_client, ca_file=os.environ["TOKENPOOL_TEST_CA_FILE"]
)


@app.task(name="call_resource")  # type: ignore[untyped-decorator]  # celery ships no type hints
def call_resource() -> dict[str, object]:
    response = tokenpool_celery.client("generic").get("/api/resource")
    cell = tokenpool_celery.get_pool().statistics().cells["generic"]
    return {
        "pid": os.getpid(),
        "status": response.status_code,
        "token_requests": cell.token_requests,
        # Celery logs a task's return value at INFO: a digest, never the token.
        "token_sha256": fleet_options.digest(tokenpool_celery.token("generic")),
    }
