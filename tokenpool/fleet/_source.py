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
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .._metrics import STORE_OUTCOMES
from .._schedule import last_chance
from .._source import RenewalDeferred
from .._token import TokenResponse
from . import _scripts
from ._codec import Garbage, Keys, SharedToken, decode_value, encode_value_prefix, keys_for, token_digest
from ._listener import Listener
from ._store import RedisStore, probe, require_asyncio

if TYPE_CHECKING:
    from .._clock import Clock
    from .._source import TokenSource
    from .._token import Token
    from ..providers import Provider

__all__ = ["STORE_OUTCOMES", "FleetTokenSource"]

#: Beyond the provider's safety margin, the least life (as a fraction of the lifetime, at most
#: one second) a shared token must have left to be adopted rather than replaced.
_ADOPT_SLACK_RATIO = 0.05
_ADOPT_SLACK_MAX = 1.0


class _StoreFault(Exception):
    """A Redis operation failed, timed out or returned garbage."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(type(error).__name__)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One read: the raw value (or ``None``), the server's time, whether a lease is held, and
    the pool clock's reading taken just before the round trip."""

    raw: bytes | None
    redis_now: float
    leased: bool
    local_at: float


class FleetTokenSource:
    """A :class:`~tokenpool.TokenSource` that shares tokens through Redis (see the module docstring).

    Made by :meth:`RedisStore.source`; the pool opens, uses and closes it.

    Args:
        store: The settings.
        fallback: The HTTP source: the lease holder's fetches, and every
            fetch while the store is faulty.
        clock: The pool's clock.
        log: A structlog-style logger (``None``: ``structlog.get_logger("tokenpool")``).
        on_event: ``on_event(outcome, provider_name)`` for metrics, with an
            outcome from :data:`STORE_OUTCOMES`.
    """

    def __init__(
        self,
        store: RedisStore,
        fallback: TokenSource,
        *,
        clock: Clock,
        log: Any,
        on_event: Callable[[str, str], None],
    ) -> None:
        self._store = store
        self._fallback = fallback
        self._clock = clock
        self._log = log if log is not None else structlog.get_logger("tokenpool")
        self._on_event = on_event
        self._cipher = store.cipher()
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        # Set by a store fault, cleared by the next Redis round trip that succeeds.
        self._faulted = False

    def __repr__(self) -> str:
        state = "closed" if self._client is None else ("fallback" if self.in_fallback else "shared")
        return f"<FleetTokenSource {state} store={self._store!r}>"

    @property
    def store(self) -> RedisStore:
        return self._store

    @property
    def in_fallback(self) -> bool:
        """Whether the last Redis round trip failed (fetches fall back or defer until one succeeds)."""
        return self._faulted

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
            await self._close_client(client)
            raise
        self._scripts = {
            "read": client.register_script(_scripts.READ),
            "acquire": client.register_script(_scripts.ACQUIRE),
            "publish": client.register_script(_scripts.PUBLISH),
            "release": client.register_script(_scripts.RELEASE),
            "fence": client.register_script(_scripts.FENCE),
        }
        self._client = client
        await self._warm(client)

    async def _warm(self, client: Any) -> None:
        """Connect and load the scripts now, in one round trip, so that the first fetches
        (the pool's warm-up, every cell at once) do not spend their operation deadline
        on a TCP connection, AUTH and a NOSCRIPT retry.  Best effort and bounded: a
        Redis that is down here is the first fetch's fault to count."""
        with anyio.move_on_after(max(0.5, 4 * self._store.operation_timeout)):
            try:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.ping()
                    for script in self._scripts.values():
                        pipe.script_load(script.script)
                    await pipe.execute()
            except Exception as exc:
                self._log.debug("fleet.store.warm_failed", error=type(exc).__name__)

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
        if self._client is not None:
            try:
                return await self._shared_fetch(name, provider, previous, rejected)
            except _StoreFault as fault:
                self._fault(name, fault.error)
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
        client, self._client = self._client, None
        self._scripts = {}
        try:
            if client is not None:
                await self._close_client(client)
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
        if self._client is None:
            return {
                "ok": False,
                "url": self._store.url,
                "encrypted": self._store.encrypted,
                "fallback": self.in_fallback,
                "ping_seconds": None,
                "clock_skew_seconds": None,
                "error": "the source is not open",
            }
        return await probe(self._store, self._client, fallback=self.in_fallback)

    # -- the shared path --------------------------------------------------------------------------

    async def _shared_fetch(
        self, name: str, provider: Provider, previous: Token | None, rejected: bool
    ) -> TokenResponse:
        keys = keys_for(provider, self._store.key_prefix)
        previous_digest = None if previous is None else token_digest(previous.access_token)
        if rejected and previous_digest is not None:
            deleted = await self._call(name, "fence", [keys.token], [previous_digest])
            if _integer(deleted) == 1:
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
            self._client, keys.channel, timeout=self._store.operation_timeout, log=self._log
        ) as listener:
            while True:
                snapshot = await self._read(name, keys)
                if snapshot.raw is not None:
                    shared = self._decode(snapshot.raw, keys)
                    response = self._adoptable(shared, snapshot, provider, previous, previous_digest)
                    if response is not None:
                        self._emit("hit", name)
                        return response
                changed = False
                if not snapshot.leased:
                    owner = f"{os.getpid()}-{secrets.token_hex(12)}"
                    status = await self._acquire(name, keys, owner, snapshot.raw)
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
            except _StoreFault as fault:
                # The token is good; only sharing it failed.  Release the lease (if Redis
                # answers) so that the fleet's waiters need not sit out its TTL.
                self._fault(name, fault.error)
                if owner:
                    await self._release(keys, owner)
            else:
                if written:
                    self._emit("published", name)
        except BaseException:
            if owner:
                await self._release(keys, owner)
            raise
        return response

    # -- Redis operations -------------------------------------------------------------------------

    async def _call(self, name: str, script: str, keys: list[str], args: list[str]) -> Any:
        """One script round trip within the operation deadline; any failure is a :class:`_StoreFault`."""
        try:
            # A busy worker's loop may wake up past the deadline with the reply already
            # received: anyio then lets the reply through rather than cancelling (see
            # test_a_reply_that_arrived_while_the_loop_ran_late_is_not_a_timeout).
            with anyio.fail_after(self._store.operation_timeout):
                result = await self._scripts[script](keys=keys, args=args)
        except Exception as exc:
            raise _StoreFault(exc) from exc
        if self._faulted:
            self._faulted = False
            self._emit("recovered", name)
            self._log.info("fleet.store.recovered", provider=name)
        return result

    async def _read(self, name: str, keys: Keys) -> _Snapshot:
        local_at = self._clock.now()
        reply = await self._call(name, "read", [keys.token, keys.lease], [])
        self._emit("read", name)
        try:
            raw, seconds, micros, leased = reply
            if raw is not None and not isinstance(raw, bytes):
                raise Garbage("the read script answered with an unexpected type")  # noqa: TRY301
            redis_now = int(seconds) + int(micros) / 1e6
        except (TypeError, ValueError, Garbage) as exc:
            detail = f"unexpected answer to the read script ({type(exc).__name__})"
            raise _StoreFault(Garbage(detail)) from None
        return _Snapshot(raw=raw, redis_now=redis_now, leased=_integer(leased) == 1, local_at=local_at)

    async def _acquire(self, name: str, keys: Keys, owner: str, seen: bytes | None) -> int:
        seen_sha1 = "" if seen is None else hashlib.sha1(seen, usedforsecurity=False).hexdigest()
        ttl_ms = str(max(1, round(self._store.lease_ttl * 1000)))
        try:
            reply = await self._call(name, "acquire", [keys.token, keys.lease], [owner, ttl_ms, seen_sha1])
        except _StoreFault:
            # The lease may have been taken without our seeing the answer (a reply past
            # the deadline): release it, or the fleet's renewals wait for it until their
            # last chance and then all fetch per process.  Bounded; a Redis that is down
            # refuses at once and any lease expires on its own.
            await self._release(keys, owner)
            raise
        except BaseException:
            # Cancelled: the lease may have been taken without our seeing the answer.
            await self._release(keys, owner)
            raise
        return _integer(reply)

    async def _publish(
        self, name: str, keys: Keys, response: TokenResponse, sent_at: float, owner: str
    ) -> bool:
        try:
            prefix = encode_value_prefix(response, keys, self._cipher)
        except Exception as exc:
            raise _StoreFault(exc) from None
        # Measured just before the round trip; the script subtracts it from the server's TIME.
        age = max(0.0, self._clock.now() - sent_at)
        reply = await self._call(
            name,
            "publish",
            [keys.token, keys.lease, keys.gen],
            [prefix, f"{age:.6f}", repr(float(response.expires_in)), owner, keys.channel],
        )
        if not isinstance(reply, list) or not reply:
            raise _StoreFault(Garbage("unexpected answer to the publish script"))
        return _integer(reply[0]) == 1

    async def _release(self, keys: Keys, owner: str) -> None:
        """Compare-and-delete the lease; shielded and bounded, failures ignored (the lease expires)."""
        with anyio.move_on_after(self._store.operation_timeout, shield=True):
            try:
                await self._scripts["release"](keys=[keys.lease], args=[owner])
            except Exception as exc:
                self._log.debug("fleet.store.release_failed", error=type(exc).__name__)

    def _decode(self, raw: bytes, keys: Keys) -> SharedToken:
        try:
            return decode_value(raw, keys, self._cipher)
        except Garbage as exc:
            raise _StoreFault(exc) from None

    def _adoptable(
        self,
        shared: SharedToken,
        snapshot: _Snapshot,
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

    # -- faults -----------------------------------------------------------------------------------

    def _fault(self, name: str, error: BaseException) -> None:
        """Count a store fault; log it once per run of faults (the next success logs the recovery)."""
        self._emit("error", name)
        fields: dict[str, Any] = {"provider": name, "error": type(error).__name__}
        if isinstance(error, Garbage):
            fields["detail"] = str(error)  # fixed wording that never quotes the value
        if self._faulted:
            # Still failing: counted, not logged again at warning level.
            self._log.debug("fleet.store.still_failing", **fields)
        else:
            self._faulted = True
            self._log.warning("fleet.store.unavailable", **fields)

    def _emit(self, outcome: str, name: str) -> None:
        self._on_event(outcome, name)

    async def _close_client(self, client: Any) -> None:
        with anyio.move_on_after(max(1.0, 4 * self._store.operation_timeout), shield=True):
            try:
                await client.aclose()
            except Exception as exc:
                self._log.debug("fleet.store.close_failed", error=type(exc).__name__)


def _integer(value: object) -> int:
    """An integer reply, or a store fault (a script answered with something else)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.strip().removeprefix("-").isdigit():
        return int(value)
    raise _StoreFault(Garbage("a script answered with something other than an integer"))
