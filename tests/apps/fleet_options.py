"""The fleet tier in the test apps (tests/integrations/test_fleet_integrations.py), set from the environment.

- ``TOKENPOOL_TEST_STORE_URL``: the pool gets ``store=RedisStore(url)`` as a
  keyword argument, as in code.
- ``TOKENPOOL_TEST_CONFIG``: the integration builds the pool from this TOML
  file instead (``config=``: providers, ``[pool]``, ``[pool.store]``), as from
  a deployment's file.

Neither: no store, the apps as their own tests use them.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from tokenpool import Token

STORE_URL = "TOKENPOOL_TEST_STORE_URL"
CONFIG = "TOKENPOOL_TEST_CONFIG"
#: Every Redis round trip's deadline: generous, so that a loaded test machine
#: does not turn a slow round trip into a fallback (and a second token request).
OPERATION_TIMEOUT = 2.0


def config_file() -> str | None:
    """The TOML file to build the pool from, if the test gave one."""
    return os.environ.get(CONFIG)


def store_options() -> dict[str, Any]:
    """``{"store": RedisStore(...)}`` when the test asks for a store by URL, else ``{}``."""
    url = os.environ.get(STORE_URL)
    if url is None:
        return {}
    from tokenpool.fleet import RedisStore

    return {"store": RedisStore(url, operation_timeout=OPERATION_TIMEOUT)}


def digest(token: Token) -> str:
    """Which token a process used, without showing it."""
    return hashlib.sha256(token.access_token.encode()).hexdigest()
