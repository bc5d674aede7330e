"""What the emulator's core asks of one emulated provider.

The runtime side of this interface is ``tokenpool/providers/_base.py``.
A :class:`ProviderEmulator` judges a token request from the request and the
provider's registered clients alone: it returns the error reply the provider's
documentation shows, or a :class:`Grant`.  The core does everything else
(counting, faults, issuing and expiring the token), and asks the provider, for
resource calls, what it requires beyond a valid bearer token.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from .._wire import NO_STORE, Reply, Request, form_value, json_reply

if TYPE_CHECKING:
    from .._records import Client, Token
    from .._settings import ClientSpec, EmulatorSettings

__all__ = ["Grant", "Outcome", "ProviderEmulator", "new_client_id", "new_secret", "oauth_error"]


@dataclass(slots=True)
class Grant:
    """A token request that passed validation; the core issues the token.

    Args:
        client: The authenticated client.
        scopes: What the token may do (checked on resource calls).
        render: The success body, from the token and its ``expires_in``.
        status: The success status.
    """

    client: Client
    scopes: frozenset[str]
    render: Callable[[str, int], dict[str, Any]]
    status: int = 200


#: The client id the request claimed (for the per-client counter; None if it named none) and the verdict.
Outcome = tuple[str | None, Reply | Grant]


class ProviderEmulator(abc.ABC):
    """One provider's token endpoint and resource rules (one instance per app)."""

    #: The provider's name: the first path segment of its endpoints.
    name: ClassVar[str]
    #: The token endpoint's path after ``/{name}`` (as the adapter's ``endpoint_path``).
    endpoint_path: ClassVar[str]
    #: Scopes of a client registered without any.
    default_scope: ClassVar[str] = ""
    #: A second bearer-protected path that only takes POST and answers 201 (a payout), if any.
    cash_out_path: ClassVar[str | None] = None
    #: Entries the default client's credentials document carries when the client spec has none.
    credential_defaults: ClassVar[tuple[tuple[str, str], ...]] = ()

    @classmethod
    def from_settings(cls, settings: EmulatorSettings) -> Self:
        """The emulator for an app with these *settings* (most providers need nothing from them)."""
        return cls()

    @classmethod
    @abc.abstractmethod
    def default_client(cls, *, business_count: int) -> ClientSpec:
        """A client with a fresh random id and secret (the one registered when none are given)."""

    def is_token_endpoint(self, rest: str, request: Request) -> bool:
        """Whether *rest* (the path after ``/{name}``) is the token endpoint; may fill ``request.params``."""
        return rest == self.endpoint_path

    @abc.abstractmethod
    def token(self, clients: Mapping[str, Client], request: Request) -> Outcome:
        """Judge a token request (its body read) against the registered *clients*."""

    # The resource rules.  Each is None when the provider has no such rule (most have
    # none), so that the resource endpoint skips it for free; a provider that has one
    # defines it as a method.  ``ProviderState`` binds them once per state.

    #: ``(listener) -> error reply or None``: a listener the provider is not served on.
    refuse_listener: Callable[[str], Reply | None] | None = None
    #: ``(token, headers) -> message or None``: a required header missing or wrong (400).
    resource_problem: Callable[[Token, Mapping[bytes, bytes]], str | None] | None = None
    #: ``(method) -> scope or None``: the scope a resource call needs (403 without it).
    needed_scope: Callable[[str], str | None] | None = None

    def success_false_reply(self) -> Reply:
        """The 2xx answer of the ``success_false`` malformed fault."""
        return json_reply(200, {"success": False, "error": "server_error"}, NO_STORE)


def oauth_error(status: int, error: str, description: str, *, realm: str | None = None) -> Reply:
    """An RFC 6749 §5.2 error body (with a Basic challenge when *realm* is given)."""
    headers = list(NO_STORE)
    if realm is not None:
        headers.append((b"www-authenticate", f'Basic realm="{realm}", charset="UTF-8"'.encode()))
    return json_reply(status, {"error": error, "error_description": description}, headers)


def grant_problem(form: Mapping[str, list[str]]) -> Reply | None:
    """The 400 for a form whose ``grant_type`` is missing or not ``client_credentials`` (RFC 6749 §4.4.2)."""
    grant_type = form_value(form, "grant_type")
    if not grant_type:
        return oauth_error(400, "invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        return oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
    return None


def new_client_id(prefix: str) -> str:
    """A random client id starting with *prefix*."""
    return f"{prefix}-{secrets.token_hex(4)}"


def new_secret() -> str:
    """A random client secret of 32 characters (inside NTX PIX's 8–64 rule)."""
    return secrets.token_urlsafe(24)
