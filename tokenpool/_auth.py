"""httpx authentication backed by a pool: a bearer header, the provider's headers, one retry on 401."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING

import httpx

from ._exceptions import InsecureTransportError
from ._urls import is_loopback_host

if TYPE_CHECKING:
    from ._pool import TokenPool
    from ._token import Token

__all__ = ["SyncTokenAuth", "TokenAuth"]


def _prepare(request: httpx.Request, token: Token, extra: dict[str, str] | object) -> None:
    url = request.url
    if url.scheme != "https" and not is_loopback_host(url.host):
        raise InsecureTransportError(
            f"refusing to send a bearer token over plain http to {url.host}; use https"
        )
    headers = request.headers
    headers["Authorization"] = token.authorization
    if extra:
        headers.update(extra)  # type: ignore[arg-type]


class TokenAuth(httpx.Auth):
    """Adds provider *name*'s token to each request of an ``httpx.AsyncClient``.

    On a 401 it invalidates the token it sent (only if that token is still the
    pool's current one, so a thousand concurrent 401s cause one refresh), gets
    a fresh token and replays the request once.  A second 401 is returned to
    the caller as it is: no loops.  Request bodies are buffered first so the
    replay carries the same bytes.
    """

    requires_request_body = True

    def __init__(self, pool: TokenPool, name: str) -> None:
        self._pool = pool
        self._name = name

    def __repr__(self) -> str:
        return f"<TokenAuth provider={self._name!r}>"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError(
            "TokenPool.auth() is for httpx.AsyncClient; use BlockingTokenPool(...).auth() with httpx.Client"
        )

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        pool, name = self._pool, self._name
        token = await pool.token(name)
        _prepare(request, token, pool.api_headers(name))
        response = yield request
        if response.status_code != 401:
            return
        await pool.invalidate(name, token)
        pool.report_unauthorized(name, retried=True)
        token = await pool.token(name)
        _prepare(request, token, pool.api_headers(name))
        response = yield request
        if response.status_code == 401:
            pool.report_unauthorized(name, retried=False)


class SyncTokenAuth(httpx.Auth):
    """The same flow as :class:`TokenAuth` for ``httpx.Client``, through a blocking pool."""

    requires_request_body = True

    def __init__(
        self,
        name: str,
        get_token: Callable[[str], Token],
        invalidate: Callable[[str, Token], bool],
        api_headers: Callable[[str], object],
        report_401: Callable[[str, bool], None],
    ) -> None:
        self._name = name
        self._get_token = get_token
        self._invalidate = invalidate
        self._api_headers = api_headers
        self._report_401 = report_401

    def __repr__(self) -> str:
        return f"<SyncTokenAuth provider={self._name!r}>"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        name = self._name
        token = self._get_token(name)
        _prepare(request, token, self._api_headers(name))
        response = yield request
        if response.status_code != 401:
            return
        self._invalidate(name, token)
        self._report_401(name, True)
        token = self._get_token(name)
        _prepare(request, token, self._api_headers(name))
        response = yield request
        if response.status_code == 401:
            self._report_401(name, False)

    def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        # A plain method: httpx calls it first, so the mistake surfaces at once.
        raise RuntimeError(
            "BlockingTokenPool.auth() is for httpx.Client; use TokenPool.auth() with AsyncClient"
        )
