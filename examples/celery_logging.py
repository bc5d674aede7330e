"""structlog under Celery: every event through the standard library, at its own level.

For an application that uses structlog itself.  Import this module from the
module that defines your Celery app (``import celery_logging``): when
``celery worker`` (or ``celery beat``) sets up logging, Celery's
``after_setup_logger`` signal runs :func:`route_structlog_through_celery`,
which

- configures structlog to hand every event, yours and tokenpool's, to the
  standard-library logger of its name (``tokenpool`` for tokenpool's), where
  Celery's ``--loglevel`` filters it and the record carries the event's own
  level: ``INFO/ForkPoolWorker-1`` for an info event, nothing for a debug one
  at ``--loglevel INFO``;
- puts a ``structlog.stdlib.ProcessorFormatter`` on Celery's handlers (standard
  error, or ``--logfile``), keeping Celery's line format, so an event reads
  ``[...: INFO/ForkPoolWorker-1] token.refresh.success [tokenpool] duration=0.0052
  expires_in=600.0 provider=acme ...`` and Celery's own lines look as they did.

The signal fires in the worker's main process before it forks the prefork
children, which inherit both; the solo and threads pools run in that process.

Run as a script, it sets Celery's logging up as ``celery worker --loglevel
INFO`` does (on standard output here) and runs ``celery_payouts.py``'s three
tasks eagerly against the loopback emulator::

    python examples/celery_logging.py

Needs the ``celery`` and ``testing`` extras.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from celery import signals

import tokenpool.logging


def route_structlog_through_celery(
    logger: logging.Logger, format: str, colorize: bool = False, **_: Any
) -> None:
    """``after_setup_logger`` receiver: Celery has just set up the root *logger*'s handlers."""
    formatter = structlog.stdlib.ProcessorFormatter(
        fmt=format,  # Celery's worker_log_format: "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
        # Records from the standard library (Celery's own, httpx's): tracebacks as text, then redacted.
        foreign_pre_chain=[structlog.processors.format_exc_info, tokenpool.logging.redact_secrets],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(
                colors=bool(colorize), pad_event_to=0, exception_formatter=structlog.dev.plain_traceback
            ),
        ],
    )
    for handler in logger.handlers:
        handler.setFormatter(formatter)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # the stdlib logger's level: Celery's --loglevel
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            # Tracebacks as plain text, without local variables (a frame that built a
            # token request holds the client secret), before the redactor sees them.
            structlog.processors.format_exc_info,
            tokenpool.logging.redact_secrets,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


signals.after_setup_logger.connect(route_structlog_through_celery, weak=False)


if __name__ == "__main__":
    import celery_payouts  # examples/celery_payouts.py: the app, its pool and its `pay` task

    # What `celery worker --loglevel INFO` does first (on standard error there): this sends
    # after_setup_logger, so the receiver above runs.
    celery_payouts.app.log.setup_logging_subsystem(loglevel="INFO", logfile=sys.stdout)
    celery_payouts.demo()
