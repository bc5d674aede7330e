"""tokenpool: a valid OAuth2 client-credentials token, ready for every worker and every provider.

The public API lives here; modules with a leading underscore are private.
"""

from typing import TYPE_CHECKING, Any

from . import providers
from ._auth import SyncTokenAuth, TokenAuth
from ._blocking import BlockingTokenPool
from ._clock import Clock, MonotonicClock
from ._config import Config, load_config
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
from ._pool import TokenPool
from ._secret import Secret
from ._source import RenewalDeferred, TokenSource
from ._statistics import CellStatistics, PoolStatistics
from ._timing import RefreshPolicy
from ._token import Token, TokenResponse

__version__ = "0.1.0"

__all__ = [
    "AdapterError",
    "BlockingTokenPool",
    "CellStatistics",
    "Clock",
    "Config",
    "ConfigurationError",
    "CredentialsRejected",
    "ForkedPoolError",
    "InsecureTransportError",
    "InvalidTokenResponse",
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
    "load_config",
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


if not TYPE_CHECKING:  # a type checker should flag the old name, and any typo, as missing

    def __getattr__(name: str) -> Any:
        if name == "ManualClock":
            import warnings

            warnings.warn(
                "tokenpool.ManualClock moved to tokenpool.testing.ManualClock (a test tool); "
                "the old name goes away in 0.3",
                DeprecationWarning,
                stacklevel=2,
            )
            from .testing import ManualClock

            return ManualClock
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
