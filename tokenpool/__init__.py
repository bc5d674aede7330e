"""tokenpool: a valid OAuth2 client-credentials token, ready for every worker and every provider.

The public API lives here; modules with a leading underscore are private.
"""

from . import providers
from ._auth import SyncTokenAuth, TokenAuth
from ._blocking import BlockingTokenPool
from ._clock import Clock, ManualClock, MonotonicClock
from ._exceptions import (
    ConfigurationError,
    CredentialsRejected,
    ForkedPoolError,
    InsecureTransportError,
    InvalidTokenResponse,
    PoolStateError,
    TokenEndpointError,
    TokenEndpointUnreachable,
    TokenPoolError,
    TokenRequestError,
    TokenWaitTimeout,
    UnknownProviderError,
)
from ._pool import CellStatistics, PoolStatistics, TokenPool
from ._secret import Secret
from ._timing import RefreshPolicy
from ._token import Token, TokenResponse

__version__ = "0.1.0"

__all__ = [
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
    "Secret",
    "SyncTokenAuth",
    "Token",
    "TokenAuth",
    "TokenEndpointError",
    "TokenEndpointUnreachable",
    "TokenPool",
    "TokenPoolError",
    "TokenRequestError",
    "TokenResponse",
    "TokenWaitTimeout",
    "UnknownProviderError",
    "__version__",
    "providers",
]
