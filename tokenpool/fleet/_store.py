"""``RedisStore``: the fleet tier's settings, checked, and what a pool asks of them (its token source)."""

from __future__ import annotations

import base64
import binascii
import importlib.util
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .._exceptions import ConfigurationError
from .._secret import Secret
from .._source import TokenSource
from ._codec import Cipher, keys_for
from ._connection import make_client, probe
from ._source import FleetTokenSource

if TYPE_CHECKING:
    from .._clock import Clock
    from ..providers import Provider

__all__ = ["RedisStore"]

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# No braces (the digest is the hash tag), no spaces or control characters.
_PREFIX = re.compile(r"[A-Za-z0-9._:/-]{1,100}")
_AES_256_KEY_BYTES = 32
#: Longest lease: a lease outliving an hour would only hide a dead holder for longer.
_MAX_LEASE_TTL = 3600.0


class RedisStore:
    """Share one token per client across a fleet of worker processes, through Redis.

    A configuration object: it does no I/O and imports nothing heavy until a
    pool opens the source it makes (:meth:`source`).  It runs on asyncio only
    (redis-py's asyncio client); a pool on trio refuses it when it opens.

    Args:
        url: ``redis://[user[:password]@]host[:port][/db]`` or ``rediss://…``
            (TLS with certificate and host name verification).  User and
            password are percent-decoded; no query options (pass settings as
            arguments).
        username: Redis ACL user (instead of putting it in *url*).
        password: Redis password (``str`` or :class:`~tokenpool.Secret`;
            instead of putting it in *url*).  Never shown in a repr, an error
            or a log line.
        ssl_ca_certs: CA bundle (PEM) that signed the server's certificate,
            for ``rediss://`` (default: certifi's bundle).  Loaded in a worker
            thread when the pool opens.
        operation_timeout: Deadline of every Redis round trip, in seconds,
            connection set-up included.  Past it the fetch falls back to the
            HTTP source.  The default (50 ms) suits a Redis in the same data
            centre; over a long TLS path raise it above the handshake time.
        lease_ttl: Lifetime of the refresh lease, in seconds: how long the
            fleet waits for a process that died mid-refresh before another
            takes over.  Make it at least the providers'
            ``RefreshPolicy.request_timeout`` (15 s by default), or a slow
            token request may outlive its lease and a second process fetch
            alongside it.
        poll_interval: How often a process waiting for another's lease reads
            the shared token again, in seconds.
        key_prefix: First part of every key (letters, digits, ``._:/-``).
        encryption_keys: Key id → 32-byte AES-256 key.  Tokens are stored
            encrypted (AES-GCM) with the first key; every key is tried to
            decrypt, so keys rotate by id: deploy ``{old, new}`` everywhere,
            then ``{new, old}``, then drop ``old``.  With keys, a plain value
            in Redis is refused.  See :meth:`keys_from_env`.
        retry_after_failure: After a store fault (Redis down, slow, garbage),
            the longest a proactive renewal waits before it tries the store
            again, in seconds (it keeps serving its current token meanwhile,
            and fetches per process once half its renewal window is gone).
            A fetch a caller waits for never waits for the store: it goes to
            the provider at once.

    Raises:
        ConfigurationError: a setting is invalid (the message names it), or
            redis-py (or ``cryptography`` when keys are given) is not installed.
    """

    __slots__ = (
        "_cipher_keys",
        "_db",
        "_host",
        "_password",
        "_port",
        "_tls",
        "_username",
        "key_prefix",
        "lease_ttl",
        "operation_timeout",
        "poll_interval",
        "retry_after_failure",
        "ssl_ca_certs",
    )

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | Secret | None = None,
        ssl_ca_certs: str | os.PathLike[str] | None = None,
        operation_timeout: float = 0.05,
        lease_ttl: float = 10.0,
        poll_interval: float = 0.05,
        key_prefix: str = "tokenpool",
        encryption_keys: Mapping[str, bytes] | None = None,
        retry_after_failure: float = 5.0,
    ) -> None:
        if importlib.util.find_spec("redis") is None:
            raise ConfigurationError("RedisStore needs redis-py: pip install 'tokenpool[redis]'")
        self._tls, self._host, self._port, self._db, url_user, url_password = _parse_url(url)
        if username is not None and url_user is not None:
            raise ConfigurationError(
                "RedisStore.username: give the user in the url or as username=, not both"
            )
        if password is not None and url_password is not None:
            raise ConfigurationError(
                "RedisStore.password: give the password in the url or as password=, not both"
            )
        username = username if username is not None else url_user
        if username is not None and (not isinstance(username, str) or not username):
            raise ConfigurationError("RedisStore.username must be a non-empty str")
        self._username: str | None = username
        self._password: Secret | None = _password(password if password is not None else url_password)
        if ssl_ca_certs is not None:
            if not self._tls:
                raise ConfigurationError("RedisStore.ssl_ca_certs needs a rediss:// url")
            if not isinstance(ssl_ca_certs, str | os.PathLike):
                raise ConfigurationError(
                    f"RedisStore.ssl_ca_certs must be a path, got {type(ssl_ca_certs).__name__}"
                )
            ssl_ca_certs = os.fspath(ssl_ca_certs)
            # A stat, not a read: the bundle is loaded in a worker thread when the pool opens.
            if not os.path.isfile(ssl_ca_certs):
                raise ConfigurationError(f"RedisStore.ssl_ca_certs: no such file: {ssl_ca_certs!r}")
        self.ssl_ca_certs: str | None = ssl_ca_certs
        self.operation_timeout = _seconds("operation_timeout", operation_timeout, maximum=60.0)
        self.lease_ttl = _seconds("lease_ttl", lease_ttl, minimum=0.001, maximum=_MAX_LEASE_TTL)
        self.poll_interval = _seconds("poll_interval", poll_interval, maximum=self.lease_ttl)
        self.retry_after_failure = _seconds("retry_after_failure", retry_after_failure, maximum=3600.0)
        if not isinstance(key_prefix, str) or not _PREFIX.fullmatch(key_prefix):
            raise ConfigurationError(
                "RedisStore.key_prefix must be 1-100 characters of letters, digits and ._:/-"
            )
        self.key_prefix = key_prefix
        self._cipher_keys = _encryption_keys(encryption_keys)

    # -- settings -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's URL with the password masked (safe to log)."""
        scheme = "rediss" if self._tls else "redis"
        auth = ""
        if self._username is not None or self._password is not None:
            user = urllib.parse.quote(self._username or "", safe="")
            auth = f"{user}:***@" if self._password is not None else f"{user}@"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{auth}{host}:{self._port}/{self._db}"

    @property
    def encrypted(self) -> bool:
        """Whether tokens are stored encrypted."""
        return self._cipher_keys is not None

    @property
    def key_ids(self) -> list[str]:
        """The encryption key ids, the encrypting one first (never the keys)."""
        return list(self._cipher_keys or {})

    def __repr__(self) -> str:
        return (
            f"<RedisStore url={self.url!r} key_prefix={self.key_prefix!r} "
            f"operation_timeout={self.operation_timeout:g} lease_ttl={self.lease_ttl:g} "
            f"encrypted={self.encrypted}>"
        )

    @staticmethod
    def keys_from_env(
        variable: str = "TOKENPOOL_FLEET_KEYS", environ: Mapping[str, str] | None = None
    ) -> dict[str, bytes]:
        """Encryption keys from an environment variable: ``kid1:base64key,kid2:base64key``.

        The first key encrypts.  Each key is 32 bytes in standard base64
        (``python -c "import os,base64; print(base64.b64encode(os.urandom(32)).decode())"``).

        Args:
            variable: The variable's name.
            environ: Where to look (default ``os.environ``).

        Raises:
            ConfigurationError: the variable is missing, empty or malformed (the
                message names the variable and the key id, never a key).
        """
        env = os.environ if environ is None else environ
        text = env.get(variable)
        if text is None or not text.strip():
            raise ConfigurationError(f"environment variable {variable} is not set or empty")
        keys: dict[str, bytes] = {}
        for index, item in enumerate(text.split(","), start=1):
            kid, sep, encoded = item.strip().partition(":")
            kid = kid.strip()
            if not sep or not _KEY_ID.fullmatch(kid):
                raise ConfigurationError(
                    f"{variable}: entry {index} must be key_id:base64key with a key id of letters, "
                    "digits and ._-"
                )
            if kid in keys:
                raise ConfigurationError(f"{variable}: key id {kid!r} appears twice")
            try:
                key = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError):
                raise ConfigurationError(f"{variable}: the key of {kid!r} is not valid base64") from None
            if len(key) != _AES_256_KEY_BYTES:
                raise ConfigurationError(
                    f"{variable}: the key of {kid!r} must be {_AES_256_KEY_BYTES} bytes, got {len(key)}"
                )
            keys[kid] = key
        return keys

    # -- the source -----------------------------------------------------------------------------

    def source(
        self,
        fallback: TokenSource,
        *,
        clock: Clock,
        log: Any,
        on_event: Callable[[str, str], None],
    ) -> FleetTokenSource:
        """The fleet token source: the shared token, or *fallback* (the pool's HTTP source).

        Args:
            fallback: Where tokens really come from (the lease holder's fetch,
                and every fetch while the store is faulty).
            clock: The pool's clock; adopted tokens are converted to it.
            log: A structlog-style logger.
            on_event: Called as ``on_event(outcome, provider_name)`` with an
                outcome from :data:`~tokenpool.fleet.STORE_OUTCOMES`.
        """
        if not isinstance(fallback, TokenSource):
            raise ConfigurationError(f"fallback must be a TokenSource, got {type(fallback).__name__}")
        if not callable(on_event):
            raise ConfigurationError("on_event must be callable as on_event(outcome, provider_name)")
        return FleetTokenSource(self, fallback, clock=clock, log=log, on_event=on_event)

    async def health(self) -> dict[str, Any]:
        """Check the store with a client of its own (for ``tokenpool check``); asyncio only.

        Returns:
            See :meth:`FleetTokenSource.health`; ``fallback`` is always ``False`` here.
        """
        client = await self.connect()
        try:
            return await probe(
                client,
                url=self.url,
                encrypted=self.encrypted,
                operation_timeout=self.operation_timeout,
                fallback=False,
            )
        finally:
            with anyio.move_on_after(self.operation_timeout * 4 + 1.0, shield=True):
                await client.aclose()

    def key_names(self, provider: Provider) -> dict[str, str]:
        """The Redis keys and channel this store uses for *provider*, to inspect with ``redis-cli``.

        Returns:
            ``token`` (the shared token), ``lease`` (its value names the holder,
            ``<pid>-<random>``), ``gen`` (the generation counter) and
            ``channel`` (where publications are announced).  The names are a
            keyed digest of the provider's identity: no client id in clear.
        """
        keys = keys_for(provider, self.key_prefix)
        return {"token": keys.token, "lease": keys.lease, "gen": keys.gen, "channel": keys.channel}

    # -- internals --------------------------------------------------------------------------------

    def cipher(self) -> Cipher | None:
        return None if self._cipher_keys is None else Cipher(self._cipher_keys)

    async def connect(self) -> Any:
        """A redis-py asyncio client for this store (no connection is made yet).

        Raises:
            ConfigurationError: not running on asyncio, or the CA bundle cannot be loaded.
        """
        return await make_client(
            host=self._host,
            port=self._port,
            db=self._db,
            username=self._username,
            password=self._password,
            tls=self._tls,
            ssl_ca_certs=self.ssl_ca_certs,
            operation_timeout=self.operation_timeout,
        )


def _parse_url(url: object) -> tuple[bool, str, int, int, str | None, str | None]:
    """(tls, host, port, db, user, password) from a redis:// or rediss:// url."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError("RedisStore.url must be a redis:// or rediss:// url")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError("RedisStore.url is not a valid url (check the host and port)") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError("RedisStore.url must start with redis:// or rediss://")
    if not parts.hostname:
        raise ConfigurationError("RedisStore.url has no host")
    if parts.query or parts.fragment:
        raise ConfigurationError("RedisStore.url must not carry query options; pass settings as arguments")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigurationError("RedisStore.url: the path must be a database number such as /0")
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return (
        parts.scheme == "rediss",
        parts.hostname,
        port if port is not None else 6379,
        int(path) if path else 0,
        user,
        password,
    )


def _password(value: object) -> Secret | None:
    if value is None:
        return None
    if isinstance(value, Secret):
        return value
    if isinstance(value, str) and value:
        return Secret(value)
    raise ConfigurationError("RedisStore.password must be a non-empty str or Secret")


def _seconds(name: str, value: object, *, minimum: float = 0.0, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"RedisStore.{name} must be a number of seconds, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number <= minimum or number > maximum:
        raise ConfigurationError(
            f"RedisStore.{name} must be a positive number of seconds up to {maximum:g}, got {value!r}"
        )
    return number


def _encryption_keys(keys: object) -> dict[str, bytes] | None:
    if keys is None:
        return None
    if not isinstance(keys, Mapping) or not keys:
        raise ConfigurationError("RedisStore.encryption_keys must be a non-empty mapping of key id to bytes")
    checked: dict[str, bytes] = {}
    for kid, key in keys.items():
        if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
            raise ConfigurationError(
                "RedisStore.encryption_keys: key ids must be 1-64 letters, digits or ._-"
            )
        if not isinstance(key, bytes | bytearray) or len(key) != _AES_256_KEY_BYTES:
            # The length is fine to show; the key never is.
            length = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
            raise ConfigurationError(
                f"RedisStore.encryption_keys[{kid!r}] must be {_AES_256_KEY_BYTES} bytes, got {length}"
            )
        checked[kid] = bytes(key)
    if importlib.util.find_spec("cryptography") is None:
        raise ConfigurationError(
            "RedisStore.encryption_keys needs the cryptography package: pip install 'tokenpool[redis]'"
        )
    return checked
