"""Throw-away PKI for the emulator, generated at run time with trustme.

Nothing here is ever committed: every run makes a fresh test CA, a server
certificate for the loopback names, and client certificates for NTX Pay MX's
mutual TLS (one valid, one the emulator treats as revoked, one expired).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from .._extras import require_extra

__all__ = ["CertificateFiles", "generate_certificates"]

#: The loopback names the server certificate is valid for.
SERVER_IDENTITIES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Paths of the PEM files written by :func:`generate_certificates`.

    Attributes:
        directory: Where the files are.
        ca_file: The test CA certificate; trust it to verify the server, and
            the server trusts it to verify client certificates.
        server_cert_file: Server certificate chain for ``127.0.0.1``, ``localhost`` and ``::1``.
        server_key_file: The server's private key.
        client_cert_file: A valid client certificate (NTX Pay MX's mTLS and ``X-SSL-Client-Cert``).
        client_key_file: Its private key.
        revoked_client_cert_file: A client certificate the emulator treats as revoked
            (it still passes the TLS handshake, like a real revoked certificate
            whose CRL the TLS terminator does not check).
        revoked_client_key_file: Its private key.
        expired_client_cert_file: A client certificate whose validity ended yesterday.
        expired_client_key_file: Its private key.
    """

    directory: str
    ca_file: str
    server_cert_file: str
    server_key_file: str
    client_cert_file: str
    client_key_file: str
    revoked_client_cert_file: str
    revoked_client_key_file: str
    expired_client_cert_file: str
    expired_client_key_file: str


def _write(path: Path, data: bytes, *, private: bool = False) -> str:
    # Keys are created 0600 from the start (not chmod-ed afterwards) so no other
    # user can read them even briefly.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return str(path)


def generate_certificates(directory: str | os.PathLike[str]) -> CertificateFiles:
    """Create a test CA and the server and client certificates in *directory*.

    Args:
        directory: An existing directory, normally a temporary one owned by the caller.

    Returns:
        The paths of the files written.
    """
    with require_extra("testing", feature="tokenpool.testing.generate_certificates"):
        import trustme

    target = Path(directory)
    if not target.is_dir():
        raise FileNotFoundError(f"certificate directory does not exist: {str(target)!r}")

    ca = trustme.CA(organization_name="tokenpool emulator test CA")
    server = ca.issue_cert(*SERVER_IDENTITIES, common_name="tokenpool-emulator")
    client = ca.issue_cert(
        "payout-worker.tokenpool.test",
        common_name="tokenpool-test-client",
        organization_name="tokenpool test client",
    )
    revoked = ca.issue_cert(
        "revoked-worker.tokenpool.test",
        common_name="tokenpool-revoked-client",
        organization_name="tokenpool test client",
    )
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue_cert(
        "expired-worker.tokenpool.test",
        common_name="tokenpool-expired-client",
        organization_name="tokenpool test client",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )

    def leaf(name: str, cert: trustme.LeafCert) -> tuple[str, str]:
        # The certificate file holds the leaf only: that is what a worker forwards
        # in X-SSL-Client-Cert, and what load_cert_chain presents.
        cert_path = _write(target / f"{name}.pem", cert.cert_chain_pems[0].bytes())
        key_path = _write(target / f"{name}.key", cert.private_key_pem.bytes(), private=True)
        return cert_path, key_path

    server_cert = _write(target / "server.pem", b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server_key = _write(target / "server.key", server.private_key_pem.bytes(), private=True)
    client_cert, client_key = leaf("client", client)
    revoked_cert, revoked_key = leaf("client-revoked", revoked)
    expired_cert, expired_key = leaf("client-expired", expired)
    return CertificateFiles(
        directory=str(target),
        ca_file=_write(target / "ca.pem", ca.cert_pem.bytes()),
        server_cert_file=server_cert,
        server_key_file=server_key,
        client_cert_file=client_cert,
        client_key_file=client_key,
        revoked_client_cert_file=revoked_cert,
        revoked_client_key_file=revoked_key,
        expired_client_cert_file=expired_cert,
        expired_client_key_file=expired_key,
    )
