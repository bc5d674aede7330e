"""A generic RFC 6749 §4.4 token endpoint (the runtime side: ``tokenpool/providers/_generic.py``).

``POST /generic/oauth/token`` takes a URL-encoded ``grant_type=client_credentials``
with the client authenticated by ``client_secret_basic`` (its id and secret
form-encoded before base64 as §2.3.1 says, or raw as many clients send them) or
``client_secret_post``, not both; parameters must not repeat.  Any ``scope`` is
granted as asked.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._settings import ClientSpec
from .._wire import Request, basic_credentials, form_value, parse_form, same_secret
from ._base import Grant, Outcome, ProviderEmulator, new_client_id, new_secret, oauth_error

if TYPE_CHECKING:
    from .._ledger import Client

__all__ = ["ClientCredentialsEmulator"]


class ClientCredentialsEmulator(ProviderEmulator):
    """The plain RFC 6749 client credentials grant."""

    name = "generic"
    endpoint_path = "/oauth/token"

    @classmethod
    def default_client(cls, *, business_count: int) -> ClientSpec:
        """A client whose secret contains characters that §2.3.1 form-encoding changes (``+ / : %``)."""
        return ClientSpec(new_client_id("generic-client"), new_secret() + "+/:%")

    def token(self, clients: Mapping[str, Client], request: Request) -> Outcome:
        """``grant_type=client_credentials`` with ``client_secret_basic`` or ``_post``; 200."""
        form = parse_form(request)
        if form is None:
            return None, oauth_error(
                400, "invalid_request", "expected an application/x-www-form-urlencoded body"
            )
        repeated = sorted(name for name, values in form.items() if len(values) > 1)
        if repeated:
            return None, oauth_error(
                400, "invalid_request", f"parameters must not repeat: {', '.join(repeated)}"
            )
        has_authorization = b"authorization" in request.headers
        basic = basic_credentials(request.headers)
        post_id, post_secret = form_value(form, "client_id"), form_value(form, "client_secret")
        candidates: list[tuple[str, str]] = []
        if basic is not None:
            # RFC 6749 §2.3.1 says form-encode both before base64; many clients send them raw.
            candidates = [basic, (urllib.parse.unquote_plus(basic[0]), urllib.parse.unquote_plus(basic[1]))]
        elif post_id is not None and post_secret is not None:
            candidates = [(post_id, post_secret)]
        client_id = candidates[-1][0] if candidates else post_id
        if has_authorization and post_secret is not None:
            return client_id, oauth_error(400, "invalid_request", "use only one client authentication method")
        grant_type = form_value(form, "grant_type")
        if not grant_type:
            return client_id, oauth_error(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return client_id, oauth_error(
                400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
            )
        for candidate_id, candidate_secret in candidates:
            client = clients.get(candidate_id)
            if client is not None and same_secret(candidate_secret, client.secret):
                break
        else:
            description = (
                "client authentication failed"
                if candidates or has_authorization
                else "client authentication required"
            )
            return client_id, oauth_error(401, "invalid_client", description, realm="generic")
        client_id = client.spec.client_id
        scopes = frozenset((form_value(form, "scope") or "").split())

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}

        return client_id, Grant(client, scopes, render)
