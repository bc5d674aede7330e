"""The workers' HTTP clients: sized to the in-flight bound, with a transport that times the auth overhead."""

from __future__ import annotations

import contextvars
import ssl
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ._histogram import Histogram

if TYPE_CHECKING:
    from ._settings import FleetSettings

__all__ = ["TimingTransport", "make_client", "make_ssl_context"]

#: Set by the load task when a call starts; read by the transport when the resource request arrives.
_CALL_PROBE: contextvars.ContextVar[_Probe | None] = contextvars.ContextVar(
    "tokenpool_fleet_probe", default=None
)


class _Probe:
    __slots__ = ("sink", "started")

    def __init__(self, started: float, sink: Histogram) -> None:
        self.started = started
        self.sink = sink


class TimingTransport(httpx.AsyncBaseTransport):
    """Records how long after the call's start a resource request reaches the wire, and counts token requests.

    Wraps the real transport; a request to one of *token_urls* counts as a
    token request for that cell (peers that send token requests through the
    same client are counted this way).
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        token_urls: Mapping[str, str] | None = None,
        on_token_request: Callable[[str], None] | None = None,
    ) -> None:
        self._inner = inner
        self._token_urls = {httpx.URL(url): name for name, url in (token_urls or {}).items()}
        self._on_token_request = on_token_request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._token_urls:
            name = self._token_urls.get(request.url.copy_with(query=None))
            if name is not None:
                if self._on_token_request is not None:
                    self._on_token_request(name)
                return await self._inner.handle_async_request(request)
        probe = _CALL_PROBE.get()
        if probe is not None:
            probe.sink.add(time.perf_counter() - probe.started)
            _CALL_PROBE.set(None)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_ssl_context(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def make_client(
    settings: FleetSettings,
    *,
    cert: tuple[str, str | None] | None = None,
    token_urls: Mapping[str, str] | None = None,
    on_token_request: Callable[[str], None] | None = None,
    headers: Mapping[str, str] | None = None,
    client_class: type[httpx.AsyncClient] = httpx.AsyncClient,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """An ``AsyncClient`` for resource calls, sized to the in-flight bound, with a timing transport."""
    verify: ssl.SSLContext | bool = (
        make_ssl_context(settings.ca_file, *(cert or (None, None))) if settings.ca_file else False
    )
    limits = httpx.Limits(
        max_connections=settings.max_in_flight,
        max_keepalive_connections=settings.max_in_flight,
        keepalive_expiry=30.0,
    )
    inner = httpx.AsyncHTTPTransport(verify=verify, http2=settings.http2, limits=limits, trust_env=False)
    transport = TimingTransport(inner, token_urls=token_urls, on_token_request=on_token_request)
    return client_class(
        transport=transport,
        timeout=httpx.Timeout(10.0),
        headers=dict(headers or {}),
        trust_env=False,
        follow_redirects=False,
        **kwargs,
    )
