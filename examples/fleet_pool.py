"""Two pools, one token: the fleet tier on a throw-away Redis.

Each ``TokenPool`` stands for a worker process; with ``store=RedisStore(url)``
they share one token per client, so the provider sees one token request for
the pair (and one for a fleet of thousands).  Needs the ``redis`` and
``testing`` extras and a ``redis-server`` on ``PATH``::

    python examples/fleet_pool.py
"""

from __future__ import annotations

import anyio

from tokenpool import TokenPool
from tokenpool.fleet import RedisStore
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess, RedisServerProcess


async def main() -> None:
    with RedisServerProcess() as redis_server:  # blocking set-up: fine before the pools start
        async with EmulatorProcess() as emulator:
            client_id, client_secret = emulator.credentials("generic")

            def providers() -> dict[str, ClientCredentials]:
                return {
                    "acme": ClientCredentials(
                        token_url=emulator.token_url("generic"),
                        client_id=client_id,
                        client_secret=client_secret,
                    )
                }

            store = RedisStore(redis_server.url)  # redis://127.0.0.1:PORT/0
            async with (
                TokenPool(providers(), store=store, ca_file=emulator.ca_file, metrics=False) as first,
                TokenPool(providers(), store=store, ca_file=emulator.ca_file, metrics=False) as second,
            ):
                one, two = await first.token("acme"), await second.token("acme")
                print(f"both pools hold the same token: {one.access_token == two.access_token}")
            requests = emulator.stats(events=False)["providers"]["generic"]["token_requests"]
            print(f"token requests at the provider: {requests}")
            token_key = store.key_names(providers()["acme"])["token"]  # tokenpool:{digest}:token
            print(f"shared token in Redis: {redis_server.keys(token_key) == [token_key]}")


if __name__ == "__main__":
    anyio.run(main)
