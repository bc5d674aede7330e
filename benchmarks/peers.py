"""Peer libraries as fleet auth strategies, configured the way their documentation shows.

Each class is an :class:`~tokenpool.loadtest.AuthStrategy` the harness loads by
import path inside a worker process, so the peers run with the same processes,
tasks, in-flight bound, HTTP client settings and emulator as tokenpool.  The
peer libraries are optional (``pip install 'tokenpool[bench]'``) and imported
only here, inside the worker that uses them.

They speak the providers that use plain RFC 6749 client credentials with HTTP
Basic and a form body: ``generic``, ``zertiban`` and ``navro`` (``scope=openid``
and an ``X-API-Version`` header on the token request).  NTX Pay MX / PIX and
Pay-me send JSON bodies (and NTX MX a forwarded certificate header), which
none of the three can produce without hand-written request code, so they are
left out rather than faked.

Options (``StrategySpec.options``):

- ``leeway``: seconds before expiry at which the peer renews.  ``None`` keeps
  the library's default (authlib 60 s, httpx-auth 30 s, the naive cache 30 s).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import Any, ClassVar

import httpx

from tokenpool.loadtest import (
    AuthStrategy,
    FleetSettings,
    ProviderSpec,
    StrategySpec,
    make_client,
    make_ssl_context,
)

__all__ = ["PEER_PROVIDERS", "AuthlibStrategy", "HttpxAuthStrategy", "NaiveLockStrategy"]

#: The emulator providers the peers can speak (HTTP Basic + form body).
PEER_PROVIDERS: frozenset[str] = frozenset({"generic", "zertiban", "navro"})


class _PeerStrategy(AuthStrategy):
    supports: ClassVar[frozenset[str] | None] = PEER_PROVIDERS

    def __init__(self, settings: FleetSettings, spec: StrategySpec) -> None:
        super().__init__(settings, spec)
        unsupported = sorted({s.group for s in settings.specs} - PEER_PROVIDERS)
        if unsupported:
            raise ValueError(f"{self.label} cannot speak {', '.join(unsupported)}")
        self.specs = {s.name: s for s in settings.specs}

    def headers_for(self, spec: ProviderSpec) -> dict[str, str]:
        """Headers every resource call needs besides Authorization (tenant, API version)."""
        return dict(spec.api_headers)


class AuthlibStrategy(_PeerStrategy):
    """authlib's ``AsyncOAuth2Client`` with ``grant_type="client_credentials"``, one client per cell.

    As authlib's documentation shows for client credentials: construct the
    client with ``token_endpoint`` and ``grant_type``, call ``fetch_token()``
    once, then make requests through the client, which renews the token when
    ``is_expired(leeway)`` says so (``leeway=60`` by default).  The first
    ``fetch_token()`` is done once per worker before the load starts (as an
    application would at start-up), not by the load's callers.
    """

    label = "authlib"

    async def open(self) -> None:
        # authlib 1.9 warns that it falls back to httpx when httpx2 is not installed;
        # its module installs an "always" filter on import, so import it first.
        import authlib.deprecate  # noqa: F401

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from authlib.integrations.httpx_client import AsyncOAuth2Client

        leeway = self.spec.option("leeway")
        self.clients: dict[str, Any] = {}
        for name, spec in self.specs.items():
            kwargs: dict[str, Any] = {}
            if leeway is not None:
                kwargs["leeway"] = leeway
            scope = dict(spec.form).get("scope")
            client: Any = make_client(
                self.settings,
                token_urls={name: spec.token_url},
                on_token_request=self.count_token_request,
                headers={**self.headers_for(spec), **dict(spec.token_headers)},
                client_class=AsyncOAuth2Client,
                client_id=spec.client_id,
                client_secret=spec.client_secret,
                token_endpoint_auth_method="client_secret_basic",
                scope=scope,
                token_endpoint=spec.token_url,
                grant_type="client_credentials",
                **kwargs,
            )
            self.clients[name] = client
            started = time.perf_counter()
            await client.fetch_token()
            self.refresh_latency[spec.group].add(time.perf_counter() - started)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def call(self, name: str, url: str) -> httpx.Response:
        response: httpx.Response = await self.clients[name].get(url)
        return response


class _CountingSyncTransport(httpx.BaseTransport):
    """Counts the synchronous token requests httpx-auth sends, and times them."""

    def __init__(self, inner: httpx.BaseTransport, strategy: HttpxAuthStrategy, spec: ProviderSpec) -> None:
        self._inner = inner
        self._strategy = strategy
        self._spec = spec

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._strategy.count_token_request(self._spec.name)
        started = time.perf_counter()
        response = self._inner.handle_request(request)
        response.read()
        self._strategy.refresh_latency[self._spec.group].add(time.perf_counter() - started)
        return response

    def close(self) -> None:
        self._inner.close()


class HttpxAuthStrategy(_PeerStrategy):
    """httpx-auth's ``OAuth2ClientCredentials`` as the ``auth=`` of the resource client.

    Configured as its documentation shows: ``OAuth2ClientCredentials(token_url,
    client_id, client_secret, scope=...)`` with ``early_expiry`` left at 30 s
    (unless the run sets a leeway).  Its token requests go through the
    ``client=`` it accepts (a synchronous ``httpx.Client``: that is its design;
    the request blocks the event loop while it runs).  Tokens live in its
    process-global cache.
    """

    label = "httpx-auth"

    async def open(self) -> None:
        import httpx_auth

        leeway = self.spec.option("leeway")
        self.auths: dict[str, httpx.Auth] = {}
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.sync_clients: list[httpx.Client] = []
        for name, spec in self.specs.items():
            verify = make_ssl_context(self.settings.ca_file) if self.settings.ca_file else False
            token_client = httpx.Client(
                transport=_CountingSyncTransport(httpx.HTTPTransport(verify=verify), self, spec),
                headers=dict(spec.token_headers),
                trust_env=False,
            )
            self.sync_clients.append(token_client)
            kwargs: dict[str, Any] = dict(spec.form)
            if leeway is not None:
                kwargs["early_expiry"] = leeway
            self.auths[name] = httpx_auth.OAuth2ClientCredentials(
                spec.token_url, spec.client_id, spec.client_secret, client=token_client, **kwargs
            )
            self.clients[name] = make_client(self.settings, headers=self.headers_for(spec))

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        for sync_client in self.sync_clients:
            sync_client.close()

    async def call(self, name: str, url: str) -> httpx.Response:
        return await self.clients[name].get(url, auth=self.auths[name])


class NaiveLockStrategy(_PeerStrategy):
    """The cache teams write by hand: a dict of tokens and a double-checked ``asyncio.Lock`` per cell.

    Renews 30 s (``leeway``) before expiry, on the caller's path, under the
    lock; no retry on 401.
    """

    label = "naive-lock"

    async def open(self) -> None:
        leeway = self.spec.option("leeway")
        self.early = 30.0 if leeway is None else float(leeway)
        self.tokens: dict[str, tuple[str, float]] = {}
        self.locks = {name: asyncio.Lock() for name in self.specs}
        self.client = make_client(self.settings, token_urls={n: s.token_url for n, s in self.specs.items()})

    async def close(self) -> None:
        await self.client.aclose()

    async def _token(self, spec: ProviderSpec) -> str:
        entry = self.tokens.get(spec.name)
        if entry is not None and time.monotonic() < entry[1]:
            return entry[0]
        async with self.locks[spec.name]:
            entry = self.tokens.get(spec.name)
            if entry is not None and time.monotonic() < entry[1]:
                return entry[0]
            self.count_token_request(spec.name)
            started = time.perf_counter()
            response = await self.client.post(
                spec.token_url,
                data={"grant_type": "client_credentials", **dict(spec.form)},
                headers=dict(spec.token_headers),
                auth=(spec.client_id, spec.client_secret),
            )
            self.refresh_latency[spec.group].add(time.perf_counter() - started)
            response.raise_for_status()
            body = response.json()
            token = str(body["access_token"])
            self.tokens[spec.name] = (token, time.monotonic() + float(body["expires_in"]) - self.early)
            return token

    async def call(self, name: str, url: str) -> httpx.Response:
        spec = self.specs[name]
        token = await self._token(spec)
        headers = {"Authorization": f"Bearer {token}", **self.headers_for(spec)}
        return await self.client.get(url, headers=headers)
