"""The emulator's paths and the ready document it prints as one JSON line when it listens."""

from __future__ import annotations

import os
from typing import Any

from ._app import EmulatorApp
from ._certs import CertificateFiles
from ._constants import LISTENERS, PROVIDERS
from ._providers import EMULATORS

__all__ = ["RESOURCE_PATHS", "describe", "paths_help"]

#: Each provider's token path as the ready line gives it (Navro's ``{company}`` filled in there).
_TOKEN_PATHS = {emulator.name: emulator.endpoint_path for emulator in EMULATORS}
#: Each provider's bearer-protected resource paths (any method), below its base URL.
RESOURCE_PATHS = {
    emulator.name: ("/api/resource", *((emulator.cash_out_path,) if emulator.cash_out_path else ()))
    for emulator in EMULATORS
}


def paths_help() -> str:
    """The token and resource paths of every provider, for ``--help``."""
    lines = []
    for name in PROVIDERS:
        token = _TOKEN_PATHS[name]
        resources = ", ".join(f"/{name}{path}" for path in RESOURCE_PATHS[name])
        lines.append(f"  {name:<9} POST /{name}{token}")
        lines.append(f"  {'':<9} bearer: {resources}")
    return "\n".join(lines)


def describe(
    app: EmulatorApp, host: str, ports: dict[str, int], certs: CertificateFiles, *, lifetime_scale: float
) -> dict[str, Any]:
    """The ready document printed as one JSON line."""
    netloc = f"[{host}]" if ":" in host else host
    bases = {
        "http": f"http://{netloc}:{ports['http']}",
        "https": f"https://{netloc}:{ports['https']}",
        "mtls": f"https://{netloc}:{ports['mtls']}",
    }
    credentials = {name: app.credentials(name) for name in PROVIDERS}
    token_paths = dict(_TOKEN_PATHS)
    token_paths["navro"] = token_paths["navro"].format(company=credentials["navro"]["company"])
    return {
        "emulator": "tokenpool",
        "version": 1,
        "pid": os.getpid(),
        "host": host,
        "ports": ports,
        "listeners": bases,
        "urls": {
            name: {listener: f"{bases[listener]}/{name}" for listener in LISTENERS} for name in PROVIDERS
        },
        "token_paths": token_paths,
        "resource_paths": {name: [f"/{name}{path}" for path in RESOURCE_PATHS[name]] for name in PROVIDERS},
        "admin_url": f"{bases['http']}/_admin",
        "lifetime_scale": lifetime_scale,
        "expires_in": {name: app.expires_in(name) for name in PROVIDERS},
        "cert_dir": certs.directory,
        "ca_file": certs.ca_file,
        "server_cert_file": certs.server_cert_file,
        "client_cert": {"cert_file": certs.client_cert_file, "key_file": certs.client_key_file},
        "revoked_client_cert": {
            "cert_file": certs.revoked_client_cert_file,
            "key_file": certs.revoked_client_key_file,
        },
        "expired_client_cert": {
            "cert_file": certs.expired_client_cert_file,
            "key_file": certs.expired_client_key_file,
        },
        "credentials": credentials,
    }
