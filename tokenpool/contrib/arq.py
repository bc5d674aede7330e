"""arq: a token pool for the worker's lifetime, and ``httpx.AsyncClient`` objects in ``ctx``.

::

    import os
    import httpx
    from tokenpool.contrib.arq import PoolHooks, client
    from tokenpool.providers import ClientCredentials

    def providers():  # runs in the worker process, at startup
        return {
            "acme": ClientCredentials(
                token_url="https://auth.acme.example/oauth/token",
                client_id=os.environ["ACME_CLIENT_ID"],
                client_secret=os.environ["ACME_CLIENT_SECRET"],
            )
        }

    tokenpool_hooks = PoolHooks(
        providers,
        client_factory=lambda name, auth: httpx.AsyncClient(auth=auth, base_url="https://api.acme.example"),
    )

    async def pay(ctx, payout_id: str) -> int:
        response = await client(ctx, "acme").post("/payouts", json={"id": payout_id})
        return response.status_code

    class WorkerSettings:
        functions = [pay]
        on_startup = tokenpool_hooks.on_startup
        on_shutdown = tokenpool_hooks.on_shutdown

Or from a TOML file (the format of ``tokenpool check``):
``PoolHooks(config="tokenpool.toml")``; a ``[pool.store]`` table there makes
all the workers share one token per client.

With hooks of your own, call these from them (``await tokenpool_hooks.on_startup(ctx)``).

``on_startup`` opens the pool (waiting for the first tokens by default:
``warm_up="wait"``; one provider's outage is logged, not raised) and puts it in
``ctx["tokenpool"]``, and one ``httpx.AsyncClient`` per provider, using the
pool's auth, in ``ctx["tokenpool_clients"]``.  ``on_shutdown`` closes the
clients, then the pool.

arq calls the two hooks from different asyncio tasks.  That needs nothing
special: a pool's own tasks run in a task group hosted by a task of the pool's
(see ``tokenpool._host``), so it is opened in one task and closed in another
like any other resource.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import anyio
import httpx

from .._exceptions import PoolStateError, UnknownProviderError
from .._pool import TokenPool
from ._common import ProvidersFactory, log_closed, log_opened, logger_from, pool_recipe

__all__ = ["AsyncClientFactory", "PoolHooks", "client", "get_pool"]

#: Builds the ``httpx.AsyncClient`` for provider *name*, given the pool's auth for it.
AsyncClientFactory = Callable[[str, httpx.Auth], httpx.AsyncClient]

POOL_KEY = "tokenpool"
CLIENTS_KEY = "tokenpool_clients"
_OPEN_KEY = "_tokenpool_open"
_INTEGRATION = "arq"


class PoolHooks:
    """``on_startup`` / ``on_shutdown`` for an arq worker.

    Args:
        providers: A callable returning ``{name: provider}``; runs at worker startup.
        config: Instead of *providers*: a TOML file (the format of
            ``tokenpool check``) with the providers and ``[pool]`` options,
            ``[pool.store]`` included; read at worker startup.
        client_factory: Builds each provider's ``httpx.AsyncClient``
            (default ``httpx.AsyncClient(auth=auth)``).
        pool_key: Where the pool goes in ``ctx``.
        clients_key: Where the ``{name: AsyncClient}`` mapping goes in ``ctx``.
        **pool_options: :class:`~tokenpool.TokenPool` keyword arguments
            (``store=``…; they override the file's ``[pool]``).
    """

    def __init__(
        self,
        providers: ProvidersFactory | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        client_factory: AsyncClientFactory | None = None,
        pool_key: str = POOL_KEY,
        clients_key: str = CLIENTS_KEY,
        **pool_options: Any,
    ) -> None:
        self._recipe = pool_recipe(
            providers, config, defaults={}, options=pool_options, call="PoolHooks(providers)"
        )
        self._client_factory = client_factory
        self._pool_key = pool_key
        self._clients_key = clients_key
        self._logger = logger_from(pool_options)

    def __repr__(self) -> str:
        return f"<PoolHooks pool_key={self._pool_key!r} clients_key={self._clients_key!r}>"

    async def on_startup(self, ctx: MutableMapping[str, Any]) -> None:
        """Open the pool and the clients, and put them in *ctx*."""
        if _OPEN_KEY in ctx:
            raise PoolStateError("a tokenpool is already open in this arq context")
        if self._recipe.config is None:
            providers, options = self._recipe.build()
        else:
            # Reading the TOML file is blocking I/O: off the event loop.
            providers, options = await anyio.to_thread.run_sync(self._recipe.build)
        pool = TokenPool(providers, **options)
        await pool.__aenter__()  # closes what it opened if it fails or is cancelled
        try:
            clients = {name: self._make_client(name, pool.auth(name)) for name in pool.names}
        except BaseException:
            await pool.aclose()
            raise
        ctx[_OPEN_KEY] = True
        ctx[self._pool_key] = pool
        ctx[self._clients_key] = clients
        log_opened(self._logger, _INTEGRATION, pool.names)

    async def on_shutdown(self, ctx: MutableMapping[str, Any]) -> None:
        """Close the clients, then the pool.  Does nothing if ``on_startup`` did not run."""
        opened = ctx.pop(_OPEN_KEY, False)
        clients: Mapping[str, httpx.AsyncClient] = ctx.pop(self._clients_key, None) or {}
        pool: TokenPool | None = ctx.pop(self._pool_key, None)
        try:
            for open_client in clients.values():
                await open_client.aclose()
        finally:
            if opened and isinstance(pool, TokenPool):
                await pool.aclose()
        if pool is not None:
            log_closed(self._logger, _INTEGRATION, pool.statistics())

    def _make_client(self, name: str, auth: httpx.Auth) -> httpx.AsyncClient:
        factory = self._client_factory
        return factory(name, auth) if factory is not None else httpx.AsyncClient(auth=auth)


def get_pool(ctx: Mapping[str, Any], *, key: str = POOL_KEY) -> TokenPool:
    """The pool ``PoolHooks.on_startup`` put in an arq job's *ctx*."""
    pool = ctx.get(key)
    if not isinstance(pool, TokenPool):
        raise PoolStateError(
            f"no tokenpool in ctx[{key!r}]: add PoolHooks.on_startup to the worker's on_startup"
        )
    return pool


def client(ctx: Mapping[str, Any], name: str, *, key: str = CLIENTS_KEY) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` for provider *name* in an arq job's *ctx*."""
    clients = ctx.get(key)
    if not isinstance(clients, Mapping):
        raise PoolStateError(f"no tokenpool clients in ctx[{key!r}]: add PoolHooks.on_startup to on_startup")
    found = clients.get(name)
    if not isinstance(found, httpx.AsyncClient):
        raise UnknownProviderError(name, list(clients))
    return found
