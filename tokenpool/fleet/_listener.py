"""The client's publication channel while a fetch waits for another process's lease.

Subscribed lazily (most fetches never wait), on its own connection, and only
as a way to wake sooner: any failure to subscribe or listen is logged at debug
level and the wait goes on polling every ``poll_interval``.  The subscription
ends with the fetch, bounded and shielded.
"""

from __future__ import annotations

from typing import Any

import anyio

__all__ = ["Listener"]


class Listener:
    """``async with Listener(...)`` around one fetch's wait; see the module docstring.

    Args:
        client: The source's redis-py client (``None`` once the source closed).
        channel: The client's publication channel.
        timeout: The store's ``operation_timeout``: bounds subscribing and closing.
        log: The source's logger.
    """

    __slots__ = ("_channel", "_client", "_log", "_pubsub", "_timeout", "_tried")

    def __init__(self, client: Any, channel: str, *, timeout: float, log: Any) -> None:
        self._client = client
        self._channel = channel
        self._timeout = timeout
        self._log = log
        self._pubsub: Any = None
        self._tried = False

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await self._close(pubsub, "fleet.store.unsubscribe_failed")

    async def subscribe(self) -> bool:
        """Subscribe if not tried yet; whether this call did (the caller then reads again)."""
        if self._tried or self._client is None:
            return False
        self._tried = True
        pubsub = self._client.pubsub()
        try:
            with anyio.fail_after(self._timeout):
                await pubsub.subscribe(self._channel)
        except Exception as exc:
            self._log.debug("fleet.store.subscribe_failed", error=type(exc).__name__)
            await self._close(pubsub, "fleet.store.unsubscribe_failed")
            return False
        self._pubsub = pubsub
        return True

    async def wait(self, timeout: float) -> None:
        """Until a publication on the channel arrives, or *timeout* seconds."""
        pubsub = self._pubsub
        if pubsub is None:
            await anyio.sleep(timeout)
            return
        with anyio.move_on_after(timeout):
            try:
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                    if message is not None and message.get("type") == "message":
                        return
            except Exception as exc:
                # The subscription broke: poll for the rest of this wait and the next ones.
                self._log.debug("fleet.store.listen_failed", error=type(exc).__name__)
                self._pubsub = None
                await self._close(pubsub, "fleet.store.unsubscribe_failed")
                await anyio.sleep(timeout)

    async def _close(self, pubsub: Any, event: str) -> None:
        with anyio.move_on_after(self._timeout, shield=True):
            try:
                await pubsub.aclose()
            except Exception as exc:
                self._log.debug(event, error=type(exc).__name__)
