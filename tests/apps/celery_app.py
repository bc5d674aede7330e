"""The Celery app of tests/integrations/test_celery.py: tasks call the emulator's resource API.

Configuration comes from the environment (see ``tests/_workers.py:app_env``);
the providers factory reads the secret in each worker process.
"""

from __future__ import annotations

import os
from typing import Any

import applog
import emulator_env
import fleet_options
import httpx
from celery import Celery, signals

from tokenpool.contrib import celery as tokenpool_celery

applog.configure()

BROKER_URL = os.environ["TOKENPOOL_TEST_REDIS_URL"]

app = Celery("celery_app", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(
    # Keep the children's stdout (our JSON log lines) a plain pipe.
    worker_redirect_stdouts=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


def make_client(name: str, auth: httpx.Auth) -> httpx.Client:
    return httpx.Client(auth=auth, **emulator_env.client_options())


config = fleet_options.config_file()
if config is not None:  # providers, [pool] and [pool.store] from a TOML file
    tokenpool_celery.install(app, config=config, client_factory=make_client)
else:
    tokenpool_celery.install(
        app,
        emulator_env.providers,
        client_factory=make_client,
        ca_file=os.environ["TOKENPOOL_TEST_CA_FILE"],
        **fleet_options.store_options(),
    )


def _wake_threads_pool_consumer(sender: Any = None, **_: Any) -> None:
    """Work around celery/celery#6941, unrelated to tokenpool.

    With ``--pool threads`` the consumer's event loop only notices that a
    thread finished (and it may fetch more messages) at its next network event,
    which can be seconds away; a periodic no-op timer bounds that delay.
    """
    if type(getattr(sender, "pool", None)).__module__ == "celery.concurrency.thread":
        sender.timer.call_repeatedly(0.1, _noop)


def _noop() -> None:
    pass


signals.worker_ready.connect(_wake_threads_pool_consumer, weak=False)


@app.task(name="call_resource")  # type: ignore[untyped-decorator]  # celery ships no type hints
def call_resource() -> dict[str, object]:
    response = tokenpool_celery.client("generic").get("/api/resource")
    cell = tokenpool_celery.get_pool().statistics().cells["generic"]
    return {
        "pid": os.getpid(),
        "status": response.status_code,
        "token_requests": cell.token_requests,
        "token_sha256": fleet_options.digest(tokenpool_celery.token("generic")),
    }
