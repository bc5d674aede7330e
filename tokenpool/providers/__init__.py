"""Provider adapters: pure translators between a provider's wire format and tokenpool.

Each adapter builds the token request, parses the answer into a
:class:`~tokenpool.TokenResponse` or a typed error, and names the extra headers
the provider wants on every API call.  None of them does I/O.
"""

from ._base import ClientCertificate, Provider
from ._generic import ClientCredentials

__all__ = ["ClientCertificate", "ClientCredentials", "Provider"]
