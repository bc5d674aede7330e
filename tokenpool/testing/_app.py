"""The emulator itself: a plain ASGI 3 application holding every provider's state in memory.

One :class:`EmulatorApp` speaks the five providers' token endpoints exactly as
their documentation shows (``provider-docs/``), plus a generic RFC 6749 §4.4
one, and a resource endpoint per provider that checks bearer tokens against
the server's own clock.  Everything lives in dicts and plain integers: the
benchmark harness sends thousands of resource calls a second, so the hot path
is a dict lookup, a clock read and a few comparisons.

Paths (the same on every listener)::

    POST /ntxmx/api/auth/token                   JSON clientId/clientSecret + X-SSL-Client-Cert → 201
    POST /ntxpix/oauth/token                     JSON clientId/clientSecret → 200
    POST /payme/token                            JSON action/grant_type/audience/… + ALG-API-VERSION
    POST /zertiban/idp/oauth2/token              form grant_type + HTTP Basic
    POST /navro/authentication/{company}/token   form grant_type/scope + HTTP Basic + X-API-Version
    POST /generic/oauth/token                    RFC 6749 §4.4 (client_secret_basic or _post)
    *    /{provider}/api/resource                bearer-protected resource
    POST /ntxmx/api/spei/cash-out                bearer-protected, 201 {"status": "PENDING"}
    GET|POST /_admin/...                         stats, faults, revocation, revoke-on-issue, rotation,
                                                 lifetimes, reset

The admin API is described by ``GET /_admin/``.

Revoke on issue (``set_revoke_on_issue`` / ``POST /_admin/revoke-on-issue``), per
provider, off by default and after a reset: like a token server that keeps one
live token per client, issuing a token to a client revokes every earlier token
of that provider and client that is still live (not revoked, not expired); its
resource calls then get 401 ``revoked``.  Other clients' and providers' tokens
are untouched; the provider's ``revoked_on_issue`` counter says how many were hit.

Resource calls are checked in this order: the bearer token (present, known,
issued by this provider, not revoked, not expired by the server's clock; else
401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and a JSON
``reason`` of ``missing``, ``unknown``, ``revoked`` or ``expired``), then the
provider's required headers (400), then scopes (403).

Faults (``add_fault`` / ``POST /_admin/faults``), per provider, any combination
in one spec, several specs stacking:

* ``latency``: seconds before answering token requests (``resource_latency``: resource calls);
* ``status`` (+ ``retry_after``): the token endpoint answers that status instead;
* ``malformed``: a broken 2xx answer instead of a good one (see :data:`MALFORMED_KINDS`);
  ``bad_expires_in``, ``zero_expires_in`` and ``wrong_token_type`` still issue a real token;
* ``drop``: the answer starts and breaks off (a protocol error for the client);
* ``duration``: seconds after which the fault lapses; ``count``: how many requests it
  applies to (each request it sees uses one, whatever the request's own outcome).

Counters (``stats()``) are plain integers updated on the single event loop, so
they are exact; ``token_failures`` is keyed by HTTP status, or ``dropped`` /
``disconnected``; ``revoke_on_issue`` is that mode's current setting and
``revoked_on_issue`` the number of tokens it revoked; the event timeline
(``token_request``, ``token_issued``, ``token_failure``, ``resource_401``) uses
seconds since the app started.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hashlib
import heapq
import json
import math
import re
import secrets
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from ._constants import DEFAULT_LIFETIMES, PROVIDERS

__all__ = ["MALFORMED_KINDS", "ClientSpec", "EmulatorApp", "EmulatorSettings", "default_clients"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Kinds of broken 2xx token answers the ``malformed`` fault can produce.
MALFORMED_KINDS: Final[frozenset[str]] = frozenset(
    {
        "html",
        "not_json",
        "empty",
        "missing_access_token",
        "bad_expires_in",
        "zero_expires_in",
        "wrong_token_type",
        "success_false",
    }
)

PAYME_API_VERSION: Final = b"1709847567"
NTXMX_SCOPE: Final = "email profile"
NTXPIX_SCOPE: Final = "pix:read pix:write balance:read"
PAYME_SCOPE: Final = "create:token post:charges get:charges delete:charges"
NAVRO_COMPANY: Final = "acme-payouts"
# A fixed namespace so that the generated business UUIDs are the same on every run.
_BUSINESS_NAMESPACE: Final = uuid.UUID("6f1d4c52-5b0e-4c39-9a43-7d1f0f2f6a10")

_MAX_TOKEN_BODY: Final = 64 * 1024
_MAX_ADMIN_BODY: Final = 1024 * 1024
_MAX_CLIENT_KEYS: Final = 1000
_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
}
_NO_STORE: Final = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))
_PAYME_SCOPE_BY_METHOD: Final = {
    "GET": "get:charges",
    "HEAD": "get:charges",
    "POST": "post:charges",
    "PUT": "post:charges",
    "PATCH": "post:charges",
    "DELETE": "delete:charges",
}


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One registered client of one provider.

    Args:
        client_id: The client identifier.
        client_secret: Its secret (rotations replace it until :meth:`EmulatorApp.reset`).
        scope: Space-separated scopes the client may be granted (NTX PIX grants
            these; an empty string means the provider's documented scopes).
        business_uuids: Zertiban: the ``businessUuid`` values accepted in ``x-tenant-id``.
        company: Navro: the company name in the token path.
    """

    client_id: str
    client_secret: str
    scope: str = ""
    business_uuids: tuple[str, ...] = ()
    company: str | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (it contains the secret: this is a test server)."""
        doc: dict[str, Any] = {"client_id": self.client_id, "client_secret": self.client_secret}
        if self.scope:
            doc["scope"] = self.scope
        if self.business_uuids:
            doc["business_uuids"] = list(self.business_uuids)
        if self.company is not None:
            doc["company"] = self.company
        return doc


def _business_uuids(count: int) -> tuple[str, ...]:
    return tuple(str(uuid.uuid5(_BUSINESS_NAMESPACE, f"zertiban-business-{index}")) for index in range(count))


def default_clients(*, business_count: int = 1000) -> dict[str, tuple[ClientSpec, ...]]:
    """One client per provider with fresh random secrets.

    Zertiban's client operates *business_count* businesses whose UUIDs are
    deterministic (the same on every run); Navro's client belongs to the
    company ``acme-payouts``; the generic client's secret contains characters
    that RFC 6749 §2.3.1 form-encoding changes (``+ / : %``), so a client that
    encodes and one that does not are both exercised.
    """

    def secret() -> str:
        return secrets.token_urlsafe(24)  # 32 characters: inside NTX PIX's 8–64 rule

    def ident(prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(4)}"

    return {
        "ntxmx": (ClientSpec(ident("ntxmx-sandbox"), secret(), scope=NTXMX_SCOPE),),
        "ntxpix": (ClientSpec(ident("ntxpix"), secret(), scope=NTXPIX_SCOPE),),
        "payme": (ClientSpec(ident("payme"), secret(), scope=PAYME_SCOPE),),
        "zertiban": (
            ClientSpec(ident("zertiban"), secret(), business_uuids=_business_uuids(business_count)),
        ),
        "navro": (ClientSpec(ident("navro"), secret(), company=NAVRO_COMPANY),),
        "generic": (ClientSpec(ident("generic-client"), secret() + "+/:%"),),
    }


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    """How an :class:`EmulatorApp` behaves.

    Args:
        lifetime_scale: Multiplies every provider's documented lifetime; the
            ``expires_in`` sent is ``max(1, round(L * scale))``.
        clients: Registered clients per provider (the first one is the
            provider's default); ``None`` generates :func:`default_clients`.
        trusted_ca_pem: The CA that must have issued NTX MX's forwarded client
            certificates; ``None`` accepts any parseable, unexpired, unrevoked one.
        revoked_cert_pems: Client certificates to treat as revoked.
        clock: The server clock (``time.monotonic`` in a real server).
        event_capacity: How many timeline events :meth:`EmulatorApp.stats` keeps.
        expired_token_grace: How long an expired token is remembered (so it is
            reported as ``expired`` rather than ``unknown``) before it is pruned.
        business_count: Zertiban businesses of the generated default client.
    """

    lifetime_scale: float = 1.0
    clients: Mapping[str, Sequence[ClientSpec]] | None = None
    trusted_ca_pem: bytes | None = None
    revoked_cert_pems: tuple[bytes, ...] = ()
    clock: Callable[[], float] = time.monotonic
    event_capacity: int = 50_000
    expired_token_grace: float = 300.0
    business_count: int = 1000

    def __post_init__(self) -> None:
        _check_scale(self.lifetime_scale)
        if self.event_capacity < 0:
            raise ValueError("event_capacity must not be negative")
        if not self.expired_token_grace >= 0:
            raise ValueError("expired_token_grace must not be negative")
        if self.clients is not None:
            for name, specs in self.clients.items():
                if name not in PROVIDERS:
                    raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}")
                if not specs:
                    raise ValueError(f"provider {name!r} needs at least one client")


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not (0 < scale < math.inf):
        raise ValueError(f"lifetime scale must be a positive finite number, got {scale!r}")
    return float(scale)


# --------------------------------------------------------------------------- runtime state


class _Client:
    __slots__ = ("businesses", "scope_order", "scopes", "secret", "spec", "tokens")

    def __init__(self, spec: ClientSpec, default_scope: str) -> None:
        self.spec = spec
        self.secret = spec.client_secret
        self.scope_order = tuple((spec.scope or default_scope).split())
        self.scopes = frozenset(self.scope_order)
        self.businesses = frozenset(spec.business_uuids)
        # The tracked tokens issued to this client (pruned with the app's table),
        # so that revoke-on-issue touches only this client's tokens.
        self.tokens: dict[str, _Token] = {}


class _Token:
    __slots__ = ("client", "expires_at", "provider", "revoked", "scopes")

    def __init__(self, provider: str, client: _Client, scopes: frozenset[str], expires_at: float) -> None:
        self.provider = provider
        self.client = client
        self.scopes = scopes
        self.expires_at = expires_at
        self.revoked = False


class _Fault:
    __slots__ = (
        "drop",
        "id",
        "latency",
        "malformed",
        "remaining",
        "resource_latency",
        "retry_after",
        "status",
        "until",
    )

    def __init__(self, fault_id: int, spec: Mapping[str, Any], now: float) -> None:
        known = {"provider", "latency", "resource_latency", "status", "retry_after", "malformed"}
        known |= {"drop", "duration", "count"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        self.id = fault_id
        self.latency = _seconds(spec.get("latency"), "latency")
        self.resource_latency = _seconds(spec.get("resource_latency"), "resource_latency")
        status = spec.get("status")
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 599
        ):
            raise ValueError("status must be an integer HTTP status between 300 and 599")
        self.status: int | None = status
        retry_after = spec.get("retry_after")
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, int | float | str)
        ):
            raise ValueError("retry_after must be a number of seconds or an HTTP date string")
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        self.retry_after: str | None = None if retry_after is None else str(retry_after)
        malformed = spec.get("malformed")
        if malformed is not None and malformed not in MALFORMED_KINDS:
            raise ValueError(f"malformed must be one of {', '.join(sorted(MALFORMED_KINDS))}")
        self.malformed: str | None = malformed
        drop = spec.get("drop", False)
        if not isinstance(drop, bool):
            raise TypeError("drop must be true or false")
        self.drop = drop
        duration = spec.get("duration")
        if duration is not None:
            duration = _seconds(duration, "duration")
            if duration <= 0:
                raise ValueError("duration must be positive")
        self.until = None if duration is None else now + duration
        count = spec.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer")
        self.remaining: int | None = count
        if not (self.latency or self.resource_latency or self.status or self.malformed or self.drop):
            raise ValueError(
                "a fault needs at least one of latency, resource_latency, status, malformed, drop"
            )

    @property
    def hits_token(self) -> bool:
        return bool(self.latency or self.status or self.malformed or self.drop)

    def describe(self, now: float) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id}
        for name in ("latency", "resource_latency", "status", "retry_after", "malformed"):
            value = getattr(self, name)
            if value:
                doc[name] = value
        if self.drop:
            doc["drop"] = True
        if self.until is not None:
            doc["remaining_seconds"] = max(0.0, self.until - now)
        if self.remaining is not None:
            doc["remaining_count"] = self.remaining
        return doc


def _revoke_live(tokens: Iterable[_Token], now: float) -> int:
    """Revoke the live (unrevoked, unexpired) ones of *tokens*; returns how many."""
    revoked = 0
    for token in tokens:
        if not token.revoked and now < token.expires_at:
            token.revoked = True
            revoked += 1
    return revoked


def _seconds(value: object, name: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
        raise ValueError(f"{name} must be a non-negative number of seconds")
    return float(value)


class _Stats:
    __slots__ = (
        "by_client",
        "by_http_version",
        "in_flight",
        "max_in_flight",
        "max_resource_in_flight",
        "resource_400",
        "resource_401",
        "resource_403",
        "resource_calls",
        "resource_disconnected",
        "resource_in_flight",
        "resource_ok",
        "revoked_on_issue",
        "token_failures",
        "token_malformed",
        "token_requests",
        "tokens_issued",
    )

    def __init__(self) -> None:
        self.token_requests = 0
        self.tokens_issued = 0
        self.token_failures: dict[str, int] = {}
        self.token_malformed: dict[str, int] = {}
        self.by_client: dict[str, int] = {}
        self.by_http_version: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.resource_calls = 0
        self.resource_ok = 0
        self.resource_401: dict[str, int] = {}
        self.resource_400 = 0
        self.resource_403 = 0
        self.resource_disconnected = 0
        self.resource_in_flight = 0
        self.max_resource_in_flight = 0
        self.revoked_on_issue = 0


class _Provider:
    __slots__ = (
        "clients",
        "default",
        "expires_in_exact",
        "faults",
        "lifetime",
        "name",
        "revoke_on_issue",
        "stats",
    )

    def __init__(self, name: str, specs: Sequence[ClientSpec]) -> None:
        default_scope = {"ntxmx": NTXMX_SCOPE, "ntxpix": NTXPIX_SCOPE, "payme": PAYME_SCOPE}.get(name, "")
        self.name = name
        self.clients = {spec.client_id: _Client(spec, default_scope) for spec in specs}
        self.default = self.clients[specs[0].client_id]
        self.lifetime: float = float(DEFAULT_LIFETIMES[name])
        self.expires_in_exact: int | None = None
        self.faults: list[_Fault] = []
        self.revoke_on_issue = False
        self.stats = _Stats()


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def send(self, send: Send) -> None:
        headers = [(b"content-type", self.content_type), (b"content-length", b"%d" % len(self.body))]
        headers.extend(self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


@dataclass(slots=True)
class _Grant:
    """A token request that passed validation; the app issues the token."""

    client: _Client
    scopes: frozenset[str]
    render: Callable[[str, int], dict[str, Any]]
    status: int = 200


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[bytes, bytes]
    body: bytes = b""
    listener: str = "http"
    params: dict[str, str] = field(default_factory=dict)
    http_version: str = "1.1"


class _Disconnected(Exception):
    """The client went away before its request body arrived."""


class _TooLarge(Exception):
    """A request body over the limit."""


_Outcome = tuple[str | None, _Reply | _Grant]
_Validator = Callable[["_Provider", _Request], _Outcome]


# --------------------------------------------------------------------------- reply helpers


def _json(status: int, payload: object, headers: Iterable[tuple[bytes, bytes]] = ()) -> _Reply:
    return _Reply(status, json.dumps(payload, separators=(",", ":")).encode(), headers=tuple(headers))


def _nest(status: int, message: str | list[str]) -> _Reply:
    """A NestJS-style error (NTX Pay's APIs are NestJS)."""
    payload = {"statusCode": status, "message": message, "error": _REASONS.get(status, "Error")}
    return _json(status, payload, _NO_STORE)


def _oauth(status: int, error: str, description: str, *, realm: str | None = None) -> _Reply:
    """An RFC 6749 §5.2 error body."""
    headers = list(_NO_STORE)
    if realm is not None:
        headers.append((b"www-authenticate", f'Basic realm="{realm}", charset="UTF-8"'.encode()))
    return _json(status, {"error": error, "error_description": description}, headers)


def _payme_error(status: int, code: str, message: str) -> _Reply:
    return _json(status, _payme_body(False, code, message), _NO_STORE)


def _payme_body(success: bool, code: str, message: str) -> dict[str, Any]:
    return {
        "action": "authorize",
        "success": success,
        "authorization": {
            "meta": {"status": {"code": code, "message_ilgn": [{"locale": "es_PE", "value": message}]}}
        },
    }


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _content_type(headers: Mapping[bytes, bytes]) -> str:
    return headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()


def _form(request: _Request, *, multipart: bool = False) -> dict[str, list[str]] | None:
    """The request's form fields, or None if it is not a form we accept."""
    kind = _content_type(request.headers)
    try:
        if kind == "application/x-www-form-urlencoded":
            return urllib.parse.parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
        if multipart and kind == "multipart/form-data":
            return _multipart(request.body, request.headers.get(b"content-type", b"").decode("latin-1"))
    except (UnicodeDecodeError, ValueError):
        return None
    return None


_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_FIELD_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)


def _multipart(body: bytes, content_type: str) -> dict[str, list[str]] | None:
    """A minimal multipart/form-data reader: text fields only, which is all a token request has."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        return None
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    fields: dict[str, list[str]] = {}
    chunks = body.split(delimiter)
    if len(chunks) < 3:  # preamble, at least one part, closing "--"
        return None
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return fields
        head, separator, value = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            return None
        name = None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                found = _FIELD_NAME.search(line)
                name = found.group(1).decode("utf-8") if found else None
        if name is None:
            return None
        fields.setdefault(name, []).append(value.removesuffix(b"\r\n").decode("utf-8"))
    return None  # no closing delimiter


def _single(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _basic(headers: Mapping[bytes, bytes]) -> tuple[str, str] | None:
    """The raw (id, secret) of an HTTP Basic header, or None if absent or unreadable."""
    value = headers.get(b"authorization")
    if value is None:
        return None
    scheme, _, encoded = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, separator, secret = decoded.partition(":")
    return (client_id, secret) if separator else None


# --------------------------------------------------------------------------- the application


class EmulatorApp:
    """The emulated providers as one ASGI 3 application.

    Serve it with any ASGI server (the emulator process uses hypercorn on three
    loopback listeners; see :meth:`for_listener`), or drive it in process with
    ``httpx.ASGITransport``.  All state is in memory; the methods below are
    what the ``/_admin/`` endpoints call.

    Args:
        settings: Behaviour; the defaults give one client per provider with
            random secrets and the documented lifetimes.
    """

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self._clock = self.settings.clock
        self._started = self._clock()
        specs = self.settings.clients or default_clients(business_count=self.settings.business_count)
        generated = default_clients(business_count=0) if self.settings.clients else {}
        self._specs: dict[str, tuple[ClientSpec, ...]] = {
            name: tuple(specs.get(name) or generated[name]) for name in PROVIDERS
        }
        self._revoked_fingerprints = frozenset(_fingerprint(pem) for pem in self.settings.revoked_cert_pems)
        self._trusted_ca: Any = None
        self._cert_verdicts: dict[bytes, tuple[int, str] | None] = {}
        self._validators: dict[str, _Validator] = {
            "ntxmx": self._token_ntxmx,
            "ntxpix": self._token_ntxpix,
            "payme": self._token_payme,
            "zertiban": self._token_zertiban,
            "navro": self._token_navro,
            "generic": self._token_generic,
        }
        self._fault_ids = 0
        self._scale = self.settings.lifetime_scale
        self._providers: dict[str, _Provider] = {}
        self._tokens: dict[str, _Token] = {}
        self._expiry_heap: list[tuple[float, str]] = []
        self._events: deque[tuple[float, str, str, str]] = deque(maxlen=self.settings.event_capacity)
        self._events_total = 0
        self.reset()

    # ------------------------------------------------------------------ ASGI entry points

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send)

    def for_listener(self, listener: str, *, on_startup: Callable[[], None] | None = None) -> ListenerApp:
        """This app as seen through one listener (``http``, ``https`` or ``mtls``).

        NTX MX's endpoints are refused on the ``https`` listener, which does not
        ask for a client certificate (as NGINX answers when ``ssl_verify_client``
        is on and no certificate was sent).
        """
        if listener not in ("http", "https", "mtls"):
            raise ValueError(f"unknown listener {listener!r}")
        return ListenerApp(self, listener, on_startup)

    async def handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        listener: str | None = None,
        on_startup: Callable[[], None] | None = None,
    ) -> None:
        """Serve one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http":
            if listener is None:
                listener = "https" if scope.get("scheme") == "https" else "http"
            await self._http(scope, receive, send, listener)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if on_startup is not None:
                        on_startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send, listener: str) -> None:
        path: str = scope["path"]
        headers = {name.lower(): value for name, value in scope["headers"]}
        request = _Request(
            scope["method"],
            path,
            headers,
            listener=listener,
            http_version=str(scope.get("http_version", "1.1")),
        )
        try:
            if path.startswith("/_admin"):
                request.body = await _read_body(receive, _MAX_ADMIN_BODY)
                query = urllib.parse.parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
                request.params = {key: values[-1] for key, values in query.items()}
                await self._admin(request).send(send)
                return
            name, _, rest = path[1:].partition("/")
            provider = self._providers.get(name)
            if provider is None:
                await _read_body(receive, _MAX_TOKEN_BODY)
                await _json(404, {"error": "not_found", "providers": list(PROVIDERS)}).send(send)
                return
            rest = "/" + rest
            if rest == "/api/resource" or (name == "ntxmx" and rest == "/api/spei/cash-out"):
                if rest == "/api/spei/cash-out" and request.method != "POST":
                    await _read_body(receive, _MAX_TOKEN_BODY)
                    await _json(405, {"error": "method_not_allowed"}, [(b"allow", b"POST")]).send(send)
                    return
                await self._resource(provider, request, receive, send, cash_out=rest != "/api/resource")
                return
            if _is_token_path(name, rest, request):
                if request.method != "POST":
                    await _read_body(receive, _MAX_TOKEN_BODY)
                    await _json(405, {"error": "method_not_allowed"}, [(b"allow", b"POST")]).send(send)
                    return
                await self._token(provider, request, receive, send)
                return
            await _read_body(receive, _MAX_TOKEN_BODY)
            await _json(404, {"error": "not_found", "path": path}).send(send)
        except _Disconnected:
            return
        except _TooLarge:
            await _json(413, {"error": "request_too_large"}).send(send)

    # ------------------------------------------------------------------ token endpoint

    async def _token(self, provider: _Provider, request: _Request, receive: Receive, send: Send) -> None:
        stats = provider.stats
        stats.token_requests += 1
        stats.by_http_version[request.http_version] = stats.by_http_version.get(request.http_version, 0) + 1
        stats.in_flight += 1
        if stats.in_flight > stats.max_in_flight:
            stats.max_in_flight = stats.in_flight
        try:
            try:
                request.body = await _read_body(receive, _MAX_TOKEN_BODY)
            except _TooLarge:
                self._token_failed(provider, stats, "413")
                raise
            except _Disconnected:
                self._token_failed(provider, stats, "disconnected")
                raise
            client_id, outcome = self._validators[provider.name](provider, request)
            key = client_id if client_id else "<none>"
            if key not in stats.by_client and len(stats.by_client) >= _MAX_CLIENT_KEYS:
                key = "<other>"  # client ids come from the wire: keep the table bounded
            stats.by_client[key] = stats.by_client.get(key, 0) + 1
            now = self._clock()
            self._event(now, provider.name, "token_request", key)
            malformed = None
            if provider.faults:
                faults = self._take_faults(provider, now, token=True)
                delay = sum(fault.latency for fault in faults)
                if delay > 0 and not await _pause(receive, delay):
                    self._token_failed(provider, stats, "disconnected")
                    return
                if any(fault.drop for fault in faults):
                    self._token_failed(provider, stats, "dropped")
                    await _drop(send)
                    return
                for fault in faults:
                    if fault.status:
                        self._token_failed(provider, stats, str(fault.status))
                        await _fault_reply(fault).send(send)
                        return
                malformed = next((fault.malformed for fault in faults if fault.malformed), None)
            if isinstance(outcome, _Reply):
                self._token_failed(provider, stats, str(outcome.status))
                await outcome.send(send)
                return
            await self._issue(provider, outcome, malformed).send(send)
        finally:
            stats.in_flight -= 1

    def _token_failed(self, provider: _Provider, stats: _Stats, key: str) -> None:
        stats.token_failures[key] = stats.token_failures.get(key, 0) + 1
        self._event(self._clock(), provider.name, "token_failure", key)

    def _issue(self, provider: _Provider, grant: _Grant, malformed: str | None) -> _Reply:
        stats = provider.stats
        if malformed is not None:
            stats.token_malformed[malformed] = stats.token_malformed.get(malformed, 0) + 1
            if malformed == "html":
                page = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Log in</body></html>"
                return _Reply(200, page, b"text/html; charset=utf-8")
            if malformed == "not_json":
                return _Reply(200, b'{"access_token": "', headers=_NO_STORE)
            if malformed == "empty":
                return _Reply(200, b"", headers=_NO_STORE)
            if malformed == "success_false":
                if provider.name == "payme":
                    return _json(
                        200, _payme_body(False, "99", "Error interno, intente nuevamente"), _NO_STORE
                    )
                return _json(200, {"success": False, "error": "server_error"}, _NO_STORE)
            if malformed == "missing_access_token":
                payload = grant.render("", self.expires_in(provider.name))
                del payload["access_token"]
                return _json(grant.status, payload, _NO_STORE)
        now = self._clock()
        expires_in = self.expires_in(provider.name)
        token = secrets.token_urlsafe(32)
        client = grant.client
        if provider.revoke_on_issue:
            stats.revoked_on_issue += _revoke_live(client.tokens.values(), now)
            client.tokens.clear()  # all revoked or expired: nothing left for a later issue to revoke
        issued = _Token(provider.name, client, grant.scopes, now + expires_in)
        self._tokens[token] = client.tokens[token] = issued
        heapq.heappush(self._expiry_heap, (now + expires_in, token))
        self._prune(now)
        stats.tokens_issued += 1
        self._event(now, provider.name, "token_issued", str(expires_in))
        payload = grant.render(token, expires_in)
        if malformed == "bad_expires_in":
            payload["expires_in"] = "soon"
        elif malformed == "zero_expires_in":
            payload["expires_in"] = 0
        elif malformed == "wrong_token_type":
            payload["token_type"] = "MAC"  # noqa: S105 - a token type, not a password
        return _json(grant.status, payload, _NO_STORE)

    def _prune(self, now: float) -> None:
        heap = self._expiry_heap
        limit = now - self.settings.expired_token_grace
        while heap and heap[0][0] <= limit:
            _, token = heapq.heappop(heap)
            issued = self._tokens.pop(token, None)
            if issued is not None:
                issued.client.tokens.pop(token, None)

    # ------------------------------------------------------------------ per-provider validation

    def _token_ntxmx(self, provider: _Provider, request: _Request) -> _Outcome:
        data = _json_object(request.body)
        client_id = data.get("clientId") if data else None
        client_id = client_id if isinstance(client_id, str) else None
        if request.listener == "https":
            return client_id, _nest(400, "No required SSL certificate was sent")
        forwarded = request.headers.get(b"x-ssl-client-cert")
        if not forwarded:
            return client_id, _nest(
                400,
                "X-SSL-Client-Cert header is missing: configure the proxy to forward the client certificate",
            )
        verdict = self._check_forwarded_cert(forwarded)
        if verdict is not None:
            return client_id, _nest(*verdict)
        if data is None:
            return client_id, _nest(400, ["body must be a JSON object"])
        secret = data.get("clientSecret")
        problems = []
        if not client_id:
            problems.append("clientId must be a non-empty string")
        if not isinstance(secret, str) or not secret:
            problems.append("clientSecret must be a non-empty string")
        if problems:
            return client_id, _nest(400, problems)
        assert client_id is not None
        assert isinstance(secret, str)
        client = provider.clients.get(client_id)
        if client is None or not _same(secret, client.secret):
            return client_id, _nest(
                401,
                "Invalid clientId/clientSecret: these credentials are not valid for this environment "
                "(sandbox and production credentials are distinct)",
            )

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "scope": NTXMX_SCOPE,
            }

        return client_id, _Grant(client, client.scopes, render, status=201)

    def _token_ntxpix(self, provider: _Provider, request: _Request) -> _Outcome:
        data = _json_object(request.body)
        if data is None:
            return None, _nest(400, ["body must be a JSON object"])
        client_id = data.get("clientId")
        client_id = client_id if isinstance(client_id, str) else None
        secret = data.get("clientSecret")
        requested = data.get("scope")
        problems = []
        if not client_id:
            problems.append("clientId must be a non-empty string")
        if not isinstance(secret, str):
            problems.append("clientSecret must be a string")
        elif not 8 <= len(secret) <= 64:
            problems.append("clientSecret must be between 8 and 64 characters")
        if requested is not None and not isinstance(requested, str):
            problems.append("scope must be a string")
        if problems:
            return client_id, _nest(400, problems)
        assert client_id is not None
        assert isinstance(secret, str)
        client = provider.clients.get(client_id)
        if client is None or not _same(secret, client.secret):
            return client_id, _nest(401, "Invalid client credentials")
        # Extension: an optional "scope" narrows the grant (lets tests get a read-only token).
        granted = client.scopes if not requested else frozenset(requested.split())
        if not granted <= client.scopes:
            return client_id, _nest(
                400, f"scope not allowed for this client: {' '.join(sorted(granted - client.scopes))}"
            )
        scope_text = " ".join(name for name in client.scope_order if name in granted)

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "scope": scope_text,
            }

        return client_id, _Grant(client, granted, render)

    def _token_payme(self, provider: _Provider, request: _Request) -> _Outcome:
        data = _json_object(request.body)
        client_id = data.get("client_id") if data else None
        client_id = client_id if isinstance(client_id, str) else None
        if request.headers.get(b"alg-api-version") != PAYME_API_VERSION:
            return client_id, _payme_error(
                400, "01", f"Header ALG-API-VERSION ausente o no soportado (use {PAYME_API_VERSION.decode()})"
            )
        if data is None:
            return client_id, _payme_error(400, "02", "El cuerpo debe ser un objeto JSON")
        problems = []
        if data.get("action") != "authorize":
            problems.append("action debe ser 'authorize'")
        if data.get("grant_type") != "client_credentials":
            problems.append("grant_type debe ser 'client_credentials'")
        for name in ("audience", "client_id", "client_secret", "scope"):
            value = data.get(name)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{name} es obligatorio")
        if problems:
            return client_id, _payme_error(400, "02", "; ".join(problems))
        scope: str = data["scope"]
        requested = frozenset(scope.split())
        if "create:token" not in requested:
            return client_id, _payme_error(400, "03", "El scope debe incluir create:token")
        assert client_id is not None
        client = provider.clients.get(client_id)
        if client is None or not _same(data["client_secret"], client.secret):
            return client_id, _payme_error(401, "04", "Credenciales de cliente inválidas")

        def render(token: str, expires_in: int) -> dict[str, Any]:
            body = _payme_body(True, "00", "Access Token creado")
            body.update(access_token=token, scope=scope, expires_in=expires_in)
            body["token_type"] = "Bearer"  # noqa: S105 - a token type, not a password
            # The documented key order.
            order = (
                "action",
                "success",
                "access_token",
                "scope",
                "expires_in",
                "token_type",
                "authorization",
            )
            return {name: body[name] for name in order}

        return client_id, _Grant(client, requested, render)

    def _token_zertiban(self, provider: _Provider, request: _Request) -> _Outcome:
        basic = _basic(request.headers)
        client_id = basic[0] if basic else None
        form = _form(request)
        if form is None:
            return client_id, _oauth(
                400, "invalid_request", "expected an application/x-www-form-urlencoded body with grant_type"
            )
        if "client_id" in form or "client_secret" in form:
            return client_id, _oauth(
                400,
                "invalid_request",
                "client credentials must be sent in the Authorization header (HTTP Basic), not in the body",
            )
        grant_type = _single(form, "grant_type")
        if not grant_type:
            return client_id, _oauth(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return client_id, _oauth(400, "unsupported_grant_type", "only client_credentials is supported")
        if basic is None:
            return None, _oauth(
                401, "invalid_client", "HTTP Basic client authentication required", realm="zertiban"
            )
        client = provider.clients.get(basic[0])
        if client is None or not _same(basic[1], client.secret):
            return client_id, _oauth(401, "invalid_client", "client authentication failed", realm="zertiban")

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}

        return client_id, _Grant(client, frozenset(), render)

    def _token_navro(self, provider: _Provider, request: _Request) -> _Outcome:
        company = request.params["company"]
        basic = _basic(request.headers)
        client_id = basic[0] if basic else None
        if not any(client.spec.company == company for client in provider.clients.values()):
            return client_id, _json(404, {"error": "not_found", "error_description": "unknown company"})
        if request.headers.get(b"x-api-version") != b"1":
            return client_id, _oauth(400, "invalid_request", "X-API-Version header must be 1")
        form = _form(request, multipart=True)
        if form is None:
            return client_id, _oauth(
                400,
                "invalid_request",
                "expected a multipart/form-data or application/x-www-form-urlencoded body",
            )
        grant_type = _single(form, "grant_type")
        if not grant_type:
            return client_id, _oauth(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return client_id, _oauth(400, "unsupported_grant_type", "only client_credentials is supported")
        if "openid" not in (_single(form, "scope") or "").split():
            return client_id, _oauth(400, "invalid_scope", "scope must be openid")
        if basic is None:
            return None, _oauth(
                401, "invalid_client", "HTTP Basic client authentication required", realm="navro"
            )
        client = provider.clients.get(basic[0])
        if client is None or client.spec.company != company or not _same(basic[1], client.secret):
            return client_id, _oauth(401, "invalid_client", "invalid client credentials", realm="navro")

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {
                "access_token": token,
                "expires_in": expires_in,
                "token_type": "Bearer",
                "scope": "openid",
            }

        return client_id, _Grant(client, frozenset({"openid"}), render)

    def _token_generic(self, provider: _Provider, request: _Request) -> _Outcome:
        form = _form(request)
        if form is None:
            return None, _oauth(400, "invalid_request", "expected an application/x-www-form-urlencoded body")
        repeated = sorted(name for name, values in form.items() if len(values) > 1)
        if repeated:
            return None, _oauth(400, "invalid_request", f"parameters must not repeat: {', '.join(repeated)}")
        has_authorization = b"authorization" in request.headers
        basic = _basic(request.headers)
        post_id, post_secret = _single(form, "client_id"), _single(form, "client_secret")
        candidates: list[tuple[str, str]] = []
        if basic is not None:
            # RFC 6749 §2.3.1 says form-encode both before base64; many clients send them raw.
            candidates = [basic, (urllib.parse.unquote_plus(basic[0]), urllib.parse.unquote_plus(basic[1]))]
        elif post_id is not None and post_secret is not None:
            candidates = [(post_id, post_secret)]
        client_id = candidates[-1][0] if candidates else post_id
        if has_authorization and post_secret is not None:
            return client_id, _oauth(400, "invalid_request", "use only one client authentication method")
        grant_type = _single(form, "grant_type")
        if not grant_type:
            return client_id, _oauth(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return client_id, _oauth(
                400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
            )
        for candidate_id, candidate_secret in candidates:
            client = provider.clients.get(candidate_id)
            if client is not None and _same(candidate_secret, client.secret):
                break
        else:
            description = (
                "client authentication failed"
                if candidates or has_authorization
                else "client authentication required"
            )
            return client_id, _oauth(401, "invalid_client", description, realm="generic")
        client_id = client.spec.client_id
        scopes = frozenset((_single(form, "scope") or "").split())

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}

        return client_id, _Grant(client, scopes, render)

    # ------------------------------------------------------------------ NTX MX forwarded certificate

    def _check_forwarded_cert(self, header: bytes) -> tuple[int, str] | None:
        try:
            return self._cert_verdicts[header]
        except KeyError:
            pass
        verdict = self._verify_cert(header)
        if len(self._cert_verdicts) >= 256:  # a handful of certificates in practice; stay bounded anyway
            self._cert_verdicts.clear()
        self._cert_verdicts[header] = verdict
        return verdict

    def _verify_cert(self, header: bytes) -> tuple[int, str] | None:
        from cryptography import x509  # only NTX MX needs it; keeps `import` light
        from cryptography.exceptions import InvalidSignature

        der = _decode_forwarded_cert(header) or b""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return 400, "X-SSL-Client-Cert does not contain a valid X.509 certificate"
        if _der_fingerprint(der) in self._revoked_fingerprints:
            return 401, "client certificate has been revoked"
        if self.settings.trusted_ca_pem is not None:
            if self._trusted_ca is None:
                self._trusted_ca = x509.load_pem_x509_certificate(self.settings.trusted_ca_pem)
            try:
                cert.verify_directly_issued_by(self._trusted_ca)
            except (ValueError, TypeError, InvalidSignature):
                return 401, "client certificate was not issued by a trusted certificate authority"
        now = datetime.datetime.now(datetime.UTC)  # certificate validity is wall-clock by nature
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return 401, "client certificate has expired or is not yet valid"
        return None

    # ------------------------------------------------------------------ resource endpoint

    async def _resource(
        self, provider: _Provider, request: _Request, receive: Receive, send: Send, *, cash_out: bool
    ) -> None:
        stats = provider.stats
        stats.resource_calls += 1
        stats.resource_in_flight += 1
        if stats.resource_in_flight > stats.max_resource_in_flight:
            stats.max_resource_in_flight = stats.resource_in_flight
        try:
            size = await _count_body(receive)
            if provider.faults:
                delay = sum(
                    f.resource_latency for f in self._take_faults(provider, self._clock(), token=False)
                )
                if delay > 0 and not await _pause(receive, delay):
                    stats.resource_disconnected += 1  # the caller gave up; nobody to answer
                    return
            reply = self._authorize(provider, request)
            if reply is None:
                stats.resource_ok += 1
                if cash_out:
                    reply = _json(201, {"status": "PENDING", "provider": provider.name, "body_bytes": size})
                else:
                    reply = _json(
                        200,
                        {"ok": True, "provider": provider.name, "method": request.method, "body_bytes": size},
                    )
            await reply.send(send)
        finally:
            stats.resource_in_flight -= 1

    def _authorize(self, provider: _Provider, request: _Request) -> _Reply | None:
        """None if the call may proceed, else the error reply (and the counters updated)."""
        stats = provider.stats
        headers = request.headers
        if provider.name == "ntxmx" and request.listener == "https":
            stats.resource_400 += 1
            return _nest(400, "No required SSL certificate was sent")
        now = self._clock()
        authorization = headers.get(b"authorization", b"")
        scheme, _, value = authorization.partition(b" ")
        token = self._tokens.get(value.strip().decode("latin-1")) if value else None
        if not authorization or scheme.lower() != b"bearer" or not value.strip():
            reason = "missing"
        elif token is None or token.provider != provider.name:
            reason = "unknown"
        elif token.revoked:
            reason = "revoked"
        elif now >= token.expires_at:
            reason = "expired"
        else:
            reason = ""
        if reason:
            stats.resource_401[reason] = stats.resource_401.get(reason, 0) + 1
            self._event(now, provider.name, "resource_401", reason)
            challenge = (
                f'Bearer realm="{provider.name}", error="invalid_token", error_description="token {reason}"'
            )
            return _json(
                401,
                {"error": "invalid_token", "reason": reason, "error_description": f"access token {reason}"},
                [(b"www-authenticate", challenge.encode())],
            )
        assert token is not None
        problem = None
        if provider.name == "payme":
            if headers.get(b"alg-api-version") != PAYME_API_VERSION:
                problem = "ALG-API-VERSION header missing or not supported"
        elif provider.name == "zertiban":
            tenant = headers.get(b"x-tenant-id")
            if tenant is None:
                problem = "x-tenant-id header is required"
            elif tenant.decode("latin-1") not in token.client.businesses:
                problem = "x-tenant-id is not a business of this client"
        elif provider.name == "navro" and headers.get(b"x-api-version") != b"1":
            problem = "X-API-Version header must be 1"
        if problem is not None:
            stats.resource_400 += 1
            return _json(400, {"error": "bad_request", "message": problem})
        needed = None
        if provider.name == "payme":
            needed = _PAYME_SCOPE_BY_METHOD.get(request.method, "post:charges")
        elif provider.name == "ntxpix":
            needed = "pix:read" if request.method in ("GET", "HEAD") else "pix:write"
        if needed is not None and needed not in token.scopes:
            stats.resource_403 += 1
            return _json(403, {"error": "insufficient_scope", "scope": needed})
        return None

    # ------------------------------------------------------------------ faults and events

    def _take_faults(self, provider: _Provider, now: float, *, token: bool) -> list[_Fault]:
        """The faults that apply to this request; counts are consumed, lapsed faults dropped."""
        applying: list[_Fault] = []
        keep: list[_Fault] = []
        for fault in provider.faults:
            if fault.until is not None and now >= fault.until:
                continue
            if fault.hits_token if token else fault.resource_latency > 0:
                applying.append(fault)
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        continue
            keep.append(fault)
        provider.faults = keep
        return applying

    def _event(self, now: float, provider: str, kind: str, detail: str) -> None:
        self._events_total += 1
        self._events.append((now - self._started, provider, kind, detail))

    # ------------------------------------------------------------------ control (what /_admin calls)

    def _provider(self, name: object) -> _Provider:
        if not isinstance(name, str) or name not in self._providers:
            raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}")
        return self._providers[name]

    @property
    def lifetime_scale(self) -> float:
        """The current lifetime scale."""
        return self._scale

    def expires_in(self, provider: str) -> int:
        """The ``expires_in`` the provider's next token will carry (the server expires it at exactly that)."""
        state = self._provider(provider)
        if state.expires_in_exact is not None:
            return state.expires_in_exact
        return max(1, round(state.lifetime * self._scale))

    def reset(self) -> None:
        """Forget tokens, faults, counters and events, and undo every change of settings.

        Rotated secrets, lifetimes, the lifetime scale and revoke-on-issue (off)
        are back to their start values.
        """
        self._providers = {name: _Provider(name, self._specs[name]) for name in PROVIDERS}
        self._tokens = {}
        self._expiry_heap = []
        self._events.clear()
        self._events_total = 0
        self._scale = self.settings.lifetime_scale

    def add_fault(self, provider: str, **spec: Any) -> int:
        """Inject a fault (fields in the module docstring); returns its id.

        Raises:
            ValueError: Unknown provider or field, or a value out of range (TypeError: a wrong type).
        """
        state = self._provider(provider)
        self._fault_ids += 1
        state.faults.append(_Fault(self._fault_ids, spec, self._clock()))
        return self._fault_ids

    def clear_faults(self, provider: str | None = None) -> int:
        """Remove the faults of one provider (or all); returns how many were removed."""
        states = [self._provider(provider)] if provider is not None else list(self._providers.values())
        removed = 0
        for state in states:
            removed += len(state.faults)
            state.faults = []
        return removed

    def revoke_tokens(self, provider: str | None = None) -> int:
        """Revoke every token issued so far (by one provider, or all); returns how many live ones were hit."""
        if provider is not None:
            self._provider(provider)
        now = self._clock()
        revoked = 0
        for token in self._tokens.values():
            if (provider is None or token.provider == provider) and not token.revoked:
                token.revoked = True
                revoked += now < token.expires_at
        return revoked

    def set_revoke_on_issue(self, provider: str, enabled: bool = True) -> bool:
        """Switch revoke-on-issue on or off for one provider; returns the new setting.

        While it is on, issuing a token to a client revokes every earlier token
        of that provider and client that is still live (not revoked, not
        expired), as a token server keeping one live token per client does;
        each one hit counts in the provider's ``revoked_on_issue``.  Tokens
        issued before it was switched on count as earlier tokens too.
        :meth:`reset` switches it off.

        Args:
            provider: The provider.
            enabled: On (the default) or off.

        Raises:
            ValueError: Unknown provider.
            TypeError: *enabled* is not a bool.
        """
        state = self._provider(provider)
        if not isinstance(enabled, bool):
            raise TypeError("enabled must be true or false")
        state.revoke_on_issue = enabled
        return enabled

    def rotate_secret(self, provider: str, client_id: str | None = None) -> str:
        """Give a client a new secret; the old one fails at once, issued tokens stay valid."""
        state = self._provider(provider)
        client = state.default if client_id is None else state.clients.get(client_id)
        if client is None:
            raise ValueError(f"provider {provider!r} has no client {client_id!r}")
        client.secret = secrets.token_urlsafe(24)
        return client.secret

    def set_lifetime(
        self, provider: str, seconds: float | None = None, *, expires_in: int | None = None
    ) -> int:
        """Change a provider's lifetime for tokens issued from now on; returns the new ``expires_in``.

        Args:
            provider: The provider.
            seconds: Unscaled lifetime (multiplied by the lifetime scale, like the defaults).
            expires_in: Exact ``expires_in`` to send, not scaled.  With neither,
                the documented default comes back.
        """
        state = self._provider(provider)
        if seconds is not None and expires_in is not None:
            raise ValueError("give seconds or expires_in, not both")
        if expires_in is not None:
            if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 1:
                raise ValueError("expires_in must be a positive integer")
            state.expires_in_exact = expires_in
        elif seconds is not None:
            if _seconds(seconds, "seconds") <= 0:
                raise ValueError("seconds must be positive")
            state.lifetime, state.expires_in_exact = float(seconds), None
        else:
            state.lifetime, state.expires_in_exact = float(DEFAULT_LIFETIMES[provider]), None
        return self.expires_in(provider)

    def set_lifetime_scale(self, scale: float) -> float:
        """Change the lifetime scale for tokens issued from now on."""
        self._scale = _check_scale(scale)
        return self._scale

    def credentials(self, provider: str) -> dict[str, Any]:
        """The provider's default client as JSON (current secret included) plus its other clients."""
        state = self._provider(provider)
        docs = []
        for client in state.clients.values():
            doc = client.spec.describe()
            doc["client_secret"] = client.secret
            docs.append(doc)
        default = dict(docs[0])
        if provider == "payme":
            default.setdefault("audience", "https://api.payme.test")
        if len(docs) > 1:
            default["clients"] = docs
        return default

    def stats(self, *, events: bool = True, since: float | None = None) -> dict[str, Any]:
        """Exact counters per provider, and the event timeline (server-relative monotonic seconds)."""
        now = self._clock()
        self._prune(now)
        live: dict[str, int] = dict.fromkeys(PROVIDERS, 0)
        for token in self._tokens.values():
            if not token.revoked and now < token.expires_at:
                live[token.provider] += 1
        providers = {}
        for name, state in self._providers.items():
            stats = state.stats
            providers[name] = {
                "token_requests": stats.token_requests,
                "tokens_issued": stats.tokens_issued,
                "token_failures": dict(stats.token_failures),
                "token_malformed": dict(stats.token_malformed),
                "token_requests_by_client": dict(stats.by_client),
                "token_requests_by_http_version": dict(stats.by_http_version),
                "token_requests_in_flight": stats.in_flight,
                "max_concurrent_token_requests": stats.max_in_flight,
                "resource_calls": stats.resource_calls,
                "resource_ok": stats.resource_ok,
                "resource_401": dict(stats.resource_401),
                "resource_400": stats.resource_400,
                "resource_403": stats.resource_403,
                "resource_disconnected": stats.resource_disconnected,
                "max_concurrent_resource_calls": stats.max_resource_in_flight,
                "live_tokens": live[name],
                "revoke_on_issue": state.revoke_on_issue,
                "revoked_on_issue": stats.revoked_on_issue,
                "expires_in": self.expires_in(name),
                "faults": [
                    fault.describe(now) for fault in state.faults if fault.until is None or now < fault.until
                ],
            }
        doc: dict[str, Any] = {
            "now": now - self._started,
            "lifetime_scale": self._scale,
            "providers": providers,
            "tracked_tokens": len(self._tokens),
            "events_total": self._events_total,
            "events_dropped": self._events_total - len(self._events),
        }
        if events:
            doc["events"] = [
                {"t": t, "provider": provider, "kind": kind, "detail": detail}
                for t, provider, kind, detail in self._events
                if since is None or t >= since
            ]
        return doc

    # ------------------------------------------------------------------ /_admin

    def _admin(self, request: _Request) -> _Reply:
        action = request.path.removeprefix("/_admin").strip("/")
        method = request.method
        try:
            body = _json_object(request.body) if request.body.strip() else {}
            if body is None:
                return _json(
                    400, {"error": "bad_request", "message": "admin requests take a JSON object body"}
                )
            if method == "GET" and action == "":
                return _json(200, {"endpoints": _ADMIN_HELP, "providers": list(PROVIDERS)})
            if method == "GET" and action == "health":
                return _json(200, {"ok": True})
            if method == "GET" and action == "stats":
                since = request.params.get("since")
                with_events = request.params.get("events", "1") not in ("0", "false", "no")
                return _json(200, self.stats(events=with_events, since=float(since) if since else None))
            if method == "GET" and action == "credentials":
                name = request.params.get("provider")
                if name:
                    return _json(200, self.credentials(name))
                return _json(200, {provider: self.credentials(provider) for provider in PROVIDERS})
            if method != "POST":
                return _json(405 if action in _ADMIN_HELP_KEYS else 404, {"error": "see GET /_admin/"})
            if action == "reset":
                self.reset()
                return _json(200, {"ok": True})
            if action == "faults":
                spec = dict(body)
                fault_id = self.add_fault(spec.pop("provider", None), **spec)
                return _json(200, {"id": fault_id})
            if action == "clear-faults":
                return _json(200, {"cleared": self.clear_faults(body.get("provider"))})
            if action == "revoke":
                return _json(200, {"revoked": self.revoke_tokens(body.get("provider"))})
            if action == "revoke-on-issue":
                provider = body.get("provider", "")
                enabled = self.set_revoke_on_issue(provider, body.get("enabled", True))
                return _json(200, {"provider": provider, "revoke_on_issue": enabled})
            if action == "rotate-secret":
                provider = body.get("provider")
                secret = self.rotate_secret(body.get("provider", ""), body.get("client_id"))
                client_id = body.get("client_id") or self._provider(provider).default.spec.client_id
                return _json(200, {"provider": provider, "client_id": client_id, "client_secret": secret})
            if action == "lifetime":
                provider = body.get("provider")
                expires_in = self.set_lifetime(
                    body.get("provider", ""), body.get("seconds"), expires_in=body.get("expires_in")
                )
                return _json(200, {"provider": provider, "expires_in": expires_in})
            if action == "lifetime-scale":
                return _json(200, {"lifetime_scale": self.set_lifetime_scale(body.get("scale", 0))})
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": "bad_request", "message": str(exc)})
        return _json(404, {"error": "not_found", "message": "see GET /_admin/"})


_ADMIN_HELP: Final = {
    "GET /_admin/stats[?events=0][&since=T]": "counters per provider and the event timeline",
    "GET /_admin/credentials[?provider=P]": "current client credentials",
    "GET /_admin/health": "liveness",
    "POST /_admin/reset": "clear tokens, faults, counters, events, rotated secrets, lifetimes, "
    "scale changes, revoke-on-issue settings",
    "POST /_admin/faults": '{"provider", "latency"?, "resource_latency"?, "status"?, "retry_after"?, '
    '"malformed"?, "drop"?, "duration"?, "count"?}',
    "POST /_admin/clear-faults": '{"provider"?}',
    "POST /_admin/revoke": '{"provider"?}: revoke every issued token',
    "POST /_admin/revoke-on-issue": '{"provider", "enabled"?}: while enabled (default true), a new token '
    "revokes the same client's earlier live ones",
    "POST /_admin/rotate-secret": '{"provider", "client_id"?}: returns the new secret',
    "POST /_admin/lifetime": '{"provider", "seconds" | "expires_in"}: neither restores the default',
    "POST /_admin/lifetime-scale": '{"scale"}',
}
_ADMIN_HELP_KEYS: Final = frozenset(
    key.split()[1].removeprefix("/_admin/").split("[")[0] for key in _ADMIN_HELP
)


class ListenerApp:
    """An :class:`EmulatorApp` bound to one listener (an ASGI app of its own)."""

    def __init__(self, app: EmulatorApp, listener: str, on_startup: Callable[[], None] | None) -> None:
        self.app = app
        self.listener = listener
        self._on_startup = on_startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app.handle(scope, receive, send, listener=self.listener, on_startup=self._on_startup)


def _is_token_path(name: str, rest: str, request: _Request) -> bool:
    if name == "navro":
        match = re.fullmatch(r"/authentication/([^/]+)/token", rest)
        if match is None:
            return False
        request.params["company"] = match.group(1)
        return True
    return rest == _TOKEN_PATHS[name]


_TOKEN_PATHS: Final = {
    "ntxmx": "/api/auth/token",
    "ntxpix": "/oauth/token",
    "payme": "/token",
    "zertiban": "/idp/oauth2/token",
    "generic": "/oauth/token",
}


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _count_body(receive: Receive) -> int:
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return size


async def _pause(receive: Receive, delay: float) -> bool:
    """Wait *delay* seconds (an injected latency); False if the client disconnected meanwhile."""
    with anyio.move_on_after(delay):
        while True:
            # The body has been read, so the next message can only be the disconnect.
            if (await receive())["type"] == "http.disconnect":
                return False
    return True


def _fault_reply(fault: _Fault) -> _Reply:
    assert fault.status is not None
    error = {429: "slow_down", 503: "temporarily_unavailable"}.get(fault.status, "server_error")
    headers = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after is not None else []
    return _json(
        fault.status, {"error": error, "error_description": f"injected fault: HTTP {fault.status}"}, headers
    )


async def _drop(send: Send) -> None:
    """Start a response and break it: the client sees a protocol error, not an answer."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    # The server refuses to end a body shorter than its Content-Length and tears
    # the connection (HTTP/1.1) or the stream (HTTP/2) down, which is the point.
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b'{"access_token": "', "more_body": False})


_PEM_BODY = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _decode_forwarded_cert(header: bytes) -> bytes | None:
    """DER bytes from an URL-encoded PEM (NGINX ``$ssl_client_escaped_cert``), base64 PEM or base64 DER."""
    text = header.decode("latin-1").strip()
    if "-----BEGIN" not in text and "%" not in text:
        try:
            decoded = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
        if b"-----BEGIN" not in decoded:
            return decoded
        text = decoded.decode("latin-1")
    match = _PEM_BODY.search(urllib.parse.unquote(text))
    if match is None:
        return None
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _der_fingerprint(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


def _fingerprint(pem: bytes) -> bytes:
    der = _decode_forwarded_cert(pem)
    if der is None:
        raise ValueError("revoked_cert_pems must hold PEM certificates")
    return _der_fingerprint(der)
