"""Tokens for synchronous code and threads: ``BlockingTokenPool``.

The pool runs on an event-loop thread of its own; any thread can ask it for
tokens or use its ``httpx.Auth`` with a plain ``httpx.Client``.  Needs the
``testing`` extra for the emulator it talks to::

    python examples/blocking_pool.py
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tokenpool import BlockingTokenPool
from tokenpool.providers import Zertiban
from tokenpool.testing import EmulatorProcess


def main() -> None:
    with EmulatorProcess() as emulator:
        info = emulator.client_info("zertiban")
        provider = Zertiban(
            base_url=emulator.url("zertiban"),  # instead of the sandbox's URL
            client_id=info["client_id"],
            client_secret=info["client_secret"],
            business_uuid=info["business_uuids"][0],  # sent as x-tenant-id on every API call
        )
        with (
            BlockingTokenPool({"zertiban": provider}, ca_file=emulator.ca_file) as pool,
            httpx.Client(
                base_url=emulator.url("zertiban"), auth=pool.auth("zertiban"), verify=emulator.ssl_context()
            ) as client,
        ):

            def pay(number: int) -> int:  # runs in a worker thread
                return client.post("/api/resource", json={"payout": number}).status_code

            with ThreadPoolExecutor(max_workers=8) as threads:
                statuses = list(threads.map(pay, range(40)))
            print(f"40 payouts from 8 threads: {statuses.count(200)} answered 200")
            print(f"token requests: {pool.statistics().token_requests}")


if __name__ == "__main__":
    main()
