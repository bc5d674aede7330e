"""How an emulator is set up: its registered clients and the settings an :class:`EmulatorApp` starts from."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._constants import PROVIDERS

__all__ = ["ClientSpec", "EmulatorSettings", "check_scale"]


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


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    """How an :class:`EmulatorApp` behaves.

    Args:
        lifetime_scale: Multiplies every provider's documented lifetime; the
            ``expires_in`` sent is ``max(1, round(L * scale))``.
        clients: Registered clients per provider (the first one is the
            provider's default); ``None`` generates one client per provider
            with random secrets.
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
        check_scale(self.lifetime_scale)
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


def check_scale(scale: object) -> float:
    """*scale* as a float if it is a valid lifetime scale (positive, finite); else ValueError."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not (0 < scale < math.inf):
        raise ValueError(f"lifetime scale must be a positive finite number, got {scale!r}")
    return float(scale)
