"""The fleet tier: one token per client for a whole fleet of worker processes, shared through Redis.

Needs the ``redis`` extra (``pip install 'tokenpool[redis]'``: redis-py and,
for encryption at rest, ``cryptography``).  ``import tokenpool`` never imports
this package; redis-py itself is imported only when a pool opens the source.

- :class:`RedisStore`: the settings (no I/O); ``store.source(fallback, …)``
  makes the token source a pool uses.
- :class:`FleetTokenSource`: read the shared token, or take the lease and
  fetch through the HTTP source and publish; fall back to the HTTP source on
  any store fault.
- :data:`STORE_OUTCOMES`: the ``outcome`` values passed to ``on_event``.

Threat model: anyone who can read Redis can use an unencrypted token until it
expires; with ``encryption_keys`` they see only ciphertext, the token's
SHA-256, its lifetime and scope.  Keys are keyed digests of the provider's
identity, so they do not reveal client ids.  Client secrets never go to Redis.
Anyone who can *write* Redis can delete shared tokens (causing token requests)
or plant garbage (causing fallback to per-process refresh); with encryption
keys they cannot plant a token that would be adopted.
"""

from .._metrics import STORE_OUTCOMES
from ._source import FleetTokenSource
from ._store import RedisStore

__all__ = ["STORE_OUTCOMES", "FleetTokenSource", "RedisStore"]
