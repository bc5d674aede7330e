"""Your own tests against the emulator, with tokenpool's pytest plugin.

Run it as any test module::

    python -m pytest examples/pytest_emulator.py

The plugin gives a session-wide ``tokenpool_emulator`` (one child process for
the whole run; ``--tokenpool-lifetime-scale X`` sets its lifetimes) and an
``emulator`` fixture: the same process, reset before each test.  In a project,
put the ``pytest_plugins`` line in the top-level ``conftest.py``.
"""

from __future__ import annotations

import httpx
import pytest

from tokenpool import BlockingTokenPool, TokenEndpointError
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess

pytest_plugins = ["tokenpool.testing.pytest_plugin"]


def generic_provider(emulator: EmulatorProcess) -> ClientCredentials:
    client_id, client_secret = emulator.credentials("generic")
    return ClientCredentials(
        token_url=emulator.token_url("generic"), client_id=client_id, client_secret=client_secret
    )


def test_payout_call_carries_a_valid_token(emulator: EmulatorProcess) -> None:
    with (
        BlockingTokenPool({"acme": generic_provider(emulator)}, ca_file=emulator.ca_file) as pool,
        httpx.Client(
            base_url=emulator.url("generic"), auth=pool.auth("acme"), verify=emulator.ssl_context()
        ) as client,
    ):
        assert client.get("/api/resource").status_code == 200
    assert emulator.stats(events=False)["providers"]["generic"]["token_requests"] == 1


def test_an_outage_at_start_is_an_error_the_caller_sees(emulator: EmulatorProcess) -> None:
    emulator.fault("generic", status=503, count=5)
    with (
        BlockingTokenPool(
            {"acme": generic_provider(emulator)}, ca_file=emulator.ca_file, warm_up="lazy"
        ) as pool,
        pytest.raises(TokenEndpointError) as failure,
    ):
        pool.token("acme")
    assert failure.value.status_code == 503
