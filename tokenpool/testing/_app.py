"""The emulator itself: a plain ASGI 3 application holding every provider's state in memory.

One :class:`EmulatorApp` speaks the five providers' token endpoints exactly as
their documentation shows (``provider-docs/``), plus a generic RFC 6749 §4.4
one, and a resource endpoint per provider that checks bearer tokens against
the server's own clock.  This module is the core: the ASGI entry points, the
routing and the public control methods.  The rest is split by idea:

* ``providers/``: one module per provider (named like its adapter in
  ``tokenpool/providers/``), judging token requests and naming its resource rules;
* ``_endpoints.py``: the token and resource flows all providers share;
* ``_ledger.py``: clients, tokens, counters, the event timeline;
* ``_faults.py``: injected faults (the fields, the ``malformed`` kinds);
* ``_admin.py``: the admin API;
* ``_settings.py``: :class:`ClientSpec` and :class:`EmulatorSettings`;
* ``_wire.py``: request and reply types, body parsing.

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
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from ._admin import serve_admin
from ._constants import DEFAULT_LIFETIMES, PROVIDERS
from ._endpoints import MAX_BODY, resource_endpoint, token_endpoint
from ._faults import MALFORMED_KINDS, Fault, as_seconds
from ._ledger import Ledger, ProviderState
from ._providers import build_emulators, default_clients
from ._settings import ClientSpec, EmulatorSettings, check_scale
from ._wire import Disconnected, Receive, Request, Scope, Send, TooLarge, json_reply, read_body

__all__ = [
    "MALFORMED_KINDS",
    "ClientSpec",
    "EmulatorApp",
    "EmulatorSettings",
    "ListenerApp",
    "default_clients",
]


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
        specs = self.settings.clients or default_clients(business_count=self.settings.business_count)
        generated = default_clients(business_count=0) if self.settings.clients else {}
        self._specs: dict[str, tuple[ClientSpec, ...]] = {
            name: tuple(specs.get(name) or generated[name]) for name in PROVIDERS
        }
        self._fault_ids = 0
        self._ledger = Ledger(
            build_emulators(self.settings),
            self._specs,
            clock=self.settings.clock,
            lifetime_scale=self.settings.lifetime_scale,
            event_capacity=self.settings.event_capacity,
            expired_token_grace=self.settings.expired_token_grace,
        )

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
        request = Request(
            scope["method"],
            path,
            headers,
            listener=listener,
            http_version=str(scope.get("http_version", "1.1")),
        )
        try:
            if path.startswith("/_admin"):
                await serve_admin(self, scope, request, receive, send)
                return
            name, _, rest = path[1:].partition("/")
            provider = self._ledger.providers.get(name)
            if provider is None:
                await read_body(receive, MAX_BODY)
                await json_reply(404, {"error": "not_found", "providers": list(PROVIDERS)}).send(send)
                return
            rest = "/" + rest
            handler = provider.handler
            if rest == "/api/resource" or rest == handler.cash_out_path:
                if rest != "/api/resource" and request.method != "POST":
                    await read_body(receive, MAX_BODY)
                    await json_reply(405, {"error": "method_not_allowed"}, [(b"allow", b"POST")]).send(send)
                    return
                await resource_endpoint(
                    self._ledger, provider, request, receive, send, cash_out=rest != "/api/resource"
                )
                return
            if handler.is_token_endpoint(rest, request):
                if request.method != "POST":
                    await read_body(receive, MAX_BODY)
                    await json_reply(405, {"error": "method_not_allowed"}, [(b"allow", b"POST")]).send(send)
                    return
                await token_endpoint(self._ledger, provider, request, receive, send)
                return
            await read_body(receive, MAX_BODY)
            await json_reply(404, {"error": "not_found", "path": path}).send(send)
        except Disconnected:
            return
        except TooLarge:
            await json_reply(413, {"error": "request_too_large"}).send(send)

    # ------------------------------------------------------------------ control (what /_admin calls)

    def _provider(self, name: object) -> ProviderState:
        providers = self._ledger.providers
        if not isinstance(name, str) or name not in providers:
            raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}")
        return providers[name]

    @property
    def lifetime_scale(self) -> float:
        """The current lifetime scale."""
        return self._ledger.lifetime_scale

    def expires_in(self, provider: str) -> int:
        """The ``expires_in`` the provider's next token will carry (the server expires it at exactly that)."""
        return self._ledger.expires_in(self._provider(provider))

    def reset(self) -> None:
        """Forget tokens, faults, counters and events, and undo every change of settings.

        Rotated secrets, lifetimes, the lifetime scale and revoke-on-issue (off)
        are back to their start values.
        """
        self._ledger.reset()

    def add_fault(self, provider: str, **spec: Any) -> int:
        """Inject a fault; returns its id.

        The fields are ``latency``, ``resource_latency``, ``status``, ``retry_after``,
        ``malformed`` (one of :data:`MALFORMED_KINDS`), ``drop``, ``duration`` and
        ``count``, as ``tokenpool/testing/_faults.py`` describes them.

        Raises:
            ValueError: Unknown provider or field, or a value out of range (TypeError: a wrong type).
        """
        state = self._provider(provider)
        self._fault_ids += 1
        state.faults.append(Fault(self._fault_ids, spec, self._ledger.clock()))
        return self._fault_ids

    def clear_faults(self, provider: str | None = None) -> int:
        """Remove the faults of one provider (or all); returns how many were removed."""
        states = [self._provider(provider)] if provider is not None else list(self._ledger.providers.values())
        removed = 0
        for state in states:
            removed += len(state.faults)
            state.faults = []
        return removed

    def revoke_tokens(self, provider: str | None = None) -> int:
        """Revoke every token issued so far (by one provider, or all); returns how many live ones were hit."""
        if provider is not None:
            self._provider(provider)
        return self._ledger.revoke(provider)

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
            if as_seconds(seconds, "seconds") <= 0:
                raise ValueError("seconds must be positive")
            state.lifetime, state.expires_in_exact = float(seconds), None
        else:
            state.lifetime, state.expires_in_exact = float(DEFAULT_LIFETIMES[provider]), None
        return self.expires_in(provider)

    def set_lifetime_scale(self, scale: float) -> float:
        """Change the lifetime scale for tokens issued from now on."""
        self._ledger.lifetime_scale = check_scale(scale)
        return self._ledger.lifetime_scale

    def credentials(self, provider: str) -> dict[str, Any]:
        """The provider's default client as JSON (current secret included) plus its other clients."""
        state = self._provider(provider)
        docs = []
        for client in state.clients.values():
            doc = client.spec.describe()
            doc["client_secret"] = client.secret
            docs.append(doc)
        default = dict(docs[0])
        for key, value in state.handler.credential_defaults:
            default.setdefault(key, value)
        if len(docs) > 1:
            default["clients"] = docs
        return default

    def stats(self, *, events: bool = True, since: float | None = None) -> dict[str, Any]:
        """Exact counters per provider, and the event timeline (server-relative monotonic seconds).

        The counters and events are described in ``tokenpool/testing/_ledger.py``.
        """
        return self._ledger.stats(events=events, since=since)


class ListenerApp:
    """An :class:`EmulatorApp` bound to one listener (an ASGI app of its own)."""

    def __init__(self, app: EmulatorApp, listener: str, on_startup: Callable[[], None] | None) -> None:
        self.app = app
        self.listener = listener
        self._on_startup = on_startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app.handle(scope, receive, send, listener=self.listener, on_startup=self._on_startup)
