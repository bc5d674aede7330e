"""Names and documented defaults shared by the emulator's modules (no imports, so it stays cheap)."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_LIFETIMES", "LISTENERS", "PROVIDERS"]

#: The emulated providers, in the order they are listed everywhere.
PROVIDERS: Final[tuple[str, ...]] = ("ntxmx", "ntxpix", "payme", "zertiban", "navro", "generic")

#: Token lifetimes (seconds) as each provider's documentation states them.
DEFAULT_LIFETIMES: Final[dict[str, int]] = {
    "ntxmx": 600,
    "ntxpix": 3600,
    "payme": 8600,
    "zertiban": 300,
    "navro": 300,
    "generic": 600,
}

#: The three loopback listeners: plain HTTP (HTTP/1.1 and h2c), HTTPS, and HTTPS requiring a client cert.
LISTENERS: Final[tuple[str, ...]] = ("http", "https", "mtls")
