"""httpx transports shared by the tests."""

from __future__ import annotations

import anyio
import httpx


class BoundedTransport(httpx.AsyncBaseTransport):
    """At most *limit* requests handed to httpcore at once, FIFO.

    httpcore's pool rescans every queued request on every event, so an unbounded
    queue there makes the client, not the system under test, the bottleneck.

    It sits below the auth flow, so every queued request already carries its
    token: the tests measure the pool, not httpcore's queue.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._slots = anyio.Semaphore(limit)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with self._slots:
            response = await self._inner.handle_async_request(request)
            await response.aread()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
