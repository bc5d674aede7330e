"""Provider adapters: pure translators between a provider's wire format and tokenpool.

Each adapter builds the token request, parses the answer into a
:class:`~tokenpool.TokenResponse` or a typed error, and names the extra headers
the provider wants on every API call.  None of them does I/O.
"""

from ._base import ClientCertificate, Provider
from ._generic import ClientCredentials
from ._navro import Navro
from ._ntxpay import NtxPayMX, NtxPayPix
from ._payme import PayMe
from ._zertiban import Zertiban

__all__ = [
    "ClientCertificate",
    "ClientCredentials",
    "Navro",
    "NtxPayMX",
    "NtxPayPix",
    "PayMe",
    "Provider",
    "Zertiban",
]
