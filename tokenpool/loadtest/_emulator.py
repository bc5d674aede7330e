"""The emulator → providers mapping: plain settings for every cell, and the adapter each one runs.

The adapters are built by the config loader (``tokenpool._config``), from the
same kind of table a ``[providers.NAME]`` section holds, so a cell is
configured exactly as a user's TOML file would configure it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._config import provider_from_table
from .._exceptions import ConfigurationError
from .._timing import RefreshPolicy
from ._settings import ALL_PROVIDERS, FIVE_PROVIDERS, ProviderSpec

if TYPE_CHECKING:
    from ..providers import Provider
    from ..testing import EmulatorProcess

__all__ = ["build_provider", "emulator_providers", "emulator_specs"]

#: The config loader's ``type`` of each emulator provider.
_CONFIG_TYPES = {
    "ntxmx": "ntxpay_mx",
    "ntxpix": "ntxpay_pix",
    "payme": "payme",
    "zertiban": "zertiban",
    "navro": "navro",
    "generic": "client_credentials",
}
#: The environment variable the secret is read from (a mapping of its own, never ``os.environ``).
_ENV_NAME = "CLIENT_SECRET"


def emulator_specs(
    emu: EmulatorProcess,
    *,
    providers: Sequence[str] = FIVE_PROVIDERS,
    tls: bool = True,
    zertiban_tenants: int = 1,
) -> list[ProviderSpec]:
    """Plain settings for every cell that runs against the emulator *emu*.

    Args:
        emu: A running ``tokenpool.testing.EmulatorProcess``.
        providers: Emulator provider keys to include.
        tls: HTTPS (NTX Pay MX over mutual TLS) or plain HTTP.
        zertiban_tenants: Zertiban cells, one per ``businessUuid`` of the
            emulator's Zertiban client (all with the same credentials).
    """
    if zertiban_tenants < 1:
        raise ConfigurationError("zertiban_tenants must be at least 1")
    lifetimes = {name: float(p["expires_in"]) for name, p in emu.stats(events=False)["providers"].items()}
    specs: list[ProviderSpec] = []
    for group in providers:
        info = emu.client_info(group)
        client_id, secret = str(info["client_id"]), str(info["client_secret"])
        base = emu.url(group, tls=tls)
        common: dict[str, Any] = {
            "group": group,
            "token_url": emu.token_url(group, tls=tls),
            "resource_url": f"{base}/api/resource",
            "client_id": client_id,
            "client_secret": secret,
            "lifetime": lifetimes.get(group),
        }
        options: dict[str, str] = {"base_url": base}
        if group == "ntxmx":
            cert = emu.client_cert
            specs.append(
                ProviderSpec(
                    name=group,
                    options=tuple(options.items()),
                    cert_file=cert.cert_file,
                    key_file=cert.key_file,
                    **common,
                )
            )
        elif group == "zertiban":
            tenants = [str(u) for u in info.get("business_uuids") or []][:zertiban_tenants]
            if len(tenants) < zertiban_tenants:
                raise ConfigurationError(
                    f"the emulator's Zertiban client has only {len(tenants)} businesses, "
                    f"{zertiban_tenants} tenants were asked for"
                )
            width = len(str(zertiban_tenants))
            for i, tenant in enumerate(tenants):
                name = group if zertiban_tenants == 1 else f"{group}-{i + 1:0{width}d}"
                specs.append(
                    ProviderSpec(
                        name=name,
                        options=(*options.items(), ("business_uuid", tenant)),
                        api_headers=(("x-tenant-id", tenant),),
                        **common,
                    )
                )
        elif group == "navro":
            specs.append(
                ProviderSpec(
                    name=group,
                    options=(*options.items(), ("company", str(info["company"]))),
                    api_headers=(("X-API-Version", "1"),),
                    token_headers=(("X-API-Version", "1"),),
                    form=(("scope", "openid"),),
                    **common,
                )
            )
        elif group == "payme":
            options["audience"] = str(info["audience"])
            if info.get("scope"):
                options["scope"] = str(info["scope"])
            specs.append(ProviderSpec(name=group, options=tuple(options.items()), **common))
        elif group in ("ntxpix", "generic"):
            specs.append(ProviderSpec(name=group, options=tuple(options.items()), **common))
        else:
            raise ConfigurationError(f"unknown emulator provider {group!r}")
    return specs


def build_provider(spec: ProviderSpec, policy: RefreshPolicy | None = None) -> Provider:
    """The tokenpool adapter configured from *spec* (in the process that uses it).

    Built by the config loader from a ``[providers.NAME]``-style table; the
    secret reaches it the loader's way, as a ``${CLIENT_SECRET}`` reference
    resolved from a mapping that holds only that secret.
    """
    kind = _CONFIG_TYPES.get(spec.group)
    if kind is None:
        raise ConfigurationError(f"no tokenpool adapter for emulator provider {spec.group!r}")
    opts = dict(spec.options)
    base = opts.get("base_url")
    table: dict[str, Any] = {
        "type": kind,
        "client_id": spec.client_id,
        "client_secret": f"${{{_ENV_NAME}}}",
    }
    if spec.group == "ntxmx":
        assert spec.cert_file is not None
        table["cert_file"] = spec.cert_file
        if spec.key_file is not None:
            table["key_file"] = spec.key_file
    elif spec.group == "ntxpix":
        assert base is not None
    elif spec.group == "payme":
        table["audience"] = opts["audience"]
        for key in ("api_version", "scope"):
            if key in opts:
                table[key] = opts[key]
    elif spec.group == "zertiban":
        table["business_uuid"] = opts["business_uuid"]
    elif spec.group == "navro":
        table["company"] = opts["company"]
    if spec.group == "generic":
        table["token_url"] = spec.token_url
        if opts.get("scope") is not None:
            table["scope"] = opts["scope"]
    elif base is not None:
        table["base_url"] = base
    if policy is not None:
        table["refresh"] = dataclasses.asdict(policy)
    return provider_from_table(
        spec.name, table, environ={_ENV_NAME: spec.client_secret}, source="tokenpool.loadtest"
    )


def emulator_providers(
    emu: EmulatorProcess,
    *,
    providers: Sequence[str] = ALL_PROVIDERS,
    tls: bool = True,
    zertiban_tenants: int = 1,
    policy: RefreshPolicy | None = None,
) -> dict[str, Provider]:
    """Configured tokenpool providers for every cell of the running emulator *emu*, by pool name."""
    specs = emulator_specs(emu, providers=providers, tls=tls, zertiban_tenants=zertiban_tenants)
    return {spec.name: build_provider(spec, policy) for spec in specs}
