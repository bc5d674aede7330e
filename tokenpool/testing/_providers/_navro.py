"""Navro as the emulator serves it (the runtime side: ``tokenpool/providers/_navro.py``).

``POST /navro/authentication/{company}/token`` takes a multipart or URL-encoded
``grant_type``/``scope=openid`` body, HTTP Basic client authentication and
``X-API-Version: 1``; the client must belong to the company in the path.
Resource calls need ``X-API-Version: 1`` too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .._settings import ClientSpec
from .._wire import Request, basic_credentials, form_value, json_reply, parse_form, same_secret
from ._base import Grant, Outcome, ProviderEmulator, grant_problem, new_client_id, new_secret, oauth_error

if TYPE_CHECKING:
    from .._ledger import Client, Token

__all__ = ["NAVRO_COMPANY", "NavroEmulator"]

NAVRO_COMPANY: Final = "acme-payouts"
_TOKEN_PATH: Final = re.compile(r"/authentication/([^/]+)/token")


class NavroEmulator(ProviderEmulator):
    """Navro: a company in the token path, a versioned API, HTTP Basic, ``openid`` scope."""

    name = "navro"
    endpoint_path = "/authentication/{company}/token"

    @classmethod
    def default_client(cls, *, business_count: int) -> ClientSpec:
        """A client of the company ``acme-payouts``."""
        return ClientSpec(new_client_id("navro"), new_secret(), company=NAVRO_COMPANY)

    def is_token_endpoint(self, rest: str, request: Request) -> bool:
        """``/authentication/{company}/token``, the company going to ``request.params``."""
        match = _TOKEN_PATH.fullmatch(rest)
        if match is None:
            return False
        request.params["company"] = match.group(1)
        return True

    def resource_problem(self, token: Token, headers: Mapping[bytes, bytes]) -> str | None:
        """Resource calls carry ``X-API-Version: 1`` too."""
        return "X-API-Version header must be 1" if headers.get(b"x-api-version") != b"1" else None

    def token(self, clients: Mapping[str, Client], request: Request) -> Outcome:
        """``grant_type=client_credentials&scope=openid`` with HTTP Basic; 200."""
        company = request.params["company"]
        basic = basic_credentials(request.headers)
        client_id = basic[0] if basic else None
        if not any(client.spec.company == company for client in clients.values()):
            return client_id, json_reply(404, {"error": "not_found", "error_description": "unknown company"})
        if request.headers.get(b"x-api-version") != b"1":
            return client_id, oauth_error(400, "invalid_request", "X-API-Version header must be 1")
        form = parse_form(request, multipart=True)
        if form is None:
            return client_id, oauth_error(
                400,
                "invalid_request",
                "expected a multipart/form-data or application/x-www-form-urlencoded body",
            )
        refusal = grant_problem(form)
        if refusal is not None:
            return client_id, refusal
        if "openid" not in (form_value(form, "scope") or "").split():
            return client_id, oauth_error(400, "invalid_scope", "scope must be openid")
        if basic is None:
            return None, oauth_error(
                401, "invalid_client", "HTTP Basic client authentication required", realm="navro"
            )
        client = clients.get(basic[0])
        if client is None or client.spec.company != company or not same_secret(basic[1], client.secret):
            return client_id, oauth_error(401, "invalid_client", "invalid client credentials", realm="navro")

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {
                "access_token": token,
                "expires_in": expires_in,
                "token_type": "Bearer",
                "scope": "openid",
            }

        return client_id, Grant(client, frozenset({"openid"}), render)
