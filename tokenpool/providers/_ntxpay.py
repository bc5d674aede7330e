"""NTX Pay: the Mexico SPEI API (mutual TLS plus a forwarded certificate) and the Brazil PIX Bacen API."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import httpx

from .._exceptions import ConfigurationError, CredentialsRejected, InvalidTokenResponse, TokenRequestError
from .._scrub import safe_text
from .._secret import Secret, as_secret
from .._timing import RefreshPolicy
from ._base import ClientCertificate, DeclarativeProvider
from ._parse import error_fields, json_object
from ._settings import coerce_secret, require_text
from ._wire import json_body

__all__ = ["NtxPayMX", "NtxPayPix"]

NtxPayMXEnvironment = Literal["sandbox", "production"]

#: Base URLs.  Only the sandbox one is in NTX Pay's documentation.
MX_BASE_URLS: Mapping[str, str] = {
    "sandbox": "https://sandbox.mx.ntxpay.com",
    "production": "https://api.mx.ntxpay.com",
}

# The leaf certificate: the first CERTIFICATE block in the file (the file may
# also hold the chain or the private key, which never leave the process).
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL)

_UNINFORMATIVE = frozenset({"", "unauthorized", "unauthorised"})


def forwarded_certificate(certificate: ClientCertificate) -> str:
    """The leaf certificate of *certificate* as nginx's ``$ssl_client_escaped_cert`` gives it.

    That is the PEM text (LF line ends, final newline) percent-encoded as a URL
    component.  Only the certificate is read out of the file, never a key.
    """
    try:
        pem = certificate.pem()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read client certificate {certificate.cert_file!r}: {type(exc).__name__}"
        ) from None
    match = _PEM_CERTIFICATE.search(pem)
    if match is None:
        raise ConfigurationError(
            f"client certificate {certificate.cert_file!r} holds no PEM 'BEGIN CERTIFICATE' block"
        )
    try:
        text = match.group().replace(b"\r\n", b"\n").decode("ascii")
    except UnicodeDecodeError:
        raise ConfigurationError(f"client certificate {certificate.cert_file!r} is not valid PEM") from None
    return urllib.parse.quote(text + "\n", safe="")


def _texts(data: Mapping[str, Any] | None) -> list[str]:
    """Every human-readable string in an error body (NestJS sends ``message`` as a str or a list)."""
    if not data:
        return []
    texts: list[str] = []
    for key in ("message", "error_description", "detail", "error"):
        value = data.get(key)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(item for item in value if isinstance(item, str))
    return texts


@dataclass(frozen=True, eq=False, kw_only=True)
class NtxPayMX(DeclarativeProvider):
    """NTX Pay Mexico (SPEI): ``clientId``/``clientSecret`` in JSON over mutual TLS.

    ``POST {base}/api/auth/token`` with ``{"clientId", "clientSecret"}`` and
    the client certificate both presented in the TLS handshake (the pool loads
    :meth:`mtls_certificate` into its ``SSLContext``) and forwarded in an
    ``X-SSL-Client-Cert`` header.  Answers a JWT valid for 10 minutes.

    Args:
        client_id: ``clientId`` received at signup.
        client_secret: ``clientSecret`` (a ``str`` is wrapped in :class:`~tokenpool.Secret`).
        client_certificate: The X.509 certificate NTX Pay issued at onboarding.
            Its file is read once, here; only the leaf certificate is kept, in
            encoded form for the header.  A private key in the same file is
            never kept or sent.
        environment: ``"sandbox"`` or ``"production"``; picks the base URL.
            Sandbox and production credentials and certificates are distinct.
        base_url: Overrides the environment's base URL; ``/api/auth/token`` is
            appended.  ``https`` unless loopback.
        refresh: When to renew and how to back off.

    Where NTX Pay's documentation is silent or contradictory, this adapter chooses:

    - The production base URL ``https://api.mx.ntxpay.com`` is *not* in the
      documentation we have (only the sandbox URL is).  Confirm it with NTX Pay
      and pass ``base_url`` explicitly for production.
    - The curl example sends ``$ENCODED_CERT`` without defining the encoding
      (the referenced certificate-encoding guide is not in our docs).  We send
      nginx's ``$ssl_client_escaped_cert`` form: the leaf certificate's PEM
      text with LF line ends and a final newline, percent-encoded with
      ``urllib.parse.quote(pem, safe="")``.  Only the first ``CERTIFICATE``
      block is sent, never the chain or a key in the same file.
    - The header is sent *and* mutual TLS is done, since the doc names both
      layers.
    - The documented answer is ``201``; ``200`` is accepted too.
    - ``expires_in`` is used when present; when absent, the documented
      10 minutes (600 s) is assumed.
    - ``Accept: application/json`` is added (not in the curl example).
    - ``400`` (documented: header missing) and both documented ``401`` causes
      are ``CredentialsRejected``.  The ``401`` message names the cause when
      the body mentions a certificate (``"certific"``, which also matches
      Spanish *certificado*) or carries another message; an empty body or a
      bare ``"Unauthorized"`` names both causes.
    - :meth:`with_credentials` re-reads the certificate file, so a renewed
      certificate on disk is picked up together with new credentials.
    """

    kind = "ntxpay_mx"
    base_urls = MX_BASE_URLS
    endpoint_path = "/api/auth/token"
    success_statuses = frozenset({200, 201})
    default_expires_in = 600.0
    status_hints: ClassVar[Mapping[int, str]] = {
        400: "NTX Pay did not get a usable X-SSL-Client-Cert header; tokenpool sends it on every token "
        "request, so a proxy in between probably dropped it: configure NGINX/ALB to forward the client "
        "certificate",
    }

    client_id: str
    client_secret: str | Secret
    client_certificate: ClientCertificate
    environment: NtxPayMXEnvironment = "sandbox"
    base_url: str | None = None
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    token_url: httpx.URL = field(init=False)
    _forwarded_certificate: str = field(init=False, repr=False)

    def _check_settings(self) -> None:
        certificate: object = self.client_certificate
        if not isinstance(certificate, ClientCertificate):
            raise ConfigurationError("NtxPayMX.client_certificate must be a ClientCertificate")
        require_text(self, "client_id")
        coerce_secret(self, "client_secret")
        object.__setattr__(self, "_forwarded_certificate", forwarded_certificate(certificate))

    def build_request(self) -> httpx.Request:
        body = json_body({"clientId": self.client_id, "clientSecret": as_secret(self.client_secret).reveal()})
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-SSL-Client-Cert": self._forwarded_certificate,
        }
        return httpx.Request("POST", self.token_url, content=body, headers=headers)

    def credentials_hint(self) -> str:
        if self.base_url is not None:
            return f"check clientId/clientSecret for {self._where(self.environment)}"
        return (
            f"check clientId/clientSecret: sandbox and production credentials are distinct; "
            f"confirm you use the {self.environment} ones"
        )

    def _refusal(
        self, status_code: int, headers: Mapping[str, str], body: bytes, secrets: list[str]
    ) -> TokenRequestError:
        """A 401 names which of the two documented causes applies, if the body tells."""
        if status_code != 401:
            return super()._refusal(status_code, headers, body, secrets)
        try:
            data: dict[str, Any] | None = json_object(body, status_code=401)
        except InvalidTokenResponse:
            data = None
        code, _ = error_fields(data, secrets)
        # A bare "Unauthorized" (NestJS's default message and its "error" field) tells nothing.
        texts = [text for text in _texts(data) if text.strip().strip(".").lower() not in _UNINFORMATIVE]
        said = safe_text("; ".join(texts), secrets)
        suffix = f" (NTX Pay said: {said!r})" if said else ""
        certificate = "certificate expired or revoked: request renewal from NTX Pay"
        credentials = "invalid clientId/clientSecret — " + self.credentials_hint().removeprefix(
            "check clientId/clientSecret"
        ).lstrip(": ")
        if any("certific" in text.lower() for text in texts):
            message, hint = certificate, f"renew the certificate in {self.client_certificate.cert_file!r}"
        elif texts:
            message = credentials
            hint = "configure valid credentials (a running pool takes them through pool.replace_provider())"
        else:
            message = f"either {credentials}, or the {certificate}"
            hint = "NTX Pay's answer does not say which"
        return CredentialsRejected(message + suffix, status_code=401, error_code=code, hint=hint)

    def mtls_certificate(self) -> ClientCertificate:
        return self.client_certificate


@dataclass(frozen=True, eq=False, kw_only=True)
class NtxPayPix(DeclarativeProvider):
    """NTX Pay PIX Bacen (Brazil): ``clientId``/``clientSecret`` in JSON.

    ``POST {base}/oauth/token`` with ``{"clientId", "clientSecret"}``;
    answers a token valid for ``expires_in`` seconds (default 3600).

    Args:
        client_id: ``clientId`` provided at registration.
        client_secret: ``clientSecret``; the doc requires 8 to 64 characters,
            checked here (the error gives the length, never the value).
        base_url: The API's base URL; ``/oauth/token`` is appended.  ``https``
            unless loopback.
        refresh: When to renew and how to back off.

    Where NTX Pay's documentation is silent or contradictory, this adapter chooses:

    - The doc names no sandbox, so there is no ``environment`` argument: point
      ``base_url`` elsewhere for testing.
    - The success status is not documented: ``200`` is expected, ``201`` is
      accepted too.
    - ``expires_in`` is used when present; when absent, the documented
      default of 3600 s is assumed.
    - The error table lists ``401``/``403`` for API calls only.  On the token
      endpoint both are ``CredentialsRejected``; ``403`` with a hint that the
      client lacks a permission or scope.
    - ``Accept: application/json`` is added (not in the examples).
    - No mutual TLS and no extra API headers: the doc names only the bearer
      token.
    """

    kind = "ntxpay_pix"
    endpoint_path = "/oauth/token"
    success_statuses = frozenset({200, 201})
    default_expires_in = 3600.0
    status_hints: ClassVar[Mapping[int, str]] = {
        403: "the credentials were accepted but lack a permission: ask NTX Pay to grant this client the "
        "scopes it needs (e.g. pix:read pix:write)",
    }

    client_id: str
    client_secret: str | Secret
    base_url: str = "https://api.ntxpay.com"
    refresh: RefreshPolicy = field(default_factory=RefreshPolicy)
    token_url: httpx.URL = field(init=False)

    def _check_settings(self) -> None:
        require_text(self, "client_id")
        coerce_secret(self, "client_secret", min_length=8, max_length=64)

    def build_request(self) -> httpx.Request:
        body = json_body({"clientId": self.client_id, "clientSecret": as_secret(self.client_secret).reveal()})
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        return httpx.Request("POST", self.token_url, content=body, headers=headers)

    def credentials_hint(self) -> str:
        return f"check clientId/clientSecret for {self.token_url.host}"
