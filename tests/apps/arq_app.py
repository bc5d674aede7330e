"""The arq worker of tests/integrations/test_arq.py: jobs call the emulator's resource API via tokenpool."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import applog
import emulator_env
import fleet_options
import httpx
from arq.connections import RedisSettings

from tokenpool.contrib.arq import PoolHooks, client, get_pool

applog.configure()


def make_client(name: str, auth: httpx.Auth) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=auth, **emulator_env.client_options())


config = fleet_options.config_file()
if config is not None:  # providers, [pool] and [pool.store] from a TOML file
    hooks = PoolHooks(config=config, client_factory=make_client)
else:
    hooks = PoolHooks(
        emulator_env.providers,
        client_factory=make_client,
        ca_file=os.environ["TOKENPOOL_TEST_CA_FILE"],
        **fleet_options.store_options(),
    )


async def call_resource(ctx: dict[str, Any]) -> dict[str, object]:
    response = await client(ctx, "generic").get("/api/resource")
    pool = get_pool(ctx)
    cell = pool.statistics().cells["generic"]
    return {
        "pid": os.getpid(),
        "status": response.status_code,
        "token_requests": cell.token_requests,
        "token_sha256": fleet_options.digest(await pool.token("generic")),
    }


class WorkerSettings:
    functions: ClassVar[list[Any]] = [call_resource]
    on_startup = hooks.on_startup
    on_shutdown = hooks.on_shutdown
    redis_settings = RedisSettings.from_dsn(os.environ["TOKENPOOL_TEST_REDIS_URL"])
    queue_name = os.environ.get("TOKENPOOL_TEST_QUEUE", "arq:queue")
    max_jobs = 20
    poll_delay = 0.05
    keep_result = 600
