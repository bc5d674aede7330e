"""The emulated providers, one module each, named like their adapters in ``tokenpool/providers/``.

Not a public API (the emulator's public names are in :mod:`tokenpool.testing`).
Each module holds one provider's token endpoint and its resource rules as a
:class:`~._base.ProviderEmulator`; the core (``tokenpool/testing/_app.py`` and
``_endpoints.py``) routes requests to them and does the counting, faults and
token bookkeeping that all providers share.
"""

from __future__ import annotations

from typing import Final

from .._constants import PROVIDERS
from .._settings import ClientSpec, EmulatorSettings
from ._base import ProviderEmulator
from ._generic import ClientCredentialsEmulator
from ._navro import NavroEmulator
from ._ntxpay import NtxPayMXEmulator, NtxPayPixEmulator
from ._payme import PayMeEmulator
from ._zertiban import ZertibanEmulator

__all__ = ["EMULATORS", "ProviderEmulator", "build_emulators", "default_clients"]


#: The emulator classes, in :data:`~tokenpool.testing.PROVIDERS` order.
EMULATORS: Final[tuple[type[ProviderEmulator], ...]] = (
    NtxPayMXEmulator,
    NtxPayPixEmulator,
    PayMeEmulator,
    ZertibanEmulator,
    NavroEmulator,
    ClientCredentialsEmulator,
)
assert tuple(emulator.name for emulator in EMULATORS) == PROVIDERS


def build_emulators(settings: EmulatorSettings) -> dict[str, ProviderEmulator]:
    """One emulator per provider, for one app."""
    return {emulator.name: emulator.from_settings(settings) for emulator in EMULATORS}


def default_clients(*, business_count: int = 1000) -> dict[str, tuple[ClientSpec, ...]]:
    """One client per provider with fresh random secrets.

    Zertiban's client operates *business_count* businesses whose UUIDs are
    deterministic (the same on every run); Navro's client belongs to the
    company ``acme-payouts``; the generic client's secret contains characters
    that RFC 6749 §2.3.1 form-encoding changes (``+ / : %``), so a client that
    encodes and one that does not are both exercised.
    """
    return {
        emulator.name: (emulator.default_client(business_count=business_count),) for emulator in EMULATORS
    }
