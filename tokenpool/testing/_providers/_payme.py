"""Pay-me as the emulator serves it (the runtime side: ``tokenpool/providers/_payme.py``).

``POST /payme/token`` takes a JSON ``action``/``grant_type``/``audience``/
``client_id``/``client_secret``/``scope`` body and the ``ALG-API-VERSION``
header; answers, good or bad, carry Pay-me's ``authorization.meta.status`` block
with a code and a Spanish message.  Resource calls need the same header and the
scope for their method (``get:charges``, ``post:charges``, ``delete:charges``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .._settings import ClientSpec
from .._wire import NO_STORE, Reply, Request, json_object, json_reply, same_secret
from ._base import Grant, Outcome, ProviderEmulator, new_client_id, new_secret

if TYPE_CHECKING:
    from .._ledger import Client, Token

__all__ = ["PAYME_API_VERSION", "PAYME_SCOPE", "PayMeEmulator"]

PAYME_API_VERSION: Final = b"1709847567"
PAYME_SCOPE: Final = "create:token post:charges get:charges delete:charges"
_SCOPE_BY_METHOD: Final = {
    "GET": "get:charges",
    "HEAD": "get:charges",
    "POST": "post:charges",
    "PUT": "post:charges",
    "PATCH": "post:charges",
    "DELETE": "delete:charges",
}


def _payme_error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, _payme_body(False, code, message), NO_STORE)


def _payme_body(success: bool, code: str, message: str) -> dict[str, Any]:
    return {
        "action": "authorize",
        "success": success,
        "authorization": {
            "meta": {"status": {"code": code, "message_ilgn": [{"locale": "es_PE", "value": message}]}}
        },
    }


class PayMeEmulator(ProviderEmulator):
    """Pay-me: a JSON ``authorize`` action, a versioned API, per-method charge scopes."""

    name = "payme"
    endpoint_path = "/token"
    default_scope = PAYME_SCOPE
    credential_defaults = (("audience", "https://api.payme.test"),)

    @classmethod
    def default_client(cls, *, business_count: int) -> ClientSpec:
        """A client with the documented scopes."""
        return ClientSpec(new_client_id("payme"), new_secret(), scope=PAYME_SCOPE)

    def resource_problem(self, token: Token, headers: Mapping[bytes, bytes]) -> str | None:
        """Resource calls carry ``ALG-API-VERSION`` too."""
        if headers.get(b"alg-api-version") != PAYME_API_VERSION:
            return "ALG-API-VERSION header missing or not supported"
        return None

    def needed_scope(self, method: str) -> str | None:
        """The charge scope of the method (``post:charges`` for methods not listed)."""
        return _SCOPE_BY_METHOD.get(method, "post:charges")

    def success_false_reply(self) -> Reply:
        """Pay-me's internal-error answer, with its 2xx status."""
        return json_reply(200, _payme_body(False, "99", "Error interno, intente nuevamente"), NO_STORE)

    def token(self, clients: Mapping[str, Client], request: Request) -> Outcome:
        """The ``authorize`` action; 200 with the scopes asked for (``create:token`` among them)."""
        data = json_object(request.body)
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
        client = clients.get(client_id)
        if client is None or not same_secret(data["client_secret"], client.secret):
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

        return client_id, Grant(client, requested, render)
