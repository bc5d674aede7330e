"""What every test app reads from its environment: the emulator's generic provider and its API.

``TOKENPOOL_TEST_TOKEN_URL``, ``_CLIENT_ID``, ``_CLIENT_SECRET``, ``_API_URL`` and
``_CA_FILE`` are set by the test that starts the app's worker processes.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx

from tokenpool import Secret
from tokenpool.providers import ClientCredentials, Provider


def providers() -> dict[str, Provider]:
    """The providers factory: read in each worker process."""
    return {
        "generic": ClientCredentials(
            token_url=httpx.URL(os.environ["TOKENPOOL_TEST_TOKEN_URL"]),
            client_id=os.environ["TOKENPOOL_TEST_CLIENT_ID"],
            client_secret=Secret(os.environ["TOKENPOOL_TEST_CLIENT_SECRET"]),
        )
    }


def client_options() -> dict[str, Any]:
    """Keyword arguments of the ``httpx`` client (sync or async) that calls the emulator's API."""
    return {
        "base_url": os.environ["TOKENPOOL_TEST_API_URL"],
        "verify": ssl.create_default_context(cafile=os.environ["TOKENPOOL_TEST_CA_FILE"]),
        "timeout": 10.0,
    }
