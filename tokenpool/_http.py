"""The HTTP token source: a provider's token endpoint, over httpx.

This module owns everything between "a token for this provider, please" and
the provider adapter's parse: the HTTP clients and their TLS contexts (built
in a worker thread, never on the event loop), the request slots (per
token-endpoint host and global), the deadline, the body cap, and the one
place where exceptions become tokenpool errors, scrubbed of every form of
every secret the library itself sent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import urllib.parse
import zlib
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, cast

import anyio
import anyio.to_thread
import certifi
import h2.exceptions
import httpx

from ._exceptions import (
    AdapterError,
    ConfigurationError,
    InvalidTokenResponse,
    TokenEndpointTimeout,
    TokenEndpointTLSError,
    TokenEndpointUnreachable,
    TokenRequestError,
)
from ._scrub import scrub_error

if TYPE_CHECKING:
    from ._token import Token, TokenResponse
    from .providers import ClientCertificate, Provider

__all__ = ["MAX_BODY_BYTES", "HttpTokenSource", "read_capped"]

#: Token endpoint answers larger than this are refused (a token response is well under 16 KiB).
MAX_BODY_BYTES = 64 * 1024


class HttpTokenSource:
    """Sends each provider's token request to its token endpoint.

    Args:
        client: An ``httpx.AsyncClient`` for providers without a client
            certificate (not closed here).  Redirects are never followed for
            token requests, whatever the client says: a redirect would carry
            the client secret to another host.
        ca_file: CA bundle for the source's own clients (default: certifi's).
        max_concurrent_requests: Token requests in flight at once, all hosts.
        max_requests_per_host: Token requests in flight at once per
            token-endpoint host and port, so that one hung provider cannot
            take every slot and delay the others' tokens.
    """

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        max_concurrent_requests: int = 20,
        max_requests_per_host: int = 4,
    ) -> None:
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise ConfigurationError(f"client must be an httpx.AsyncClient, got {type(client).__name__}")
        if ca_file is not None:
            if not isinstance(ca_file, str | os.PathLike):
                raise ConfigurationError(f"ca_file must be a path, got {type(ca_file).__name__}")
            ca_file = os.fspath(ca_file)
            # A stat, not a read: the bundle itself is loaded in a worker thread.
            if not os.path.isfile(ca_file):
                raise ConfigurationError(f"ca_file: no such file: {ca_file!r}")
        for setting, value in (
            ("max_concurrent_requests", max_concurrent_requests),
            ("max_requests_per_host", max_requests_per_host),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{setting} must be a positive integer, got {value!r}")
        self._user_client = client
        self._ca_file: str | None = ca_file
        self._max_requests = max_concurrent_requests
        self._per_host = max_requests_per_host
        self._slots = anyio.Semaphore(max_concurrent_requests)
        self._host_slots: dict[tuple[str, int | None], anyio.Semaphore] = {}
        self._clients: dict[ClientCertificate | None, httpx.AsyncClient] = {}

    def __repr__(self) -> str:
        return f"<HttpTokenSource clients={len(self._clients)} ca_file={self._ca_file!r}>"

    # -- TokenSource ----------------------------------------------------------------------------

    async def open(self) -> None:
        return None

    async def prepare(self, provider: Provider) -> None:
        cert = provider.mtls_certificate()
        if (cert is None and self._user_client is not None) or cert in self._clients:
            return
        # Loading a CA bundle takes 15-25 ms and a client certificate a few
        # more: in a worker thread, so the event loop never stalls for it.
        client = await anyio.to_thread.run_sync(self._build_client, cert)
        if cert in self._clients:  # prepared concurrently meanwhile
            await client.aclose()
            return
        self._clients[cert] = client

    async def fetch(
        self,
        name: str,
        provider: Provider,
        *,
        previous: Token | None,
        rejected: bool,
        may_defer: bool = False,  # an HTTP request is never deferred
    ) -> TokenResponse:
        try:
            return await self._fetch(provider)
        except TokenRequestError as exc:
            exc.provider = name
            # min_length=0: the provider already left out secrets too short to scrub safely.
            raise scrub_error(exc, _sensitive(provider, previous), min_length=0) from exc.__cause__

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    # -- internals --------------------------------------------------------------------------------

    def _build_client(self, cert: ClientCertificate | None) -> httpx.AsyncClient:
        """An HTTP/2 client with verification on; runs in a worker thread."""
        context = ssl.create_default_context(cafile=self._ca_file or certifi.where())
        if cert is not None:
            cert.load_into(context)  # ConfigurationError naming the files, never their content
        return httpx.AsyncClient(
            http2=True,
            verify=context,
            # Token traffic is a trickle (one request per cell per refresh);
            # keep a few connections warm and no more.
            limits=httpx.Limits(
                max_connections=self._max_requests,
                max_keepalive_connections=min(self._max_requests, 10),
                keepalive_expiry=30.0,
            ),
            # No per-phase limits: the deadline is RefreshPolicy.request_timeout,
            # applied to the whole request (a read limit here would cut it short).
            timeout=httpx.Timeout(None),
            follow_redirects=False,
            # No proxies, netrc or SSL_CERT_FILE from the environment: a token
            # request carries credentials and must go where configured.  Pass
            # your own client= to use a proxy.
            trust_env=False,
        )

    async def _client_for(self, provider: Provider) -> httpx.AsyncClient:
        cert = provider.mtls_certificate()
        if cert is None and self._user_client is not None:
            return self._user_client
        client = self._clients.get(cert)
        if client is None:
            await self.prepare(provider)  # normally done when the provider was added
            client = self._clients[cert]
        return client

    async def _fetch(self, provider: Provider) -> TokenResponse:
        try:
            request = provider.build_request()
        except TokenRequestError:
            raise
        except Exception as exc:
            raise AdapterError(
                f"the {provider.kind} adapter failed to build the token request ({type(exc).__name__})"
            ) from None
        # Token answers are tiny: compression buys nothing, and a
        # decompression bomb is one less thing to defend against.
        request.headers["Accept-Encoding"] = "identity"
        client = await self._client_for(provider)
        url = request.url
        key = (url.host, url.port)
        host_slots = self._host_slots.get(key)
        if host_slots is None:
            host_slots = self._host_slots[key] = anyio.Semaphore(self._per_host)
        timeout = provider.refresh.request_timeout
        # The host's slot first: a request queued behind a hung host holds no global slot.
        async with host_slots, self._slots:
            try:
                # The deadline starts once the request has its slots.
                with anyio.fail_after(timeout):
                    response = await client.send(request, stream=True, follow_redirects=False)
                    try:
                        body = await read_capped(response, MAX_BODY_BYTES)
                    finally:
                        await response.aclose()
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise TokenEndpointTimeout(
                    f"no answer from the token endpoint {_where(url)} within {timeout:g} s "
                    f"({type(exc).__name__})",
                    hint="raise RefreshPolicy.request_timeout if the endpoint is known to be this slow",
                ) from exc
            except httpx.DecodingError:
                raise InvalidTokenResponse(
                    "token endpoint answered with a body that cannot be decoded"
                ) from None
            except (httpx.TransportError, h2.exceptions.ProtocolError) as exc:
                # h2 raises its own errors (InvalidBodyLengthError) when an
                # HTTP/2 answer is cut short; httpx does not map them.
                raise _transport_error(exc, url, provider, self._ca_file) from exc
            except TokenRequestError:
                raise
            except Exception as exc:
                raise AdapterError(
                    f"unexpected {type(exc).__name__} while sending the token request to {_where(url)}"
                ) from None
        try:
            return provider.parse_response(response.status_code, response.headers, body)
        except TokenRequestError:
            raise
        except Exception as exc:
            # Reported by type only: its text may quote the answer.
            raise AdapterError(
                f"the {provider.kind} adapter failed to parse the answer ({type(exc).__name__})",
                status_code=response.status_code,
            ) from None


#: Transport errors meaning "the server closed the connection before answering".
_DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def _where(url: httpx.URL) -> str:
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind a transport error, if there is one (httpx and httpcore chain them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _transport_error(
    exc: BaseException, url: httpx.URL, provider: Provider, ca_file: str | None
) -> TokenEndpointUnreachable:
    where = _where(url)
    tls = _ssl_error_in(exc)
    if tls is None:
        dropped = url.scheme == "https" and isinstance(exc, _DROPPED)
        if dropped and provider.mtls_certificate() is not None:
            # With TLS 1.3 a server that refuses our client certificate often
            # just closes the connection after the handshake, without an alert
            # (hypercorn does): no ssl.SSLError reaches us.  A drop before any
            # answer on a mutual-TLS connection is almost always that.
            return TokenEndpointTLSError(
                f"the token endpoint {where} closed the TLS connection before answering "
                f"({type(exc).__name__}): it most likely refused our client certificate",
                hint="check the client certificate (cert_file/key_file): expired, revoked, or signed "
                "by a CA the provider does not trust",
            )
        hint = (
            "if the endpoint requires mutual TLS, configure a client certificate for this provider"
            if dropped
            else None
        )
        return TokenEndpointUnreachable(
            f"cannot reach the token endpoint {where} ({type(exc).__name__})", hint=hint
        )
    if isinstance(tls, ssl.SSLCertVerificationError):
        detail = tls.verify_message or tls.reason or "verification failed"
        bundle = f"ca_file {ca_file!r}" if ca_file else "the default CA bundle (certifi)"
        return TokenEndpointTLSError(
            f"TLS certificate verification of the token endpoint {where} failed: {detail}",
            hint=f"the server's certificate is not trusted by {bundle}; set ca_file to the CA that "
            "signed it, or fix the server's certificate (expired, wrong host name)",
        )
    reason = str(tls.reason or type(tls).__name__)
    if provider.mtls_certificate() is not None:
        hint = (
            "the server refused our client certificate (cert_file/key_file): expired, revoked, "
            "or signed by a CA the provider does not trust"
        )
    else:
        hint = "the server may require a client certificate (mutual TLS), or speak no TLS we accept"
    return TokenEndpointTLSError(
        f"TLS with the token endpoint {where} failed: certificate verification by the server ({reason})",
        hint=hint,
    )


def _sensitive(provider: Provider, previous: Token | None) -> list[str]:
    """Every string this request or this cell could leak if a server quotes it back, longest first."""
    forms = set(provider.sensitive_strings())
    if previous is not None:
        forms.update(_encodings(previous.access_token))
    return sorted((form for form in forms if form), key=len, reverse=True)


def _encodings(value: str) -> Iterable[str]:
    yield value
    yield urllib.parse.quote_plus(value)
    yield urllib.parse.quote(value, safe="")
    yield json.dumps(value)[1:-1]
    yield base64.b64encode(value.encode()).decode()


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body, refused beyond *limit* bytes both on the wire and once decompressed.

    Token requests ask for ``Accept-Encoding: identity``; a server that
    compresses anyway is decoded here with the same cap, so a small
    compressed body cannot expand without bound.
    """
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise InvalidTokenResponse(
            f"token endpoint answered with {length} bytes; more than {limit} is refused",
            status_code=response.status_code,
        )
    if response.is_stream_consumed:
        # Already read (httpx.MockTransport answers in users' tests, say).
        body = response.content
        if len(body) > limit:
            raise InvalidTokenResponse(
                f"token endpoint answered with more than {limit} bytes", status_code=response.status_code
            )
        return body
    chunks: list[bytes] = []
    size = 0
    # aclosing: leaving early must close the generator now, not at garbage collection.
    async with contextlib.aclosing(cast("AsyncGenerator[bytes, None]", response.aiter_raw())) as raw:
        over = False
        async for chunk in raw:
            size += len(chunk)
            if size > limit:
                over = True
                break
            chunks.append(chunk)
        if over:
            # Over the cap.  Closing the response drops the connection; the
            # iterator then ends at once, and running it to its end lets
            # httpcore's nested generators finish instead of being collected
            # half-way (trio warns about those).
            await response.aclose()
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                async for _ in raw:
                    pass
            raise InvalidTokenResponse(
                f"token endpoint answered with more than {limit} bytes", status_code=response.status_code
            )
    body = b"".join(chunks)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in _ZLIB_WBITS:
        raise InvalidTokenResponse(
            f"token endpoint answered with unsupported Content-Encoding {encoding[:20]!r}",
            status_code=response.status_code,
        )
    try:
        decoder = zlib.decompressobj(_ZLIB_WBITS[encoding])
        decoded = decoder.decompress(body, limit + 1)
    except zlib.error:
        raise InvalidTokenResponse(
            "token endpoint answered with a body that cannot be decoded", status_code=response.status_code
        ) from None
    if len(decoded) > limit or decoder.unconsumed_tail:
        raise InvalidTokenResponse(
            f"token endpoint answered with more than {limit} bytes once decompressed",
            status_code=response.status_code,
        )
    return decoded


#: zlib window bits per Content-Encoding: gzip header, zlib header (RFC 9110's "deflate").
_ZLIB_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
