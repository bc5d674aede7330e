"""``celery_plain_app`` plus the structlog recipe of ``examples/celery_logging.py``, and a task that logs.

The app of ``tests/integrations/test_celery_logging.py``'s recipe test.  The
recipe module is imported exactly as the docs tell an application to (the
test puts ``examples/`` on the worker's ``PYTHONPATH``); ``log_payout`` logs
with structlog the way an application's task would: a debug event, an info
event with a credential in a field, and an exception whose message carries
the token.
"""

from __future__ import annotations

import os

import celery_logging  # noqa: F401  # connects the recipe's after_setup_logger receiver
import fleet_options
import structlog
from celery_plain_app import app, call_resource

from tokenpool.contrib import celery as tokenpool_celery

__all__ = ["app", "call_resource", "log_payout"]

log = structlog.get_logger("payouts")


@app.task(name="log_payout")  # type: ignore[untyped-decorator]  # celery ships no type hints
def log_payout() -> dict[str, object]:
    token = tokenpool_celery.token("generic")
    log.debug("payout.detail", step="built the request")
    credential = f"Bearer {token.access_token}"
    log.info("payout.sent", amount=125, authorization=credential)
    try:
        raise RuntimeError(f"the provider refused {credential}")  # the traceback shows this line
    except RuntimeError:
        log.exception("payout.failed", amount=125)
    return {"pid": os.getpid(), "token_sha256": fleet_options.digest(token)}
