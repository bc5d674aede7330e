"""Logging for the test apps: structlog events as JSON lines on stdout, each with its process id.

A worker application (not the library) configures structlog; the tests read
``pool.opened`` / ``pool.closed`` and refresh events back from these lines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog


def _add_pid(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("pid", os.getpid())
    return event


def configure() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            _add_pid,
            structlog.processors.JSONRenderer(),
        ],
        # One write per line (message and newline together), so lines from the
        # processes sharing this pipe do not interleave.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
