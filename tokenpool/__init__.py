"""tokenpool: a valid OAuth2 client-credentials token, ready for every worker and every provider.

The public API lives here; modules with a leading underscore are private.
"""

from . import providers
from ._auth import SyncTokenAuth, TokenAuth
from ._blocking import BlockingTokenPool
from ._clock import Clock, ManualClock, MonotonicClock
from ._exceptions import (
    AdapterError,
    ConfigurationError,
    CredentialsRejected,
    ForkedPoolError,
    InsecureTransportError,
    InvalidTokenResponse,
    PoolStateError,
    TokenEndpointError,
    TokenEndpointTimeout,
    TokenEndpointTLSError,
    TokenEndpointUnreachable,
    TokenPoolError,
    TokenRequestError,
    TokenWaitTimeout,
    UnknownProviderError,
)
from ._pool import CellStatistics, PoolStatistics, TokenPool
from ._secret import Secret
from ._source import RenewalDeferred, TokenSource
from ._timing import RefreshPolicy
from ._token import Token, TokenResponse

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "BlockingTokenPool",
    "CellStatistics",
    "Clock",
    "ConfigurationError",
    "CredentialsRejected",
    "ForkedPoolError",
    "InsecureTransportError",
    "InvalidTokenResponse",
    "ManualClock",
    "MonotonicClock",
    "PoolStateError",
    "PoolStatistics",
    "RefreshPolicy",
    "RenewalDeferred",
    "Secret",
    "SyncTokenAuth",
    "Token",
    "TokenAuth",
    "TokenEndpointError",
    "TokenEndpointTLSError",
    "TokenEndpointTimeout",
    "TokenEndpointUnreachable",
    "TokenPool",
    "TokenPoolError",
    "TokenRequestError",
    "TokenResponse",
    "TokenSource",
    "TokenWaitTimeout",
    "UnknownProviderError",
    "__version__",
    "providers",
]


def _claim_public_names() -> None:
    """Public classes and functions say ``tokenpool.X`` in reprs, tracebacks, docs and pickles.

    They are defined in private modules; the public name is the one to show
    and the one a pickle resolves (``tokenpool.TokenEndpointError``).
    """
    namespace = globals()
    for name in __all__:
        value = namespace[name]
        if callable(value) and getattr(value, "__module__", "").startswith("tokenpool."):
            value.__module__ = "tokenpool"


_claim_public_names()
