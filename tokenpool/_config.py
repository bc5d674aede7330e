"""TOML configuration: providers by name, secrets from the environment only.

Example::

    [pool]
    warm_up = "wait"                  # any TokenPool keyword that is a plain value

    [providers.payouts]
    type = "zertiban"
    client_id = "my-client"
    client_secret = "${ZERTIBAN_CLIENT_SECRET}"
    business_uuid = "5f0c…"

    [providers.payouts.refresh]       # optional RefreshPolicy fields
    ratio = 0.8

``${NAME}`` is replaced by the environment variable ``NAME`` in any string.
Secret-bearing keys (``client_secret``, ``key_password``) *must* be such a
reference: a literal secret in a file is refused, because files get committed,
copied and attached to tickets.  Every error names the provider and the key
and never repeats a secret's value.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._exceptions import ConfigurationError
from ._timing import RefreshPolicy
from .providers import ClientCertificate, Provider

__all__ = ["Config", "load_config", "parse_config", "provider_from_table"]

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECRET_KEYS = frozenset({"client_secret", "key_password"})
#: Keys that describe a client certificate rather than a provider field.
CERT_KEYS = frozenset({"cert_file", "key_file", "key_password"})
POOL_KEYS = frozenset(
    {
        "warm_up",
        "warm_up_timeout",
        "ca_file",
        "max_concurrent_requests",
        "max_requests_per_host",
        "metrics_interval",
        "metrics_label",
        "store",
    }
)
#: Keys of ``[pool.store]`` (``tokenpool.fleet.RedisStore``).
STORE_KEYS = frozenset(
    {
        "url",
        "username",
        "password",
        "ssl_ca_certs",
        "operation_timeout",
        "lease_ttl",
        "poll_interval",
        "key_prefix",
        "retry_after_failure",
        "encryption_keys_env",
    }
)


def provider_types() -> dict[str, type[Provider]]:
    """Config ``type`` → adapter class."""
    from . import providers

    return {
        "client_credentials": providers.ClientCredentials,
        "ntxpay_mx": providers.NtxPayMX,
        "ntxpay_pix": providers.NtxPayPix,
        "payme": providers.PayMe,
        "zertiban": providers.Zertiban,
        "navro": providers.Navro,
    }


@dataclass(frozen=True)
class Config:
    """A configuration file, read and checked: the providers and the :class:`~tokenpool.TokenPool` options.

    Build a pool from it with ``TokenPool(config.providers, **config.pool_options)``
    (or ``BlockingTokenPool``), adding or overriding options as keywords.

    Attributes:
        providers: Name → provider adapter, in the file's order.
        pool_options: The ``[pool]`` table as keyword arguments (``store`` is a
            built :class:`~tokenpool.fleet.RedisStore` when ``[pool.store]`` is given).
    """

    providers: Mapping[str, Provider]
    pool_options: Mapping[str, Any]


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read and check a TOML configuration file (the format: ``docs/configuration.md``).

    A blocking file read: call it before the event loop runs, or through
    ``anyio.to_thread.run_sync`` inside it.

    Args:
        path: The file; relative certificate and CA paths in it are resolved
            against its directory.
        environ: Where ``${NAME}`` references are looked up (default: ``os.environ``).

    Raises:
        ConfigurationError: the file is missing or unreadable, not TOML, or a
            value is wrong: one line naming the file, the table and the key,
            never a secret's value.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{file}: cannot read it ({type(exc).__name__})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message names the line and column, not the content.
        raise ConfigurationError(f"{file}: not valid TOML: {exc}") from None
    return parse_config(data, environ=environ, source=str(file), base_dir=file.parent)


def parse_config(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    source: str = "config",
    base_dir: Path | None = None,
) -> Config:
    """Validate an already-decoded configuration mapping."""
    env = os.environ if environ is None else environ
    unknown = set(data) - {"pool", "providers"}
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown top-level keys {sorted(unknown)}; expected [pool], [providers.*]"
        )
    pool_options = _pool_options(data.get("pool", {}), env, source, base_dir)
    providers_table = data.get("providers")
    if not isinstance(providers_table, dict) or not providers_table:
        raise ConfigurationError(f"{source}: no providers; add a [providers.NAME] table")
    providers: dict[str, Provider] = {}
    for name, table in providers_table.items():
        providers[name] = provider_from_table(name, table, environ=env, source=source, base_dir=base_dir)
    return Config(providers=providers, pool_options=pool_options)


def provider_from_table(
    name: str,
    table: Any,
    *,
    environ: Mapping[str, str] | None = None,
    source: str = "config",
    base_dir: Path | None = None,
) -> Provider:
    """One adapter from its ``[providers.NAME]`` table, validated as :func:`parse_config` does.

    For code that configures a provider from values rather than a file
    (``tokenpool.loadtest``): secrets are still ``${NAME}`` references,
    resolved from *environ* (``os.environ`` by default).
    """
    env = os.environ if environ is None else environ
    where = f"{source}: provider {name!r}"
    if not isinstance(table, dict):
        raise ConfigurationError(f"{where}: expected a table")
    return _provider(name, table, env, where, base_dir)


def _expand(value: Any, env: Mapping[str, str], where: str, key: str) -> Any:
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            variable = match.group(1)
            if variable not in env:
                raise ConfigurationError(f"{where}: key {key!r} refers to ${{{variable}}}, which is not set")
            return env[variable]

        return _REFERENCE.sub(lookup, value)
    if isinstance(value, list):
        return [_expand(item, env, where, key) for item in value]
    if isinstance(value, dict):
        return {k: _expand(v, env, where, f"{key}.{k}") for k, v in value.items()}
    return value


def _path(value: object, base_dir: Path | None, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}: key {key!r} must be a file path (a string), got {_shown(value)}")
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


def _pool_options(table: Any, env: Mapping[str, str], source: str, base_dir: Path | None) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigurationError(f"{source}: [pool] must be a table")
    unknown = set(table) - POOL_KEYS
    if unknown:
        raise ConfigurationError(
            f"{source}: [pool] has unknown keys {sorted(unknown)}; allowed: {sorted(POOL_KEYS)}"
        )
    store = table.get("store")
    options = {
        key: _expand(value, env, f"{source}: [pool]", key) for key, value in table.items() if key != "store"
    }
    for key, value in options.items():
        _check_pool_value(key, value, f"{source}: [pool]")
    if "ca_file" in options:
        options["ca_file"] = _path(options["ca_file"], base_dir, f"{source}: [pool]", "ca_file")
    if store is not None:
        options["store"] = _store(store, env, source, base_dir)
    return options


_WARM_UP = ("wait", "background", "lazy")
_LABELS = ("kind", "name")


def _check_pool_value(key: str, value: object, where: str) -> None:
    """Refuse a ``[pool]`` value of the wrong type or range, naming the key (TOML has no callables)."""
    problem = None
    if key == "warm_up" and value not in _WARM_UP:
        problem = "one of " + ", ".join(repr(v) for v in _WARM_UP)
    elif key == "metrics_label" and value not in _LABELS:
        problem = "'kind' or 'name'"
    elif key in {"max_concurrent_requests", "max_requests_per_host"} and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ):
        problem = "a positive integer"
    elif key in {"warm_up_timeout", "metrics_interval"} and not (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf
    ):
        problem = "a positive number of seconds"
    if problem is not None:
        raise ConfigurationError(f"{where}: key {key!r} must be {problem}, got {_shown(value)}")


def _shown(value: object) -> str:
    """A config value as an error may show it: short, with its TOML type (never a secret key's value)."""
    kinds: dict[type, str] = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    containers: dict[type, str] = {dict: "a table", list: "an array"}
    kind = kinds.get(type(value))
    if kind is None:
        return containers.get(type(value), f"a {type(value).__name__}")
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:39] + '…'} ({kind})"


def _store(table: Any, env: Mapping[str, str], source: str, base_dir: Path | None) -> Any:
    """A ``tokenpool.fleet.RedisStore`` from ``[pool.store]`` (redis-py is imported only then)."""
    where = f"{source}: [pool.store]"
    if not isinstance(table, dict):
        raise ConfigurationError(f"{where} must be a table")
    unknown = set(table) - STORE_KEYS
    if unknown:
        raise ConfigurationError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(STORE_KEYS)}")
    if "url" not in table:
        raise ConfigurationError(f"{where}: key 'url' is required (redis://host:port/db)")
    password = table.get("password")
    if password is not None and not (isinstance(password, str) and _REFERENCE.fullmatch(password)):
        # Like client secrets: a password never sits in a file that gets committed.
        raise ConfigurationError(
            f"{where}: key 'password' must be a ${{VARIABLE}} reference to the environment"
        )
    options = {key: _expand(value, env, where, key) for key, value in table.items()}
    if "ssl_ca_certs" in options:
        options["ssl_ca_certs"] = _path(options["ssl_ca_certs"], base_dir, where, "ssl_ca_certs")
    keys_env = options.pop("encryption_keys_env", None)
    from .fleet import RedisStore

    if keys_env is not None:
        if not isinstance(keys_env, str) or not keys_env:
            raise ConfigurationError(f"{where}: key 'encryption_keys_env' must name an environment variable")
        options["encryption_keys"] = RedisStore.keys_from_env(keys_env, env)
    try:
        return RedisStore(**options)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise ConfigurationError(f"{where}: {type(exc).__name__} in a value (check the types)") from None


def _provider(
    name: str, table: dict[str, Any], env: Mapping[str, str], where: str, base_dir: Path | None
) -> Provider:
    types = provider_types()
    kind = table.get("type")
    if kind not in types:
        raise ConfigurationError(f"{where}: key 'type' must be one of {sorted(types)}, got {kind!r}")
    cls = types[kind]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    takes_cert = "client_certificate" in fields
    allowed = (set(fields) - {"client_certificate"}) | {"type"} | (CERT_KEYS if takes_cert else set())
    unknown = set(table) - allowed
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown keys {sorted(unknown)}; {kind} accepts {sorted(allowed - {'type'})}"
        )

    kwargs: dict[str, Any] = {}
    cert: dict[str, Any] = {}
    for key, raw in table.items():
        if key == "type":
            continue
        if key in SECRET_KEYS and not (isinstance(raw, str) and _REFERENCE.fullmatch(raw.strip())):
            # Say what is wrong without repeating what was written.
            raise ConfigurationError(
                f"{where}: key {key!r} must be an environment reference like "
                f'"${{{name.upper()}_{key.upper()}}}"; '
                "secrets are never read from the file itself"
            )
        value = _expand(raw, env, where, key)
        if key in SECRET_KEYS and not value:
            raise ConfigurationError(f"{where}: key {key!r} refers to an empty environment variable")
        if key == "refresh":
            if not isinstance(value, dict):
                raise ConfigurationError(f"{where}: [refresh] must be a table")
            try:
                kwargs[key] = RefreshPolicy(**value)
            except TypeError:
                known = [f.name for f in dataclasses.fields(RefreshPolicy)]
                raise ConfigurationError(f"{where}: [refresh] accepts only {known}") from None
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: {exc}") from None
        elif key in CERT_KEYS:
            cert[key] = _path(value, base_dir, where, key) if key != "key_password" else value
        else:
            kwargs[key] = value
    if takes_cert:
        if "cert_file" not in cert:
            raise ConfigurationError(
                f"{where}: {kind} needs 'cert_file' (and usually 'key_file') for mutual TLS"
            )
        try:
            kwargs["client_certificate"] = ClientCertificate(
                cert_file=cert["cert_file"], key_file=cert.get("key_file"), password=cert.get("key_password")
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    try:
        return cls(**kwargs)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    except TypeError as exc:
        # Missing required keys; the message names parameters, never values.
        missing = [k for k, f in fields.items() if _required(f) and k not in kwargs]
        detail = f"missing keys {missing}" if missing else f"invalid settings ({type(exc).__name__})"
        raise ConfigurationError(f"{where}: {detail}") from None


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
