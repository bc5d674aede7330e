"""The seam "where a token comes from": one small protocol below the cell.

The pool wires one source into its cells.  A cell calls :meth:`TokenSource.fetch`
from its own refresh task and turns the answer into a scheduled token; the
source never sees the clock's schedule, and the cell never sees HTTP.

Implementations:

- ``tokenpool._http.HttpTokenSource``: the provider's token endpoint over HTTP
  (clients, request slots, deadline, body cap, error mapping);
- ``tokenpool.fleet.FleetTokenSource``: the fleet store (Redis): read the
  token another process published, or take the lease and ask the HTTP source.
  It sets :attr:`~tokenpool.TokenResponse.sent_at` on what it returns, so the
  cell schedules an adopted token from *its* times, and it may answer a
  renewal that can wait with :class:`RenewalDeferred`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._clock import Clock
    from ._token import Token, TokenResponse
    from .providers import Provider

__all__ = ["RenewalDeferred", "TokenSource", "TokenStore"]


class RenewalDeferred(Exception):
    """Raised by :meth:`TokenSource.fetch`: "not now; keep serving the current token, ask again later".

    A source may defer only a fetch the cell allows to wait (``may_defer``:
    a scheduled renewal, its token still served, nobody waiting).  The fleet store
    defers when Redis is briefly unavailable, rather than fetching a
    per-process token that a provider which revokes earlier tokens on issue
    would answer by revoking the whole fleet's.  The cell asks again after
    *retry_in* seconds (never past the moment its token stops being served),
    or at once if a caller starts waiting or the API refuses the token
    meanwhile; callers never see this exception.

    Args:
        retry_in: Seconds until the cell should ask again (> 0).
        reason: A short fixed word for the debug log (``"store_unavailable"``).
    """

    def __init__(self, retry_in: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_in = retry_in
        self.reason = reason


@runtime_checkable
class TokenSource(Protocol):
    """Gets token responses for providers; shared by every cell of a pool.

    ``fetch`` is called concurrently for different providers but at most once
    at a time per cell (the cell's single flight), and it may be cancelled
    when the pool closes.  It raises only
    :class:`~tokenpool.TokenRequestError` subclasses for failures of the
    provider or the network, :class:`RenewalDeferred` to postpone a renewal
    that can wait, and ``ConfigurationError`` only from ``prepare``.
    """

    async def open(self) -> None:
        """Acquire what fetching needs; runs once when the pool is entered."""

    async def prepare(self, provider: Provider) -> None:
        """Get ready to fetch for *provider* (build its TLS context off the event loop, say).

        Called for every provider when the pool opens and for providers added
        or replaced later, before their first fetch.

        Raises:
            ConfigurationError: the provider's settings cannot work (a client
                certificate that cannot be loaded, say).
        """

    async def fetch(
        self, name: str, provider: Provider, *, previous: Token | None, rejected: bool, may_defer: bool
    ) -> TokenResponse:
        """One token response for *provider* (the pool calls it *name*).

        Args:
            name: The pool's name for the provider (for errors and logs).
            provider: The adapter with the settings to use now.
            previous: The token this one replaces (``None`` on a cold start).
                Its access token must never appear in an error message.
            rejected: *previous* was refused by the API (a 401): a shared
                store must not hand the same token back.
            may_defer: Nobody waits for this fetch and *previous* is still
                served: the source may raise :class:`RenewalDeferred`
                instead of fetching now.  ``False``: a caller (or
                ``TokenPool.refresh``) is waiting, answer now.
        """
        ...

    async def aclose(self) -> None:
        """Release everything ``open`` and ``prepare`` acquired."""


@runtime_checkable
class TokenStore(Protocol):
    """A shared store of tokens for a fleet of processes (``tokenpool.fleet.RedisStore``).

    The pool hands it its own source (HTTP) and gets back the source its cells
    use: one that reads the fleet's shared token first and falls back to
    *fallback* on any store fault.
    """

    def source(
        self,
        fallback: TokenSource,
        *,
        clock: Clock,
        log: Any,
        on_event: Callable[[str, str], None],
    ) -> TokenSource:
        """The source to use, wrapping *fallback*; *on_event(outcome, name)* feeds the metrics."""
        ...
