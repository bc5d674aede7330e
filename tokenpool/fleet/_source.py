"""``FleetTokenSource``: one token per client for the whole fleet, with the HTTP source behind it.

A cell that needs a token calls :meth:`FleetTokenSource.fetch`.  In order:

1. After a 401 (``rejected``), *fence*: delete the shared token if it is still
   the one that was refused (compared by digest in a Lua script), so that a
   thousand workers seeing the same revoked token cause one token request.
2. *Read* the shared token with the Redis server's ``TIME`` in one script.  A
   token that is newer than the cell's ``previous`` one and has life left is
   *adopted*: its send time is converted from the server's clock to the
   pool's (``sent_at = now − (redis_now − issued_at)``) and returned as
   ``TokenResponse.sent_at``, so the cell schedules it from when it was
   really fetched and the fleet renews it once, at ~80 % of its life.
3. Otherwise take the *lease* (``SET NX PX``, only if the token is still the
   one just read), fetch through the HTTP source, and *publish* (write with
   ``issued_at`` on the server's clock, bump the generation, ``PUBLISH``, and
   release the lease by compare-and-delete) in one script.
4. If another process holds the lease, *wait*: subscribe to the client's
   channel, read again, then read whenever a publication arrives (or every
   ``poll_interval`` at the latest) until its token appears, or its lease
   expires (it died mid-refresh: take the lease over), or the wait exceeds
   the provider's ``request_timeout`` + ``lease_ttl`` (fetch per process).
   The lease's value names its holder: ``<pid>-<random>``.

**Redis is never a new way to fail.**  Every Redis round trip is bounded by
``operation_timeout``; any Redis error, timeout or undecodable value is a
*store fault*, and what follows depends on whether the renewal can wait:

- A caller is waiting, or the token was refused (a cold start, a 401,
  ``TokenPool.refresh``): the fetch goes to the HTTP source at once, one
  operation deadline late at most (a ``fallback``).
- A scheduled renewal nobody waits for (the cell says ``may_defer``): the
  source raises :class:`~tokenpool.RenewalDeferred` and the cell keeps
  serving that token and asks again after at most ``retry_after_failure``
  seconds; once half of the renewal window (``refresh_at`` to
  ``usable_until``) is gone it fetches per process.  A brief Redis fault
  therefore costs no token request, and against a provider that revokes a
  client's earlier tokens when it issues one, a per-process token does not
  revoke the fleet's.

Every fetch tries Redis again (there is no window during which it is skipped:
a refused connection fails at once, a stalled one costs one deadline), so the
fleet returns to the shared token with the first fetch after Redis is back.
A store fault never reaches the caller; a provider's error (from the HTTP
source) does, unchanged.

Times: token times are on the pool's clock; the lease and the poll are real
time, like Redis's own expiries.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .._metrics import STORE_OUTCOMES
from .._schedule import last_chance
from .._source import RenewalDeferred
from .._token import TokenResponse
from ..logging import library_logger
from ._codec import (
    Cipher,
    Garbage,
    Keys,
    SharedToken,
    decode_value,
    encode_value_prefix,
    keys_for,
    token_digest,
)
from ._connection import probe, require_asyncio
from ._link import Deadlines, Snapshot, StoreFault, StoreLink
from ._listener import Listener

if TYPE_CHECKING:
    from .._clock import Clock
    from .._source import TokenSource
    from .._token import Token
    from ..providers import Provider

__all__ = ["STORE_OUTCOMES", "FleetTokenSource", "StoreSettings"]

#: Beyond the provider's safety margin, the least life (as a fraction of the lifetime, at most
#: one second) a shared token must have left to be adopted rather than replaced.
_ADOPT_SLACK_RATIO = 0.05
_ADOPT_SLACK_MAX = 1.0


class StoreSettings(Deadlines, Protocol):
    """What a :class:`FleetTokenSource` reads of its store (a :class:`~tokenpool.fleet.RedisStore`)."""

    @property
    def url(self) -> str: ...

    @property
    def encrypted(self) -> bool: ...

    @property
    def poll_interval(self) -> float: ...

    @property
    def retry_after_failure(self) -> float: ...

    @property
    def key_prefix(self) -> str: ...

    def cipher(self) -> Cipher | None: ...

    async def connect(self) -> Any: ...


class FleetTokenSource:
    """A :class:`~tokenpool.TokenSource` that shares tokens through Redis (see the module docstring).

    Made by :meth:`RedisStore.source`; the pool opens, uses and closes it.

    Args:
        store: The settings.
        fallback: The HTTP source: the lease holder's fetches, and every
            fetch while the store is faulty.
        clock: The pool's clock.
        log: A structlog-style logger (``None``: :func:`tokenpool.logging.library_logger`).
        on_event: ``on_event(outcome, provider_name)`` for metrics, with an
            outcome from :data:`STORE_OUTCOMES`.
    """

    def __init__(
        self,
        store: StoreSettings,
        fallback: TokenSource,
        *,
        clock: Clock,
        log: Any,
        on_event: Callable[[str, str], None],
    ) -> None:
        self._store = store
        self._fallback = fallback
        self._clock = clock
        self._log = log if log is not None else library_logger()
        self._on_event = on_event
        self._cipher = store.cipher()
        self._link = StoreLink(store, clock=clock, log=self._log, on_event=on_event)

    def __repr__(self) -> str:
        state = "closed" if self._link.client is None else ("fallback" if self.in_fallback else "shared")
        return f"<FleetTokenSource {state} store={self._store!r}>"

    @property
    def store(self) -> StoreSettings:
        return self._store

    @property
    def in_fallback(self) -> bool:
        """Whether the last Redis round trip failed (fetches fall back or defer until one succeeds)."""
        return self._link.faulted

    # -- TokenSource ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the Redis client (no connection yet) and open the HTTP source.

        Raises:
            ConfigurationError: not on asyncio, or the CA bundle cannot be loaded.
        """
        require_asyncio()
        client = await self._store.connect()
        try:
            await self._fallback.open()
        except BaseException:
            await self._link.close_client(client)
            raise
        self._link.attach(client)
        await self._link.warm()

    async def prepare(self, provider: Provider) -> None:
        await self._fallback.prepare(provider)

    async def fetch(
        self,
        name: str,
        provider: Provider,
        *,
        previous: Token | None,
        rejected: bool,
        may_defer: bool = False,
    ) -> TokenResponse:
        if self._link.client is not None:
            try:
                return await self._shared_fetch(name, provider, previous, rejected)
            except StoreFault as fault:
                self._link.fault(name, fault.error)
                retry_in = self._deferral(previous) if may_defer and previous is not None else None
                if retry_in is not None:
                    self._emit("deferred", name)
                    raise RenewalDeferred(retry_in, "store_unavailable") from None
                self._emit("fallback", name)
        return await self._fallback.fetch(
            name, provider, previous=previous, rejected=rejected, may_defer=False
        )

    def _deferral(self, previous: Token) -> float | None:
        """Seconds a renewal of *previous* may wait for the store, or ``None``: fetch per process now.

        The first half of the renewal window (``refresh_at`` to ``usable_until``)
        may be spent waiting for Redis; the second half is left to a per-process
        fetch, with the usual backoff behind it.
        """
        window = previous.usable_until - previous.refresh_at
        spare = previous.usable_until - self._clock.now() - window / 2
        if window <= 0 or spare <= 0:
            return None
        return min(self._store.retry_after_failure, max(self._store.poll_interval, spare / 2))

    async def aclose(self) -> None:
        client = self._link.detach()
        try:
            if client is not None:
                await self._link.close_client(client)
        finally:
            await self._fallback.aclose()

    async def health(self) -> dict[str, Any]:
        """The store's health for ``tokenpool check``.

        Returns:
            ``ok`` (PING and TIME answered), ``url`` (password masked),
            ``encrypted``, ``fallback`` (fetches currently bypass the store
            after a fault), ``ping_seconds`` (one PING round trip),
            ``clock_skew_seconds`` (the server's wall clock minus this host's)
            and ``error`` (the exception type, if any).
        """
        client = self._link.client
        if client is None:
            return {
                "ok": False,
                "url": self._store.url,
                "encrypted": self._store.encrypted,
                "fallback": self.in_fallback,
                "ping_seconds": None,
                "clock_skew_seconds": None,
                "error": "the source is not open",
            }
        return await probe(
            client,
            url=self._store.url,
            encrypted=self._store.encrypted,
            operation_timeout=self._store.operation_timeout,
            fallback=self.in_fallback,
        )

    # -- the shared path --------------------------------------------------------------------------

    async def _shared_fetch(
        self, name: str, provider: Provider, previous: Token | None, rejected: bool
    ) -> TokenResponse:
        keys = keys_for(provider, self._store.key_prefix)
        previous_digest = None if previous is None else token_digest(previous.access_token)
        if rejected and previous_digest is not None and await self._link.fence(name, keys, previous_digest):
            self._emit("fenced", name)
            self._log.info("fleet.store.fenced", provider=name)
        started = anyio.current_time()
        # The holder's request may take request_timeout; a dead holder's lease lasts lease_ttl.
        deadline = started + provider.refresh.request_timeout + self._store.lease_ttl
        if previous is not None and not rejected:
            # A renewal never waits for another process past its own token's last chance
            # (a holder that could neither publish nor release leaves its lease to expire).
            deadline = min(deadline, started + max(0.0, last_chance(previous) - self._clock.now()))
        waiting = False
        async with Listener(
            self._link.client, keys.channel, timeout=self._store.operation_timeout, log=self._log
        ) as listener:
            while True:
                snapshot = await self._link.read(name, keys)
                if snapshot.raw is not None:
                    shared = self._decode(snapshot.raw, keys)
                    response = self._adoptable(shared, snapshot, provider, previous, previous_digest)
                    if response is not None:
                        self._emit("hit", name)
                        return response
                changed = False
                if not snapshot.leased:
                    owner = f"{os.getpid()}-{secrets.token_hex(12)}"
                    status = await self._link.acquire(name, keys, owner, snapshot.raw)
                    if status == 1:
                        self._emit("lease_won", name)
                        return await self._fetch_and_publish(name, provider, previous, rejected, keys, owner)
                    # -1: a token was published since the read; 0: another process just took the lease.
                    changed = status == -1
                if not changed and not waiting:
                    waiting = True
                    self._emit("lease_wait", name)
                if anyio.current_time() >= deadline:
                    break
                if not changed and not await listener.subscribe():
                    # Listening from now on, so read again at once: a publication that
                    # landed between the read above and the subscription is not missed.
                    await listener.wait(self._store.poll_interval)
        self._log.warning(
            "fleet.store.wait_timeout",
            provider=name,
            waited=round(anyio.current_time() - started, 3),
        )
        self._emit("fallback", name)
        return await self._fetch_and_publish(name, provider, previous, rejected, keys, owner="")

    async def _fetch_and_publish(
        self,
        name: str,
        provider: Provider,
        previous: Token | None,
        rejected: bool,
        keys: Keys,
        owner: str,
    ) -> TokenResponse:
        """Fetch through the HTTP source and publish; *owner* holds the lease (``""``: no lease).

        Whatever happens to the fetch (a provider error, cancellation), a held
        lease is released so that another process can take over at once.
        """
        try:
            sent_at = self._clock.now()
            response = await self._fallback.fetch(
                name, provider, previous=previous, rejected=rejected, may_defer=False
            )
            if response.sent_at is not None:
                sent_at = response.sent_at
            else:
                response = dataclasses.replace(response, sent_at=sent_at)
            try:
                written = await self._publish(name, keys, response, sent_at, owner)
            except StoreFault as fault:
                # The token is good; only sharing it failed.  Release the lease (if Redis
                # answers) so that the fleet's waiters need not sit out its TTL.
                self._link.fault(name, fault.error)
                if owner:
                    await self._link.release(keys, owner)
            else:
                if written:
                    self._emit("published", name)
        except BaseException:
            if owner:
                await self._link.release(keys, owner)
            raise
        return response

    # -- values -----------------------------------------------------------------------------------

    async def _publish(
        self, name: str, keys: Keys, response: TokenResponse, sent_at: float, owner: str
    ) -> bool:
        try:
            prefix = encode_value_prefix(response, keys, self._cipher)
        except Exception as exc:
            raise StoreFault(exc) from None
        return await self._link.publish(name, keys, prefix, sent_at, response.expires_in, owner)

    def _decode(self, raw: bytes, keys: Keys) -> SharedToken:
        try:
            return decode_value(raw, keys, self._cipher)
        except Garbage as exc:
            raise StoreFault(exc) from None

    def _adoptable(
        self,
        shared: SharedToken,
        snapshot: Snapshot,
        provider: Provider,
        previous: Token | None,
        previous_digest: str | None,
    ) -> TokenResponse | None:
        """The shared token as a response on the pool's clock, if it is worth adopting."""
        policy = provider.refresh
        lifetime = shared.expires_in
        # A server clock stepped backwards must not make a token look younger than new.
        age = max(0.0, snapshot.redis_now - shared.issued_at)
        remaining = lifetime - age
        slack = min(_ADOPT_SLACK_MAX, _ADOPT_SLACK_RATIO * lifetime)
        if lifetime < policy.min_lifetime or remaining <= policy.margin(lifetime) + slack:
            return None
        if previous_digest is not None and hmac.compare_digest(shared.digest, previous_digest):
            return None  # the token the cell already has (or that was just refused)
        # The reading taken before the round trip: the conservative side by half a round trip.
        sent_at = snapshot.local_at - age
        if previous is not None and sent_at < previous.sent_at:
            return None  # older than the cell's own token: not an improvement
        return TokenResponse(
            access_token=shared.access_token,
            expires_in=lifetime,
            token_type=shared.token_type,
            scope=shared.scope,
            sent_at=sent_at,
        )

    def _emit(self, outcome: str, name: str) -> None:
        self._on_event(outcome, name)
