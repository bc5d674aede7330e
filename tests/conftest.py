"""Shared fixtures: both anyio backends, captured logs, the loopback emulator."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog

pytest_plugins = ["tokenpool.testing.pytest_plugin"]


_NO_TRIO = importlib.util.find_spec("trio") is None


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("asyncio", id="asyncio"),
        # Skipped only where the trio extra is not installed (the no-extras session).
        pytest.param(
            "trio", id="trio", marks=pytest.mark.skipif(_NO_TRIO, reason="the trio extra is not installed")
        ),
    ],
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio (anyio's own pytest plugin)."""
    return str(request.param)


@pytest.fixture
def log_events() -> Iterator[list[MutableMapping[str, Any]]]:
    """The structlog events emitted during a test, as dicts."""
    with structlog.testing.capture_logs() as events:
        yield events
