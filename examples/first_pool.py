"""A first pool: the loopback emulator, one provider, a token, an API call.

Needs the ``testing`` extra (``pip install 'tokenpool[testing]'``) and no
network: the emulator listens on 127.0.0.1 only and stops with the script::

    python examples/first_pool.py

Swap the ``ClientCredentials`` settings for your provider's (and drop
``ca_file``) to talk to a real token endpoint.
"""

from __future__ import annotations

import anyio
import httpx

from tokenpool import TokenPool
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorProcess


async def main() -> None:
    async with EmulatorProcess() as emulator:  # a child process; documented lifetimes
        client_id, client_secret = emulator.credentials("generic")
        provider = ClientCredentials(
            token_url=emulator.token_url("generic"),  # https://127.0.0.1:PORT/generic/oauth/token
            client_id=client_id,
            client_secret=client_secret,
        )
        # ca_file: the pool's own HTTP clients trust the emulator's test CA.
        async with TokenPool({"acme": provider}, ca_file=emulator.ca_file) as pool:
            token = await pool.token("acme")  # warm already: no request is sent here
            print(f"token: {token.token_type}, lifetime {token.expires_in:g} s")

            async with httpx.AsyncClient(
                base_url=emulator.url("generic"), auth=pool.auth("acme"), verify=emulator.ssl_context()
            ) as client:
                for _ in range(3):
                    response = await client.get("/api/resource")
                    print(f"GET /api/resource -> {response.status_code}")

            stats = pool.statistics().cells["acme"]
            print(
                f"token requests: {stats.token_requests}, served from the cell: {stats.hits}, "
                f"renewal in {stats.seconds_until_refresh:.0f} s"
            )


if __name__ == "__main__":
    anyio.run(main)
