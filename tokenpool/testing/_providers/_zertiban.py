"""Zertiban as the emulator serves it (the runtime side: ``tokenpool/providers/_zertiban.py``).

``POST /zertiban/idp/oauth2/token`` takes a URL-encoded ``grant_type`` with
the client authenticated by HTTP Basic only (credentials in the body are
refused).  A client operates many businesses: resource calls must name one of
the token's client's businesses in ``x-tenant-id``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .._settings import ClientSpec
from .._wire import Request, basic_credentials, parse_form, same_secret
from ._base import Grant, Outcome, ProviderEmulator, grant_problem, new_client_id, new_secret, oauth_error

if TYPE_CHECKING:
    from .._ledger import Client, Token

__all__ = ["ZertibanEmulator", "business_uuids"]

# A fixed namespace so that the generated business UUIDs are the same on every run.
_BUSINESS_NAMESPACE: Final = uuid.UUID("6f1d4c52-5b0e-4c39-9a43-7d1f0f2f6a10")


def business_uuids(count: int) -> tuple[str, ...]:
    """*count* business UUIDs, the same on every run."""
    return tuple(str(uuid.uuid5(_BUSINESS_NAMESPACE, f"zertiban-business-{index}")) for index in range(count))


class ZertibanEmulator(ProviderEmulator):
    """Zertiban: form body, HTTP Basic, and a tenant header on resource calls."""

    name = "zertiban"
    endpoint_path = "/idp/oauth2/token"

    @classmethod
    def default_client(cls, *, business_count: int) -> ClientSpec:
        """A client operating *business_count* businesses (deterministic UUIDs)."""
        return ClientSpec(
            new_client_id("zertiban"), new_secret(), business_uuids=business_uuids(business_count)
        )

    def resource_problem(self, token: Token, headers: Mapping[bytes, bytes]) -> str | None:
        """``x-tenant-id`` must be one of the token's client's businesses."""
        tenant = headers.get(b"x-tenant-id")
        if tenant is None:
            return "x-tenant-id header is required"
        if tenant.decode("latin-1") not in token.client.businesses:
            return "x-tenant-id is not a business of this client"
        return None

    def token(self, clients: Mapping[str, Client], request: Request) -> Outcome:
        """``grant_type=client_credentials`` with HTTP Basic; 200."""
        basic = basic_credentials(request.headers)
        client_id = basic[0] if basic else None
        form = parse_form(request)
        if form is None:
            return client_id, oauth_error(
                400, "invalid_request", "expected an application/x-www-form-urlencoded body with grant_type"
            )
        if "client_id" in form or "client_secret" in form:
            return client_id, oauth_error(
                400,
                "invalid_request",
                "client credentials must be sent in the Authorization header (HTTP Basic), not in the body",
            )
        refusal = grant_problem(form)
        if refusal is not None:
            return client_id, refusal
        if basic is None:
            return None, oauth_error(
                401, "invalid_client", "HTTP Basic client authentication required", realm="zertiban"
            )
        client = clients.get(basic[0])
        if client is None or not same_secret(basic[1], client.secret):
            return client_id, oauth_error(
                401, "invalid_client", "client authentication failed", realm="zertiban"
            )

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}

        return client_id, Grant(client, frozenset(), render)
