"""What the emulator remembers of each client and each token it issued: plain slotted records."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._settings import ClientSpec

__all__ = ["Client", "Token"]


class Client:
    """A registered client as the server sees it now (its secret may have been rotated)."""

    __slots__ = ("businesses", "scope_order", "scopes", "secret", "spec", "tokens")

    def __init__(self, spec: ClientSpec, default_scope: str) -> None:
        self.spec = spec
        self.secret = spec.client_secret
        self.scope_order = tuple((spec.scope or default_scope).split())
        self.scopes = frozenset(self.scope_order)
        self.businesses = frozenset(spec.business_uuids)
        # The tracked tokens issued to this client (pruned with the ledger's table),
        # so that revoke-on-issue touches only this client's tokens.
        self.tokens: dict[str, Token] = {}


class Token:
    """One issued access token: whose it is, what it may do, and until when."""

    __slots__ = ("client", "expires_at", "provider", "revoked", "scopes")

    def __init__(self, provider: str, client: Client, scopes: frozenset[str], expires_at: float) -> None:
        self.provider = provider
        self.client = client
        self.scopes = scopes
        self.expires_at = expires_at
        self.revoked = False
