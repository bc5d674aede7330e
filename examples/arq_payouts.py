"""An arq worker whose jobs call a provider's API through the pool.

In production arq runs the hooks (``arq arq_payouts.WorkerSettings`` from
``examples/``, with Redis): ``on_startup`` opens the pool and one
``httpx.AsyncClient`` per provider into ``ctx``, ``on_shutdown`` closes them.
Run as a script, it starts the loopback emulator and calls the hooks and a job
itself, as a worker would, without Redis::

    python examples/arq_payouts.py

Needs the ``arq`` and ``testing`` extras.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, ClassVar

import anyio
import httpx

from tokenpool.contrib.arq import PoolHooks, client

CONFIG = Path(__file__).with_name("acme_pool.toml")  # read by on_startup, in the worker


def api_client(name: str, auth: httpx.Auth) -> httpx.AsyncClient:
    ca_file = os.environ.get("ACME_CA_FILE")
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    return httpx.AsyncClient(auth=auth, base_url=os.environ["ACME_API_URL"], verify=verify)


tokenpool_hooks = PoolHooks(config=CONFIG, client_factory=api_client)


async def pay(ctx: dict[str, Any], payout_id: str) -> int:
    response = await client(ctx, "acme").post("/api/resource", json={"id": payout_id})
    return response.status_code


class WorkerSettings:
    functions: ClassVar[list[Any]] = [pay]
    on_startup = tokenpool_hooks.on_startup
    on_shutdown = tokenpool_hooks.on_shutdown


async def demo() -> None:
    from tokenpool.testing import EmulatorProcess

    async with EmulatorProcess() as emulator:
        client_id, client_secret = emulator.credentials("generic")
        os.environ.update(
            ACME_TOKEN_URL=emulator.token_url("generic"),
            ACME_CLIENT_ID=client_id,
            ACME_CLIENT_SECRET=client_secret,
            ACME_API_URL=emulator.url("generic"),
            ACME_CA_FILE=emulator.ca_file,
        )
        ctx: dict[str, Any] = {}
        await tokenpool_hooks.on_startup(ctx)
        try:
            statuses = [await pay(ctx, f"p-{n}") for n in range(3)]
            print(f"job results: {statuses}")
            print(f"token requests: {ctx['tokenpool'].statistics().token_requests}")
        finally:
            await tokenpool_hooks.on_shutdown(ctx)


if __name__ == "__main__":
    anyio.run(demo)
