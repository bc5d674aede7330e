"""pytest fixtures for the loopback emulator.

Enable with ``pytest_plugins = ["tokenpool.testing.pytest_plugin"]`` in a
top-level ``conftest.py``.  Fixtures:

* ``tokenpool_emulator`` (session): one started :class:`~tokenpool.testing.EmulatorProcess`;
  its lifetime scale comes from ``--tokenpool-lifetime-scale`` (default 1.0).
* ``emulator`` (function): the same process, ``reset()`` before each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._process import EmulatorProcess

__all__ = ["emulator", "tokenpool_emulator"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tokenpool", "tokenpool emulator")
    group.addoption(
        "--tokenpool-lifetime-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="lifetime scale of the session's tokenpool emulator (default 1.0: documented lifetimes)",
    )


@pytest.fixture(scope="session")
def tokenpool_emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorProcess]:
    """The emulator child process, started once per test session."""
    scale = float(request.config.getoption("--tokenpool-lifetime-scale"))
    with EmulatorProcess(lifetime_scale=scale) as process:
        yield process


@pytest.fixture
def emulator(tokenpool_emulator: EmulatorProcess) -> EmulatorProcess:
    """The session's emulator, reset (tokens, faults, counters, secrets, lifetimes) for this test."""
    tokenpool_emulator.reset()
    return tokenpool_emulator
