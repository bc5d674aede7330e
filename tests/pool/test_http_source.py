"""The HTTP token source against real servers on loopback: TLS, settings, deadlines, redirects,
per-host isolation, the body cap, scrubbing, HTTP/2 and HTTP/1.1.

The HTTP source is the part of the pool that sends token requests: it owns the
HTTP clients, the per-host and global request slots, the deadline, the body cap,
and the one place where exceptions become tokenpool errors.  Everything here
goes through the public API (``TokenPool``, ``pool.token()``, ``pool.refresh()``,
metrics, logs), so it holds whatever the module inside looks like.

Servers: the emulator (``emulator`` fixture), and tiny servers written here,
each an anyio listener on 127.0.0.1 running in the test's own event loop (so
they work on asyncio and trio alike).  Waits are bounded by generous
``fail_after`` only so that a regression cannot hang CI; nothing asserts speed.
The body cap on in-process responses (``read_capped``) is in ``test_http_body_cap.py``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import http
import json
import secrets
import ssl
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import pytest
import trustme
from anyio.abc import AnyByteStream, SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSAttribute, TLSListener
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from tokenpool import (
    AdapterError,
    ConfigurationError,
    CredentialsRejected,
    InvalidTokenResponse,
    RefreshPolicy,
    TokenEndpointError,
    TokenEndpointTimeout,
    TokenEndpointTLSError,
    TokenEndpointUnreachable,
    TokenPool,
    TokenRequestError,
    TokenResponse,
)
from tokenpool.providers import ClientCertificate, ClientCredentials
from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# On trio, a request whose connection fails while its body is being sent (an
# mTLS handshake the server refuses) leaves httpx's ByteStream async generator
# unexhausted, and trio warns when it is collected: httpx issue #3686 (see
# tests/pool/test_no_leaks.py).  Nothing of ours; applied to the mTLS tests only.
httpx_bytestream_warning = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in.*ByteStream\.__aiter__:pytest.PytestUnraisableExceptionWarning"
)


# -- tiny servers -----------------------------------------------------------------------------


@dataclass
class Request:
    """One HTTP/1.1 request as a tiny server received it (header names in lower case)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


#: What a tiny server does with a request: write (part of) an answer on the stream, or hang.
Respond = Callable[[Request, AnyByteStream], Awaitable[None]]

#: Errors a connection handler expects when the client gives up on it.
_GONE = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.DelimiterNotFound,
    ssl.SSLError,
    OSError,
)


@dataclass
class TinyServer:
    """A one-request-per-connection HTTP/1.1 server; counts what it saw."""

    respond: Respond
    port: int = 0
    #: Connections accepted so far (counted before anything is read).
    accepted: int = 0
    requests: list[Request] = field(default_factory=list)
    #: Set on the next accepted connection (the handler and the test share one event loop).
    _arrival: anyio.Event | None = field(default=None, repr=False)

    def url(self, path: str = "/token", *, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def wait_accepted(self, count: int) -> None:
        """Return once *count* connections have been accepted."""
        while self.accepted < count:
            self._arrival = anyio.Event()
            await self._arrival.wait()

    async def handle(self, stream: AnyByteStream) -> None:
        self.accepted += 1
        if self._arrival is not None:
            self._arrival.set()
        with contextlib.suppress(*_GONE):
            async with stream:
                reader = BufferedByteReceiveStream(stream)
                head = (await reader.receive_until(b"\r\n\r\n", 65_536)).decode("latin-1")
                request_line, *lines = head.split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.receive_exactly(length) if length else b""
                request = Request(method, target, headers, body)
                self.requests.append(request)
                await self.respond(request, stream)


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[AnyByteStream], Awaitable[None]], *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Run *handler* for every connection to 127.0.0.1:PORT (TLS with *tls*) and yield PORT."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = int(listener.extra(SocketAttribute.local_port))  # noqa: S610 - anyio, not Django
        async with anyio.create_task_group() as tg:
            if tls is None:
                tg.start_soon(listener.serve, handler)
            else:
                tg.start_soon(TLSListener(listener, tls, standard_compatible=False).serve, handler)
            try:
                yield port
            finally:
                tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def tiny_server(respond: Respond, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[TinyServer]:
    server = TinyServer(respond)
    async with serving(server.handle, tls=tls) as port:
        server.port = port
        yield server


def http_response(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answer(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Respond:
    async def respond(request: Request, stream: AnyByteStream) -> None:
        await stream.send(http_response(status, body, headers))

    return respond


def json_answer(status: int, document: object) -> Respond:
    return answer(status, json.dumps(document).encode(), {"Content-Type": "application/json"})


def token_document(access_token: str = "", expires_in: float = 600) -> dict[str, Any]:
    access_token = access_token or "tiny-server-token"
    return {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in}


async def hang(request: Request, stream: AnyByteStream) -> None:
    """Read the request, never answer."""
    await anyio.sleep_forever()


# -- providers and pools ----------------------------------------------------------------------


def client_credentials(token_url: str, **kwargs: Any) -> ClientCredentials:
    kwargs.setdefault("client_id", "tiny-client")
    kwargs.setdefault("client_secret", "tiny-client-secret-0123456789")
    return ClientCredentials(token_url=token_url, **kwargs)


def generic(emulator: EmulatorProcess, *, base: str | None = None, **kwargs: Any) -> ClientCredentials:
    client_id, client_secret = emulator.credentials("generic")
    base = emulator.url("generic") if base is None else base
    return ClientCredentials(
        token_url=f"{base}/oauth/token", client_id=client_id, client_secret=client_secret, **kwargs
    )


@dataclass(frozen=True, eq=False, kw_only=True)
class MutualTLSCredentials(ClientCredentials):
    """RFC 6749 client credentials over mutual TLS; unlike NtxPayMX it never reads the certificate itself."""

    client_certificate: ClientCertificate | None = None

    def mtls_certificate(self) -> ClientCertificate | None:
        return self.client_certificate


def lazy_pool(providers: Mapping[str, ClientCredentials], **kwargs: Any) -> TokenPool:
    kwargs.setdefault("metrics", False)
    return TokenPool(providers, warm_up="lazy", **kwargs)


def failures(registry: CollectorRegistry, reason: str) -> float:
    """``tokenpool_refresh_failures_total{reason=...}`` summed over *registry* (one pool, one provider)."""
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "tokenpool_refresh_failures_total" and sample.labels.get("reason") == reason
    )


def token_requests(emulator: EmulatorProcess, provider: str = "generic") -> int:
    return int(emulator.stats(events=False)["providers"][provider]["token_requests"])


async def token_error(pool: TokenPool, name: str = "acme") -> TokenRequestError:
    with anyio.fail_after(60), pytest.raises(TokenRequestError) as info:
        await pool.token(name)
    return info.value


def everything_shown(error: BaseException, *more: object) -> str:
    """All an operator could see of *error* (and of *more*): str, repr, attributes, the traceback chain."""
    parts = [str(error), repr(error), repr(vars(error)), repr(error.args)]
    parts.extend(traceback.format_exception(error))
    parts.extend(repr(item) for item in more)
    return "\n".join(parts)


# -- TLS --------------------------------------------------------------------------------------


def host_port(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.host}:{parsed.port}"


def assert_names_server_certificate_verification(error: TokenRequestError, where: str) -> None:
    text = str(error)
    assert "certificate" in text.lower(), text
    assert "verif" in text.lower(), text
    assert where in text, text


async def test_a_server_certificate_from_an_unknown_ca_is_a_tls_error_that_points_at_ca_file(
    emulator: EmulatorProcess,
) -> None:
    registry = CollectorRegistry()
    # No ca_file: certifi's bundle does not know the emulator's throw-away CA.
    async with lazy_pool({"acme": generic(emulator)}, metrics=registry) as pool:
        error = await token_error(pool)
    assert isinstance(error, TokenEndpointTLSError), repr(error)
    assert error.reason == "tls"
    assert_names_server_certificate_verification(error, host_port(emulator.url("generic")))
    assert "ca_file" in str(error)
    assert failures(registry, "tls") == 1
    assert failures(registry, "unreachable") == 0
    assert token_requests(emulator) == 0  # the handshake failed: no request reached the endpoint


async def test_an_expired_server_certificate_is_a_tls_error(tmp_path: Path) -> None:
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue_cert(
        "127.0.0.1",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    expired.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    registry = CollectorRegistry()
    async with tiny_server(json_answer(200, token_document()), tls=server_context) as server:
        provider = client_credentials(server.url(scheme="https"))
        async with lazy_pool({"acme": provider}, ca_file=ca_file, metrics=registry) as pool:
            error = await token_error(pool)
    assert isinstance(error, TokenEndpointTLSError), repr(error)
    assert error.reason == "tls"
    assert_names_server_certificate_verification(error, f"127.0.0.1:{server.port}")
    assert failures(registry, "tls") == 1
    assert server.requests == []


def write_leaf(leaf: trustme.LeafCert, directory: Path, name: str) -> ClientCertificate:
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(leaf.cert_chain_pems[0].bytes())
    key_file.write_bytes(leaf.private_key_pem.bytes())
    return ClientCertificate(cert_file=str(cert_file), key_file=str(key_file))


def mtls_base(emulator: EmulatorProcess) -> str:
    """The generic provider on the emulator's mutual-TLS listener."""
    return str(emulator.info["urls"]["generic"]["mtls"])


async def test_the_right_client_certificate_passes_the_mtls_listener(emulator: EmulatorProcess) -> None:
    # The control for the next test: the same adapter and listener work with a good certificate.
    client_id, client_secret = emulator.credentials("generic")
    provider = MutualTLSCredentials(
        token_url=f"{mtls_base(emulator)}/oauth/token",
        client_id=client_id,
        client_secret=client_secret,
        client_certificate=emulator.client_cert,
    )
    async with lazy_pool({"acme": provider}, ca_file=emulator.ca_file) as pool:
        assert (await pool.token("acme")).access_token
    assert token_requests(emulator) == 1


@httpx_bytestream_warning
@pytest.mark.parametrize("certificate", ["none", "from another CA", "expired"])
async def test_a_client_certificate_the_server_refuses_is_a_tls_error_that_names_it(
    emulator: EmulatorProcess, tmp_path: Path, certificate: str
) -> None:
    cert: ClientCertificate | None = None
    if certificate == "from another CA":
        cert = write_leaf(trustme.CA().issue_cert("payout-worker.tokenpool.test"), tmp_path, "foreign")
    elif certificate == "expired":
        cert = emulator.expired_client_cert
    client_id, client_secret = emulator.credentials("generic")
    provider = MutualTLSCredentials(
        token_url=f"{mtls_base(emulator)}/oauth/token",
        client_id=client_id,
        client_secret=client_secret,
        client_certificate=cert,
    )
    registry = CollectorRegistry()
    async with lazy_pool({"acme": provider}, ca_file=emulator.ca_file, metrics=registry) as pool:
        error = await token_error(pool)
    text = str(error)
    assert "client certificate" in text.lower(), text
    assert host_port(mtls_base(emulator)) in text, text
    assert token_requests(emulator) == 0
    if cert is None:
        # Without a certificate of ours, a server that hangs up after the handshake is not
        # told apart from any other drop; the hint still names the likely cause.
        assert type(error) is TokenEndpointUnreachable, repr(error)
        assert failures(registry, "unreachable") == 1
        return
    assert isinstance(error, TokenEndpointTLSError), repr(error)
    assert error.reason == "tls"
    assert failures(registry, "tls") == 1


# -- settings errors: raised when the pool is built or entered, never at a fetch --------------


def test_a_missing_ca_file_is_refused_when_the_pool_is_built() -> None:
    provider = client_credentials("https://127.0.0.1:9/token")  # never contacted
    with pytest.raises(ConfigurationError, match="ca_file"):
        TokenPool({"acme": provider}, ca_file="/does/not/exist", metrics=False)


def encrypted_client_certificate(directory: Path, password: bytes) -> tuple[Path, Path]:
    leaf = trustme.CA().issue_cert("payout-worker.tokenpool.test")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    cert_file, key_file = directory / "client.pem", directory / "client.key"
    cert_file.write_bytes(leaf.cert_chain_pems[0].bytes())
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize("problem", ["garbage", "wrong key password"])
async def test_an_unloadable_client_certificate_is_refused_when_the_pool_is_entered(
    tmp_path: Path, problem: str
) -> None:
    right_password, wrong_password = "right-horse-battery-staple", "wrong-horse-battery-staple"
    if problem == "garbage":
        cert_file = key_file = tmp_path / "client.pem"
        cert_file.write_bytes(b"GARBAGE-CERTIFICATE-CONTENT, not PEM at all\n" * 4)
        certificate = ClientCertificate(cert_file=str(cert_file), key_file=str(key_file))
    else:
        cert_file, key_file = encrypted_client_certificate(tmp_path, right_password.encode())
        certificate = ClientCertificate(
            cert_file=str(cert_file), key_file=str(key_file), password=wrong_password
        )
    provider = MutualTLSCredentials(
        token_url="https://127.0.0.1:9/token",  # never contacted
        client_id="tiny-client",
        client_secret="tiny-client-secret-0123456789",
        client_certificate=certificate,
    )
    # Lazy: nothing is fetched while entering, so the error cannot come from a token request.
    with anyio.fail_after(30), pytest.raises(ConfigurationError) as info:
        async with lazy_pool({"acme": provider}):
            pass
    shown = everything_shown(info.value)
    assert cert_file.name in str(info.value)
    forbidden = [right_password, wrong_password, "GARBAGE-CERTIFICATE-CONTENT", "-----BEGIN"]
    forbidden += [line for path in {cert_file, key_file} for line in _pem_lines(path)]
    assert [item for item in forbidden if item in shown] == []


def _pem_lines(path: Path) -> list[str]:
    return [line for line in path.read_text("latin-1").splitlines() if len(line) >= 24]


# -- the one place where exceptions become tokenpool errors -----------------------------------


class BrokenAdapter(ClientCredentials):
    """An adapter with a bug: its parser raises something that is not a tokenpool error."""

    def _parse(self, status_code: int, headers: Mapping[str, str], body: bytes) -> TokenResponse:
        raise ValueError(f"ADAPTER-BUG-TEXT quoting the body {body[:60]!r}")


async def test_an_adapter_that_raises_is_an_adapter_error_reported_by_type(
    log_events: list[MutableMapping[str, Any]],
) -> None:
    registry = CollectorRegistry()
    async with tiny_server(json_answer(200, token_document("the-answer-was-fine"))) as server:
        provider = BrokenAdapter(
            token_url=server.url(), client_id="tiny-client", client_secret="tiny-client-secret-0123456789"
        )
        async with lazy_pool({"acme": provider}, metrics=registry) as pool:
            error = await token_error(pool)
    assert isinstance(error, AdapterError), repr(error)
    assert error.reason == "adapter_error"
    assert error.provider == "acme"
    assert "ValueError" in str(error)
    shown = everything_shown(error, log_events)
    assert "ADAPTER-BUG-TEXT" not in shown
    assert "the-answer-was-fine" not in shown
    assert failures(registry, "adapter_error") == 1
    assert failures(registry, "unreachable") == failures(registry, "invalid_response") == 0
    reasons = [
        event.get("reason") for event in log_events if str(event["event"]).startswith("token.refresh.")
    ]
    assert "adapter_error" in reasons
    assert "unreachable" not in reasons


# -- deadlines --------------------------------------------------------------------------------


async def headers_then_silence(request: Request, stream: AnyByteStream) -> None:
    await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    await anyio.sleep_forever()


async def trickle(request: Request, stream: AnyByteStream) -> None:
    """A byte at a time, forever: no single read ever waits long, only the whole request does."""
    await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n")
    while True:
        await stream.send(b" ")
        await anyio.sleep(0.02)


@pytest.mark.parametrize(
    "respond",
    [pytest.param(hang, id="silent"), headers_then_silence, trickle],
)
async def test_an_endpoint_that_does_not_answer_in_time_is_a_timeout(respond: Respond) -> None:
    registry = CollectorRegistry()
    async with tiny_server(respond) as server:
        provider = client_credentials(server.url(), refresh=RefreshPolicy(request_timeout=0.3))
        async with lazy_pool({"acme": provider}, metrics=registry) as pool:
            error = await token_error(pool)
    assert isinstance(error, TokenEndpointTimeout), repr(error)
    assert error.reason == "timeout"
    assert error.provider == "acme"
    assert failures(registry, "timeout") == 1
    assert failures(registry, "unreachable") == 0
    assert server.accepted == 1


# -- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307, 308])
@pytest.mark.parametrize("client", ["the pool's own", "a user client with follow_redirects=True"])
async def test_token_requests_never_follow_redirects(client: str, status: int) -> None:
    async with (
        tiny_server(json_answer(200, token_document("from-the-redirect-target"))) as elsewhere,
        tiny_server(answer(status, headers={"Location": elsewhere.url()})) as endpoint,
        httpx.AsyncClient(follow_redirects=True) as user_client,
    ):
        options: dict[str, Any] = {"client": user_client} if client.startswith("a user") else {}
        provider = client_credentials(endpoint.url(), auth_method="client_secret_post")
        async with lazy_pool({"acme": provider}, **options) as pool:
            error = await token_error(pool)
    assert isinstance(error, TokenRequestError)
    assert len(endpoint.requests) == 1
    assert elsewhere.accepted == 0  # the credentials in the body went nowhere else


# -- isolation: per-host request slots --------------------------------------------------------


async def test_a_hung_token_host_does_not_hold_up_a_healthy_one(emulator: EmulatorProcess) -> None:
    async with tiny_server(hang) as hung:
        slow = RefreshPolicy(request_timeout=120)
        # "localhost" and the emulator's "127.0.0.1" are different hosts to the pool's slots.
        hung_names = [f"hung-{i}" for i in range(25)]
        providers = {
            name: client_credentials(hung.url(host="localhost"), refresh=slow) for name in hung_names
        }
        providers["healthy"] = generic(emulator)
        outcomes: dict[str, str] = {}

        async def hung_call(pool: TokenPool, name: str) -> None:
            try:
                await pool.token(name)
            except TokenRequestError as exc:
                outcomes[name] = type(exc).__name__
            else:
                outcomes[name] = "token"

        # Default slots: max_concurrent_requests=20, max_requests_per_host=4.
        async with (
            lazy_pool(providers, ca_file=emulator.ca_file) as pool,
            anyio.create_task_group() as tg,
        ):
            for name in hung_names:
                tg.start_soon(hung_call, pool, name)
            with anyio.fail_after(30):  # only so that a regression cannot hang CI
                await hung.wait_accepted(4)
            with anyio.fail_after(60):  # only so that today's FIFO does not hang CI
                token = await pool.token("healthy")
            still_pending = [name for name in hung_names if name not in outcomes]
            accepted = hung.accepted
            tg.cancel_scope.cancel()
    assert token.access_token
    finished = len(hung_names) - len(still_pending)
    assert finished == 0, (
        f"{finished} hung calls gave up before the healthy token came: it queued behind them"
    )
    assert accepted <= 4  # at most max_requests_per_host connections to the hung host at once
    assert token_requests(emulator) == 1


# -- the body cap -----------------------------------------------------------------------------


def padded_token(padding: int) -> bytes:
    """A valid token answer made huge: only a cap on the body can refuse it."""
    return json.dumps({**token_document("padded"), "padding": "0" * padding}).encode()


async def declared_huge(request: Request, stream: AnyByteStream) -> None:
    await stream.send(http_response(200, padded_token(1 << 20), {"Content-Type": "application/json"}))


async def chunked_huge(request: Request, stream: AnyByteStream) -> None:
    await stream.send(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )
    body = padded_token(1 << 20)
    for start in range(0, len(body), 16_384):
        chunk = body[start : start + 16_384]
        await stream.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await stream.send(b"0\r\n\r\n")


async def gzip_bomb(request: Request, stream: AnyByteStream) -> None:
    body = gzip.compress(padded_token(10 << 20))
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    await stream.send(http_response(200, body, headers))


@pytest.mark.parametrize("respond", [declared_huge, chunked_huge, gzip_bomb])
async def test_a_huge_answer_is_refused(respond: Respond) -> None:
    async with (
        tiny_server(respond) as server,
        lazy_pool({"acme": client_credentials(server.url())}) as pool,
    ):
        error = await token_error(pool)
    assert isinstance(error, InvalidTokenResponse), repr(error)


# -- scrubbing: what the endpoint quotes back never reaches an error or a log ----------------

CLIENT_ID = "scrub-client"
SECRET = 'Zx9+/q=w"e\\r é&t%y-LONG-ENOUGH'


def secret_forms(client_id: str, secret: str) -> dict[str, str]:
    """The secret as it travels (and as a server may quote it back), by a label that is safe to print."""
    quote = urllib.parse.quote_plus

    def basic(pair: str) -> str:
        return base64.b64encode(pair.encode()).decode("ascii")

    return {
        "the secret": secret,
        "the secret, form-encoded": quote(secret),
        "the secret, JSON-escaped": json.dumps(secret)[1:-1],
        "the secret, JSON-escaped keeping non-ASCII": json.dumps(secret, ensure_ascii=False)[1:-1],
        "the HTTP Basic credentials (RFC 6749 form-encoded)": basic(f"{quote(client_id)}:{quote(secret)}"),
        "the HTTP Basic credentials (raw)": basic(f"{client_id}:{secret}"),
        "the secret's tail": secret[-11:],  # what a truncated quote would still show
    }


AuthMethod = Literal["client_secret_basic", "client_secret_post"]

#: What the endpoint quotes back: name → (auth method, echo built from the request it received).
ECHOES: dict[str, tuple[AuthMethod, Callable[[Request], str]]] = {
    "the secret": ("client_secret_basic", lambda request: SECRET),
    "the secret, form-encoded": ("client_secret_basic", lambda request: urllib.parse.quote_plus(SECRET)),
    "the secret, JSON-escaped": ("client_secret_basic", lambda request: json.dumps(SECRET)[1:-1]),
    "the secret, JSON-escaped keeping non-ASCII": (
        "client_secret_basic",
        lambda request: json.dumps(SECRET, ensure_ascii=False)[1:-1],
    ),
    "the Authorization header": ("client_secret_basic", lambda request: request.headers["authorization"]),
    "the form body": ("client_secret_post", lambda request: request.body.decode("ascii")),
}


def error_answer(kind: str, text: str) -> bytes:
    if kind == "400 JSON":
        document = {"error": "invalid_client", "error_description": text}
        return http_response(400, json.dumps(document).encode(), {"Content-Type": "application/json"})
    if kind == "503 JSON":
        document = {"error": "temporarily_unavailable", "error_description": text}
        return http_response(503, json.dumps(document).encode(), {"Content-Type": "application/json"})
    assert kind == "500 text"
    return http_response(500, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})


ERROR_ANSWERS = ["400 JSON", "503 JSON", "500 text"]


def leaks(needles: Mapping[str, str], haystack: str) -> list[str]:
    return [label for label, value in needles.items() if value in haystack]


def logged(events: Iterable[MutableMapping[str, Any]]) -> str:
    return "\n".join(repr(dict(event)) for event in events)


@pytest.mark.parametrize("kind", ERROR_ANSWERS)
@pytest.mark.parametrize("echo", list(ECHOES))
async def test_credentials_quoted_back_by_the_endpoint_never_show(
    echo: str, kind: str, log_events: list[MutableMapping[str, Any]]
) -> None:
    auth_method, build_echo = ECHOES[echo]

    async def respond(request: Request, stream: AnyByteStream) -> None:
        await stream.send(error_answer(kind, build_echo(request)))

    async with tiny_server(respond) as server:
        provider = ClientCredentials(
            token_url=server.url(), client_id=CLIENT_ID, client_secret=SECRET, auth_method=auth_method
        )
        async with lazy_pool({"acme": provider}) as pool:
            error = await token_error(pool)
            statistics = pool.statistics()
    assert isinstance(error, CredentialsRejected if kind == "400 JSON" else TokenEndpointError), repr(error)
    needles = secret_forms(CLIENT_ID, SECRET)
    assert leaks(needles, everything_shown(error, statistics)) == []
    assert leaks(needles, logged(log_events)) == []


@pytest.mark.parametrize("kind", ERROR_ANSWERS)
async def test_a_failing_refresh_never_quotes_the_token_being_served(
    kind: str, log_events: list[MutableMapping[str, Any]]
) -> None:
    served = "served-" + secrets.token_urlsafe(24)
    answered: list[Request] = []

    async def respond(request: Request, stream: AnyByteStream) -> None:
        answered.append(request)
        if len(answered) == 1:  # the first request gets the token, every later one an error quoting it
            await stream.send(http_response(200, json.dumps(token_document(served)).encode()))
        else:
            await stream.send(error_answer(kind, f"you already hold {served}; stop asking"))

    async with (
        tiny_server(respond) as server,
        lazy_pool({"acme": client_credentials(server.url())}) as pool,
    ):
        assert (await pool.token("acme")).access_token == served
        with anyio.fail_after(60), pytest.raises(TokenRequestError) as info:
            await pool.refresh("acme")
        # The refresh failed; the token it quoted is still the one being served.
        assert (await pool.token("acme")).access_token == served
        statistics = pool.statistics()
    assert len(server.requests) == 2
    assert served not in everything_shown(info.value, statistics)
    assert served not in logged(log_events)


# -- HTTP/2 and HTTP/1.1 ----------------------------------------------------------------------


@dataclass
class Relay:
    """What a recording relay saw of each connection: the ALPN protocol and the client's first bytes."""

    port: int = 0
    protocols: list[str | None] = field(default_factory=list)
    prefaces: list[bytes] = field(default_factory=list)


async def _pump(source: AnyByteStream, sink: AnyByteStream, done: anyio.CancelScope) -> None:
    with contextlib.suppress(*_GONE):
        async for chunk in source:
            await sink.send(chunk)
    done.cancel()


@contextlib.asynccontextmanager
async def recording_relay(
    upstream: str, *, upstream_ca: str, tls: ssl.SSLContext | None
) -> AsyncIterator[Relay]:
    """A byte relay to *upstream* (TLS terminated here when *tls* is given) that records the protocol."""
    target = httpx.URL(upstream)
    assert target.port is not None
    upstream_host, upstream_port = target.host, int(target.port)
    relay = Relay()

    async def handle(client: AnyByteStream) -> None:
        protocol = client.extra(TLSAttribute.alpn_protocol, None) if tls else None  # noqa: S610 - anyio
        with contextlib.suppress(*_GONE):
            async with client:
                if target.scheme == "https":
                    context = ssl.create_default_context(cafile=upstream_ca)
                    context.set_alpn_protocols([protocol or "http/1.1"])
                    server: AnyByteStream = await anyio.connect_tcp(
                        upstream_host,
                        upstream_port,
                        ssl_context=context,
                        tls_hostname=upstream_host,
                        tls_standard_compatible=False,
                    )
                else:
                    server = await anyio.connect_tcp(upstream_host, upstream_port)
                async with server:
                    first = await client.receive()
                    relay.protocols.append(protocol)
                    relay.prefaces.append(first)
                    await server.send(first)
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_pump, client, server, tg.cancel_scope)
                        tg.start_soon(_pump, server, client, tg.cancel_scope)

    async with serving(handle, tls=tls) as port:
        relay.port = port
        yield relay


def relay_tls(tmp_path: Path, alpn: list[str]) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(alpn)
    ca_file = tmp_path / "relay-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n"


@pytest.mark.parametrize(
    ("listener", "alpn", "expected"),
    [
        pytest.param("https", ["h2", "http/1.1"], "HTTP/2", id="TLS offering h2"),
        pytest.param("https", ["http/1.1"], "HTTP/1.1", id="TLS offering only http/1.1"),
        pytest.param("http", None, "HTTP/1.1", id="plain http"),
    ],
)
async def test_the_pools_own_client_speaks_http2_and_http1(
    emulator: EmulatorProcess, tmp_path: Path, listener: str, alpn: list[str] | None, expected: str
) -> None:
    upstream = emulator.url("generic", tls=listener == "https")
    tls, ca_file = relay_tls(tmp_path, alpn) if alpn is not None else (None, None)
    async with recording_relay(upstream, upstream_ca=emulator.ca_file, tls=tls) as relay:
        scheme = "https" if tls is not None else "http"
        provider = generic(emulator, base=f"{scheme}://127.0.0.1:{relay.port}/generic")
        options: dict[str, Any] = {"ca_file": ca_file} if ca_file is not None else {}
        async with lazy_pool({"acme": provider}, **options) as pool:
            token = await pool.token("acme")
    assert token.access_token
    assert token_requests(emulator) == 1
    assert len(relay.prefaces) == 1
    if expected == "HTTP/2":
        assert relay.protocols == ["h2"]
        assert relay.prefaces[0].startswith(HTTP2_PREFACE)
    else:
        assert relay.protocols == (["http/1.1"] if tls is not None else [None])
        assert relay.prefaces[0].startswith(b"POST /generic/oauth/token HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("tls", "client_options", "expected"),
    [
        pytest.param(True, {"http2": True}, "HTTP/2", id="TLS, http2=True"),
        pytest.param(True, {}, "HTTP/1.1", id="TLS, httpx default"),
        pytest.param(False, {"http1": False, "http2": True}, "HTTP/2", id="h2c prior knowledge"),
        pytest.param(False, {}, "HTTP/1.1", id="plain http, httpx default"),
    ],
)
async def test_a_user_client_works_over_http2_and_http1(
    emulator: EmulatorProcess, tls: bool, client_options: dict[str, Any], expected: str
) -> None:
    versions: list[str] = []

    async def record(response: httpx.Response) -> None:
        versions.append(response.http_version)

    async with httpx.AsyncClient(
        verify=emulator.ssl_context(), event_hooks={"response": [record]}, **client_options
    ) as client:
        provider = generic(emulator, base=emulator.url("generic", tls=tls))
        async with lazy_pool({"acme": provider}, client=client) as pool:
            token = await pool.token("acme")
    assert token.access_token
    assert versions == [expected]
    assert token_requests(emulator) == 1
