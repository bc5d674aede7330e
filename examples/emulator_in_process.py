"""The emulator without a child process: ``EmulatorApp`` behind ``httpx.ASGITransport``.

No sockets and no certificates: the pool's token requests and the API calls
go straight into the ASGI application.  Faults are method calls on the app::

    python examples/emulator_in_process.py
"""

from __future__ import annotations

import anyio
import httpx

from tokenpool import TokenEndpointError, TokenPool
from tokenpool.providers import ClientCredentials
from tokenpool.testing import EmulatorApp, EmulatorSettings


async def main() -> None:
    app = EmulatorApp(EmulatorSettings(lifetime_scale=0.1))  # 600 s tokens → 60 s
    credentials = app.credentials("generic")
    transport = httpx.ASGITransport(app=app)
    # Plain http is accepted for loopback hosts only; 127.0.0.1 never leaves the process here.
    base = "http://127.0.0.1/generic"
    provider = ClientCredentials(
        token_url=f"{base}/oauth/token",
        client_id=credentials["client_id"],
        client_secret=credentials["client_secret"],
    )
    async with (
        httpx.AsyncClient(transport=transport) as token_client,
        TokenPool({"acme": provider}, client=token_client) as pool,
        httpx.AsyncClient(transport=transport, base_url=base, auth=pool.auth("acme")) as api,
    ):
        print(f"GET /api/resource -> {(await api.get('/api/resource')).status_code}")

        app.add_fault("generic", status=503, retry_after=7, count=1)
        try:
            await pool.refresh("acme")  # a renewal outside the schedule meets the fault
        except TokenEndpointError as exc:
            print(f"refresh failed: HTTP {exc.status_code}, Retry-After {exc.retry_after:g} s")
        # The pool kept the token it had; the API call still succeeds.
        print(f"GET /api/resource -> {(await api.get('/api/resource')).status_code}")

        counters = app.stats(events=False)["providers"]["generic"]
        print(f"emulator: {counters['token_requests']} token requests, {counters['resource_ok']} calls OK")


if __name__ == "__main__":
    anyio.run(main)
