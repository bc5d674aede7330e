"""NTX Pay MX and PIX as the emulator serves them (the runtime side: ``tokenpool/providers/_ntxpay.py``).

Both APIs are NestJS, so their errors are ``{"statusCode", "message", "error"}``.

* NTX MX: ``POST /ntxmx/api/auth/token`` takes JSON ``clientId``/``clientSecret``
  and answers 201.  It sits behind a TLS proxy that asks for a client certificate
  and forwards it in ``X-SSL-Client-Cert``: the ``https`` listener (no client
  certificate) is refused, and the forwarded certificate must parse, be in its
  validity period, not be revoked and, when a trusted CA is set, be issued by it.
  ``POST /ntxmx/api/spei/cash-out`` is a bearer-protected payout (201 ``PENDING``).
* NTX PIX: ``POST /ntxpix/oauth/token`` takes JSON ``clientId``/``clientSecret``
  (8–64 characters) and an optional ``scope`` that narrows the grant; resource
  calls need ``pix:read`` (GET, HEAD) or ``pix:write`` (anything else).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Self

from .._settings import ClientSpec, EmulatorSettings
from .._wire import NO_STORE, Reply, Request, json_object, json_reply, same_secret
from ._base import Grant, Outcome, ProviderEmulator, new_client_id, new_secret

if TYPE_CHECKING:
    from .._ledger import Client

__all__ = ["NTXMX_SCOPE", "NTXPIX_SCOPE", "NtxPayMXEmulator", "NtxPayPixEmulator"]

NTXMX_SCOPE: Final = "email profile"
NTXPIX_SCOPE: Final = "pix:read pix:write balance:read"

_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
}


def _nest(status: int, message: str | list[str]) -> Reply:
    """A NestJS-style error."""
    payload = {"statusCode": status, "message": message, "error": _REASONS.get(status, "Error")}
    return json_reply(status, payload, NO_STORE)


class NtxPayMXEmulator(ProviderEmulator):
    """NTX Pay MX: JSON credentials plus a client certificate forwarded by the TLS proxy.

    Args:
        trusted_ca_pem: The CA that must have issued the forwarded certificates;
            None accepts any parseable, unexpired, unrevoked one.
        revoked_cert_pems: Certificates to treat as revoked.
    """

    name = "ntxmx"
    endpoint_path = "/api/auth/token"
    default_scope = NTXMX_SCOPE
    cash_out_path = "/api/spei/cash-out"

    def __init__(
        self, *, trusted_ca_pem: bytes | None = None, revoked_cert_pems: Iterable[bytes] = ()
    ) -> None:
        self._trusted_ca_pem = trusted_ca_pem
        self._revoked_fingerprints = frozenset(_fingerprint(pem) for pem in revoked_cert_pems)
        self._trusted_ca: Any = None
        self._cert_verdicts: dict[bytes, tuple[int, str] | None] = {}

    @classmethod
    def from_settings(cls, settings: EmulatorSettings) -> Self:
        """The emulator with the settings' certificate rules."""
        return cls(trusted_ca_pem=settings.trusted_ca_pem, revoked_cert_pems=settings.revoked_cert_pems)

    @classmethod
    def default_client(cls, *, business_count: int) -> ClientSpec:
        """A sandbox client with the documented scopes."""
        return ClientSpec(new_client_id("ntxmx-sandbox"), new_secret(), scope=NTXMX_SCOPE)

    def refuse_listener(self, listener: str) -> Reply | None:
        """The ``https`` listener sends no client certificate: NGINX's ``ssl_verify_client`` answer."""
        return _nest(400, "No required SSL certificate was sent") if listener == "https" else None

    def token(self, clients: Mapping[str, Client], request: Request) -> Outcome:
        """``{"clientId", "clientSecret"}`` plus ``X-SSL-Client-Cert``; 201 on success."""
        data = json_object(request.body)
        client_id = data.get("clientId") if data else None
        client_id = client_id if isinstance(client_id, str) else None
        refusal = self.refuse_listener(request.listener)
        if refusal is not None:
            return client_id, refusal
        forwarded = request.headers.get(b"x-ssl-client-cert")
        if not forwarded:
            return client_id, _nest(
                400,
                "X-SSL-Client-Cert header is missing: configure the proxy to forward the client certificate",
            )
        verdict = self._check_forwarded_cert(forwarded)
        if verdict is not None:
            return client_id, _nest(*verdict)
        if data is None:
            return client_id, _nest(400, ["body must be a JSON object"])
        secret = data.get("clientSecret")
        problems = []
        if not client_id:
            problems.append("clientId must be a non-empty string")
        if not isinstance(secret, str) or not secret:
            problems.append("clientSecret must be a non-empty string")
        if problems:
            return client_id, _nest(400, problems)
        assert client_id is not None
        assert isinstance(secret, str)
        client = clients.get(client_id)
        if client is None or not same_secret(secret, client.secret):
            return client_id, _nest(
                401,
                "Invalid clientId/clientSecret: these credentials are not valid for this environment "
                "(sandbox and production credentials are distinct)",
            )

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "scope": NTXMX_SCOPE,
            }

        return client_id, Grant(client, client.scopes, render, status=201)

    def _check_forwarded_cert(self, header: bytes) -> tuple[int, str] | None:
        """None if the forwarded certificate is acceptable, else the (status, message) to answer."""
        try:
            return self._cert_verdicts[header]
        except KeyError:
            pass
        verdict = self._verify_cert(header)
        if len(self._cert_verdicts) >= 256:  # a handful of certificates in practice; stay bounded anyway
            self._cert_verdicts.clear()
        self._cert_verdicts[header] = verdict
        return verdict

    def _verify_cert(self, header: bytes) -> tuple[int, str] | None:
        from cryptography import x509  # only NTX MX needs it; keeps `import` light
        from cryptography.exceptions import InvalidSignature

        der = _decode_forwarded_cert(header) or b""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return 400, "X-SSL-Client-Cert does not contain a valid X.509 certificate"
        if _der_fingerprint(der) in self._revoked_fingerprints:
            return 401, "client certificate has been revoked"
        if self._trusted_ca_pem is not None:
            if self._trusted_ca is None:
                self._trusted_ca = x509.load_pem_x509_certificate(self._trusted_ca_pem)
            try:
                cert.verify_directly_issued_by(self._trusted_ca)
            except (ValueError, TypeError, InvalidSignature):
                return 401, "client certificate was not issued by a trusted certificate authority"
        now = datetime.datetime.now(datetime.UTC)  # certificate validity is wall-clock by nature
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return 401, "client certificate has expired or is not yet valid"
        return None


class NtxPayPixEmulator(ProviderEmulator):
    """NTX Pay PIX: JSON credentials, an optional narrowing ``scope``, scope-checked resource calls."""

    name = "ntxpix"
    endpoint_path = "/oauth/token"
    default_scope = NTXPIX_SCOPE

    @classmethod
    def default_client(cls, *, business_count: int) -> ClientSpec:
        """A client with the documented scopes."""
        return ClientSpec(new_client_id("ntxpix"), new_secret(), scope=NTXPIX_SCOPE)

    def needed_scope(self, method: str) -> str | None:
        """``pix:read`` to read, ``pix:write`` for anything else."""
        return "pix:read" if method in ("GET", "HEAD") else "pix:write"

    def token(self, clients: Mapping[str, Client], request: Request) -> Outcome:
        """``{"clientId", "clientSecret", "scope"?}``; 200 with the granted scopes."""
        data = json_object(request.body)
        if data is None:
            return None, _nest(400, ["body must be a JSON object"])
        client_id = data.get("clientId")
        client_id = client_id if isinstance(client_id, str) else None
        secret = data.get("clientSecret")
        requested = data.get("scope")
        problems = []
        if not client_id:
            problems.append("clientId must be a non-empty string")
        if not isinstance(secret, str):
            problems.append("clientSecret must be a string")
        elif not 8 <= len(secret) <= 64:
            problems.append("clientSecret must be between 8 and 64 characters")
        if requested is not None and not isinstance(requested, str):
            problems.append("scope must be a string")
        if problems:
            return client_id, _nest(400, problems)
        assert client_id is not None
        assert isinstance(secret, str)
        client = clients.get(client_id)
        if client is None or not same_secret(secret, client.secret):
            return client_id, _nest(401, "Invalid client credentials")
        # Extension: an optional "scope" narrows the grant (lets tests get a read-only token).
        granted = client.scopes if not requested else frozenset(requested.split())
        if not granted <= client.scopes:
            return client_id, _nest(
                400, f"scope not allowed for this client: {' '.join(sorted(granted - client.scopes))}"
            )
        scope_text = " ".join(name for name in client.scope_order if name in granted)

        def render(token: str, expires_in: int) -> dict[str, Any]:
            return {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "scope": scope_text,
            }

        return client_id, Grant(client, granted, render)


_PEM_BODY = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _decode_forwarded_cert(header: bytes) -> bytes | None:
    """DER bytes from an URL-encoded PEM (NGINX ``$ssl_client_escaped_cert``), base64 PEM or base64 DER."""
    text = header.decode("latin-1").strip()
    if "-----BEGIN" not in text and "%" not in text:
        try:
            decoded = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
        if b"-----BEGIN" not in decoded:
            return decoded
        text = decoded.decode("latin-1")
    match = _PEM_BODY.search(urllib.parse.unquote(text))
    if match is None:
        return None
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _der_fingerprint(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


def _fingerprint(pem: bytes) -> bytes:
    der = _decode_forwarded_cert(pem)
    if der is None:
        raise ValueError("revoked_cert_pems must hold PEM certificates")
    return _der_fingerprint(der)
