"""The fleet source's Redis round trips: each script within the deadline, any failure a store fault.

A :class:`StoreLink` holds the source's redis-py client (while the source is
open) and the scripts registered on it.  Every round trip is bounded by the
store's ``operation_timeout``; a Redis error, a timeout or a reply of the
wrong shape raises :class:`StoreFault`, for the source to fall back or defer.
The link also keeps the *run of faults*: the first fault is logged as a
warning, the next ones at debug level, and the first round trip that succeeds
after them is logged (and counted) as the recovery.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from . import _scripts
from ._codec import Garbage, Keys

if TYPE_CHECKING:
    from .._clock import Clock

__all__ = ["Deadlines", "Snapshot", "StoreFault", "StoreLink"]


class Deadlines(Protocol):
    """What a link reads of its store's settings (a ``RedisStore``), whenever it needs them."""

    @property
    def operation_timeout(self) -> float: ...

    @property
    def lease_ttl(self) -> float: ...


class StoreFault(Exception):
    """A Redis operation failed, timed out or returned garbage."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(type(error).__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read: the raw value (or ``None``), the server's time, whether a lease is held, and
    the pool clock's reading taken just before the round trip."""

    raw: bytes | None
    redis_now: float
    leased: bool
    local_at: float


class StoreLink:
    """The source's side of every Redis round trip (see the module docstring).

    Args:
        store: The store's settings (``operation_timeout``, ``lease_ttl``).
        clock: The pool's clock.
        log: The source's logger.
        on_event: ``on_event(outcome, provider_name)``: ``read``, ``error``, ``recovered``.
    """

    def __init__(
        self,
        store: Deadlines,
        *,
        clock: Clock,
        log: Any,
        on_event: Callable[[str, str], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._log = log
        self._on_event = on_event
        #: The redis-py client while the source is open, else ``None``.
        self.client: Any = None
        self._scripts: dict[str, Any] = {}
        #: Set by a store fault, cleared by the next Redis round trip that succeeds.
        self.faulted = False

    # -- the client -----------------------------------------------------------------------------

    def attach(self, client: Any) -> None:
        """Register the scripts on *client* and use it from now on."""
        self._scripts = {
            "read": client.register_script(_scripts.READ),
            "acquire": client.register_script(_scripts.ACQUIRE),
            "publish": client.register_script(_scripts.PUBLISH),
            "release": client.register_script(_scripts.RELEASE),
            "fence": client.register_script(_scripts.FENCE),
        }
        self.client = client

    def detach(self) -> Any:
        """Stop using the client; return it (``None`` if there was none) for :meth:`close_client`."""
        client, self.client = self.client, None
        self._scripts = {}
        return client

    async def warm(self) -> None:
        """Connect and load the scripts now, in one round trip, so that the first fetches
        (the pool's warm-up, every cell at once) do not spend their operation deadline
        on a TCP connection, AUTH and a NOSCRIPT retry.  Best effort and bounded: a
        Redis that is down here is the first fetch's fault to count."""
        with anyio.move_on_after(max(0.5, 4 * self._store.operation_timeout)):
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.ping()
                    for script in self._scripts.values():
                        pipe.script_load(script.script)
                    await pipe.execute()
            except Exception as exc:
                self._log.debug("fleet.store.warm_failed", error=type(exc).__name__)

    async def close_client(self, client: Any) -> None:
        with anyio.move_on_after(max(1.0, 4 * self._store.operation_timeout), shield=True):
            try:
                await client.aclose()
            except Exception as exc:
                self._log.debug("fleet.store.close_failed", error=type(exc).__name__)

    # -- the scripts ----------------------------------------------------------------------------

    async def fence(self, name: str, keys: Keys, digest: str) -> bool:
        """Delete the shared token if it is still the one with *digest*; whether it was."""
        return _integer(await self._call(name, "fence", [keys.token], [digest])) == 1

    async def read(self, name: str, keys: Keys) -> Snapshot:
        local_at = self._clock.now()
        reply = await self._call(name, "read", [keys.token, keys.lease], [])
        self._on_event("read", name)
        try:
            raw, seconds, micros, leased = reply
            if raw is not None and not isinstance(raw, bytes):
                raise Garbage("the read script answered with an unexpected type")  # noqa: TRY301
            redis_now = int(seconds) + int(micros) / 1e6
        except (TypeError, ValueError, Garbage) as exc:
            detail = f"unexpected answer to the read script ({type(exc).__name__})"
            raise StoreFault(Garbage(detail)) from None
        return Snapshot(raw=raw, redis_now=redis_now, leased=_integer(leased) == 1, local_at=local_at)

    async def acquire(self, name: str, keys: Keys, owner: str, seen: bytes | None) -> int:
        seen_sha1 = "" if seen is None else hashlib.sha1(seen, usedforsecurity=False).hexdigest()
        ttl_ms = str(max(1, round(self._store.lease_ttl * 1000)))
        try:
            reply = await self._call(name, "acquire", [keys.token, keys.lease], [owner, ttl_ms, seen_sha1])
        except StoreFault:
            # The lease may have been taken without our seeing the answer (a reply past
            # the deadline): release it, or the fleet's renewals wait for it until their
            # last chance and then all fetch per process.  Bounded; a Redis that is down
            # refuses at once and any lease expires on its own.
            await self.release(keys, owner)
            raise
        except BaseException:
            # Cancelled: the lease may have been taken without our seeing the answer.
            await self.release(keys, owner)
            raise
        return _integer(reply)

    async def publish(
        self, name: str, keys: Keys, prefix: str, sent_at: float, expires_in: float, owner: str
    ) -> bool:
        """Write the token whose value starts with *prefix*; whether it was written."""
        # Measured just before the round trip; the script subtracts it from the server's TIME.
        age = max(0.0, self._clock.now() - sent_at)
        reply = await self._call(
            name,
            "publish",
            [keys.token, keys.lease, keys.gen],
            [prefix, f"{age:.6f}", repr(float(expires_in)), owner, keys.channel],
        )
        if not isinstance(reply, list) or not reply:
            raise StoreFault(Garbage("unexpected answer to the publish script"))
        return _integer(reply[0]) == 1

    async def release(self, keys: Keys, owner: str) -> None:
        """Compare-and-delete the lease; shielded and bounded, failures ignored (the lease expires)."""
        with anyio.move_on_after(self._store.operation_timeout, shield=True):
            try:
                await self._scripts["release"](keys=[keys.lease], args=[owner])
            except Exception as exc:
                self._log.debug("fleet.store.release_failed", error=type(exc).__name__)

    async def _call(self, name: str, script: str, keys: list[str], args: list[str]) -> Any:
        """One script round trip within the operation deadline; any failure is a :class:`StoreFault`."""
        try:
            # A busy worker's loop may wake up past the deadline with the reply already
            # received: anyio then lets the reply through rather than cancelling (see
            # test_a_reply_that_arrived_while_the_loop_ran_late_is_not_a_timeout).
            with anyio.fail_after(self._store.operation_timeout):
                result = await self._scripts[script](keys=keys, args=args)
        except Exception as exc:
            raise StoreFault(exc) from exc
        if self.faulted:
            self.faulted = False
            self._on_event("recovered", name)
            self._log.info("fleet.store.recovered", provider=name)
        return result

    # -- faults ---------------------------------------------------------------------------------

    def fault(self, name: str, error: BaseException) -> None:
        """Count a store fault; log it once per run of faults (the next success logs the recovery)."""
        self._on_event("error", name)
        fields: dict[str, Any] = {"provider": name, "error": type(error).__name__}
        if isinstance(error, Garbage):
            fields["detail"] = str(error)  # fixed wording that never quotes the value
        if self.faulted:
            # Still failing: counted, not logged again at warning level.
            self._log.debug("fleet.store.still_failing", **fields)
        else:
            self.faulted = True
            self._log.warning("fleet.store.unavailable", **fields)


def _integer(value: object) -> int:
    """An integer reply, or a store fault (a script answered with something else)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.strip().removeprefix("-").isdigit():
        return int(value)
    raise StoreFault(Garbage("a script answered with something other than an integer"))
