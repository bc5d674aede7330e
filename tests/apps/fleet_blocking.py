"""Run by tests/integrations/test_fleet_integrations.py: one of a fleet of ``BlockingTokenPool`` scripts.

The pool gets ``store=`` from ``fleet_options`` (a keyword argument, as in
code); a few threads make resource calls through ``pool.auth()``, and the
process logs one ``summary`` JSON line: its pid, every call's status, how
many token fetches its pool made and which token it used (a digest).
"""

from __future__ import annotations

import os
import ssl
from concurrent.futures import ThreadPoolExecutor

import applog
import fleet_options
import httpx
import structlog

from tokenpool import BlockingTokenPool, Secret
from tokenpool.providers import ClientCredentials

THREADS = 4
CALLS_PER_THREAD = 10


def main() -> int:
    applog.configure()
    providers = {
        "generic": ClientCredentials(
            token_url=httpx.URL(os.environ["TOKENPOOL_TEST_TOKEN_URL"]),
            client_id=os.environ["TOKENPOOL_TEST_CLIENT_ID"],
            client_secret=Secret(os.environ["TOKENPOOL_TEST_CLIENT_SECRET"]),
        )
    }
    ca_file = os.environ["TOKENPOOL_TEST_CA_FILE"]
    with (
        BlockingTokenPool(providers, ca_file=ca_file, **fleet_options.store_options()) as pool,
        httpx.Client(
            auth=pool.auth("generic"),
            base_url=os.environ["TOKENPOOL_TEST_API_URL"],
            verify=ssl.create_default_context(cafile=ca_file),
            timeout=10.0,
        ) as client,
    ):

        def calls() -> list[int]:
            return [client.get("/api/resource").status_code for _ in range(CALLS_PER_THREAD)]

        with ThreadPoolExecutor(THREADS) as threads:
            statuses = [
                status for batch in threads.map(lambda _: calls(), range(THREADS)) for status in batch
            ]
        cell = pool.statistics().cells["generic"]
        token = pool.token("generic")
    structlog.get_logger("fleet_blocking").info(
        "summary",
        statuses=statuses,
        token_requests=cell.token_requests,
        token_sha256=fleet_options.digest(token),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
