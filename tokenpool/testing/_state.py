"""A state directory: the emulator's certificates and credentials, kept across restarts.

``tokenpool emulator --state-dir DIR`` keeps

* ``DIR/certs/``: the test CA and the server and client certificates, made on
  the first start and reused while the server certificate is valid for another
  day, so a ``ca_file`` in your configuration stays trusted;
* ``DIR/credentials.json`` (mode 0600): every provider's registered clients,
  made on the first start and read on every later one, so a static
  ``tokenpool.toml`` keeps working after a restart;
* ``DIR/emulator.env``, rewritten on every start: shell assignments of the
  values a configuration needs (base URLs, client ids and secrets, Navro's
  company, a Zertiban business, the CA and client certificate files).  Load
  them with ``set -a; . DIR/emulator.env; set +a``; ``examples/tokenpool.toml``
  refers to them by name.

These are a test server's credentials: they protect nothing real, and the
emulator listens on loopback only.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._certs import CertificateFiles, generate_certificates
from ._settings import ClientSpec

__all__ = ["ENV_FILE", "StateDirectory"]

#: The file of shell assignments, in the state directory.
ENV_FILE = "emulator.env"
_CERT_NAMES = {
    "ca_file": "ca.pem",
    "server_cert_file": "server.pem",
    "server_key_file": "server.key",
    "client_cert_file": "client.pem",
    "client_key_file": "client.key",
    "revoked_client_cert_file": "client-revoked.pem",
    "revoked_client_key_file": "client-revoked.key",
    "expired_client_cert_file": "client-expired.pem",
    "expired_client_key_file": "client-expired.key",
}


class StateDirectory:
    """The files of one ``--state-dir`` (see the module docstring).

    Args:
        path: The directory; created (mode 0700) if it does not exist.

    Raises:
        ValueError: *path* exists and is not a directory, or ``credentials.json``
            cannot be read as the emulator wrote it (the message names the file).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path}: exists and is not a directory")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def credentials_file(self) -> Path:
        return self.path / "credentials.json"

    @property
    def env_file(self) -> Path:
        return self.path / ENV_FILE

    def certificates(self) -> CertificateFiles:
        """The certificates in ``certs/``: reused while valid, else made afresh."""
        directory = self.path / "certs"
        directory.mkdir(mode=0o700, exist_ok=True)
        files = {key: str(directory / name) for key, name in _CERT_NAMES.items()}
        if all(os.path.isfile(p) for p in files.values()) and _valid_for_a_day(files["server_cert_file"]):
            return CertificateFiles(directory=str(directory), **files)
        return generate_certificates(directory)

    def clients(self, generate: Mapping[str, Sequence[ClientSpec]]) -> dict[str, tuple[ClientSpec, ...]]:
        """The registered clients from ``credentials.json``; on the first start, *generate*, written there."""
        path = self.credentials_file
        if path.exists():
            return _read_clients(path)
        clients = {name: tuple(specs) for name, specs in generate.items()}
        document = {name: [spec.describe() for spec in specs] for name, specs in clients.items()}
        _write_private(path, json.dumps(document, indent=2) + "\n")
        return clients

    def write_env(self, info: Mapping[str, Any]) -> Path:
        """Write ``emulator.env`` for the ready document *info*; returns its path."""
        listeners = info["listeners"]
        credentials = info["credentials"]
        values = {
            "EMULATOR_HTTP_URL": listeners["http"],
            "EMULATOR_HTTPS_URL": listeners["https"],
            "EMULATOR_MTLS_URL": listeners["mtls"],
            "EMULATOR_CA_FILE": info["ca_file"],
            "NTXMX_CERT_FILE": info["client_cert"]["cert_file"],
            "NTXMX_KEY_FILE": info["client_cert"]["key_file"],
        }
        for provider, doc in credentials.items():
            prefix = provider.upper()
            values[f"{prefix}_CLIENT_ID"] = doc["client_id"]
            values[f"{prefix}_CLIENT_SECRET"] = doc["client_secret"]
        values["PAYME_AUDIENCE"] = credentials["payme"]["audience"]
        values["NAVRO_COMPANY"] = credentials["navro"]["company"]
        values["ZERTIBAN_BUSINESS_UUID"] = credentials["zertiban"]["business_uuids"][0]
        lines = ["# Written by tokenpool emulator on every start; load with: set -a; . THIS_FILE; set +a"]
        lines += [f"{name}={shlex.quote(str(value))}" for name, value in values.items()]
        _write_private(self.env_file, "\n".join(lines) + "\n")
        return self.env_file


def _read_clients(path: Path) -> dict[str, tuple[ClientSpec, ...]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        clients = {
            name: tuple(
                ClientSpec(
                    client_id=str(doc["client_id"]),
                    client_secret=str(doc["client_secret"]),
                    scope=str(doc.get("scope", "")),
                    business_uuids=tuple(str(u) for u in doc.get("business_uuids", ())),
                    company=None if doc.get("company") is None else str(doc["company"]),
                )
                for doc in docs
            )
            for name, docs in document.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # Never quote the content: it holds the secrets.
        raise ValueError(
            f"{path}: not a credentials file written by the emulator ({type(exc).__name__}); "
            "delete it to make new credentials"
        ) from None
    return clients


def _valid_for_a_day(cert_file: str) -> bool:
    from cryptography import x509  # trustme's own dependency: present with the testing extra

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)


def _write_private(path: Path, text: str) -> None:
    """Write *text* to *path* as a file only its owner can read, replacing it atomically."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)
