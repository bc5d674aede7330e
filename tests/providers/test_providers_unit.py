"""The five provider adapters against their docs (``/work/shared/provider-docs``): exact wire, no I/O."""

from __future__ import annotations

import ast
import base64
import copy
import dataclasses
import datetime
import json
import pickle
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

import tokenpool.providers
from tokenpool import (
    ConfigurationError,
    CredentialsRejected,
    InvalidTokenResponse,
    RefreshPolicy,
    Secret,
    TokenEndpointError,
    TokenRequestError,
    TokenResponse,
)
from tokenpool.providers import (
    ClientCertificate,
    ClientCredentials,
    Navro,
    NtxPayMX,
    NtxPayPix,
    PayMe,
    Provider,
    Zertiban,
)

SECRET = "a1b2c3d4e5f6g7h8"
NEW_SECRET = "n3w-s3cr3t-after-reset"

# The success examples, verbatim from each provider's doc.
NTX_MX_EXAMPLE = b"""{
  "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
  "token_type": "Bearer",
  "expires_in": 600,
  "scope": "email profile"
}"""
NTX_PIX_EXAMPLE = b"""{
"access_token": "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9...",
"token_type": "Bearer",
"expires_in": 3600,
"scope": "pix:read pix:write balance:read"
}"""
PAYME_EXAMPLE = b"""{
  "action": "authorize",
  "success": true,
  "access_token": "eyJhbGciOiJIUzI1NiIs...",
  "scope": "create:token api-test:create:token",
  "expires_in": 8600,
  "token_type": "Bearer",
  "authorization": {
    "meta": {
      "status": {
        "code": "00",
        "message_ilgn": [
          {
            "locale": "es_PE",
            "value": "Access Token creado"
          }
        ]
      }
    }
  }
}"""
ZERTIBAN_EXAMPLE = b"""{
  "access_token": "eyJraWQiOiJ...",
  "token_type": "Bearer",
  "expires_in": 300
}"""


def sent_headers(request: httpx.Request) -> dict[str, str]:
    """The request's headers, lower-case, without the ones httpx adds itself."""
    return {k: v for k, v in request.headers.items() if k not in {"host", "content-length"}}


def basic(user: str, password: str) -> str:
    """What ``curl -u user:password`` sends (raw, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def wire_credentials(request: httpx.Request) -> tuple[str, str]:
    """The client id and secret as they travel: in HTTP Basic or in the JSON body."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        user, _, password = base64.b64decode(authorization.removeprefix("Basic ")).decode().partition(":")
        return user, password
    body = json.loads(request.content)
    if "clientId" in body:
        return body["clientId"], body["clientSecret"]
    return body["client_id"], body["client_secret"]


def raises(
    provider: Provider, status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> TokenRequestError:
    with pytest.raises(TokenRequestError) as info:
        provider.parse_response(status, headers or {}, body)
    return info.value


def tagged(error: TokenRequestError, provider: str) -> TokenRequestError:
    """A copy of *error* carrying the pool's name for its provider, as the pool raises it."""
    clone = copy.copy(error)
    clone.provider = provider
    return clone


def payme_answer(**changes: Any) -> bytes:
    data = json.loads(PAYME_EXAMPLE)
    data.update(changes)
    return json.dumps(data).encode()


# ---------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def leaf(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("client.payouts.example")


@pytest.fixture
def certificate(leaf: trustme.LeafCert, tmp_path: Path) -> ClientCertificate:
    """Key and certificate chain in one file, key first: the key must never be forwarded."""
    path = tmp_path / "client.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    return ClientCertificate(cert_file=str(path))


def make_mx(certificate: ClientCertificate, **kwargs: Any) -> NtxPayMX:
    options: dict[str, Any] = {"client_id": "qr-93-550e8400", "client_secret": SECRET}
    options.update(kwargs)
    return NtxPayMX(client_certificate=certificate, **options)


def make_pix(**kwargs: Any) -> NtxPayPix:
    options: dict[str, Any] = {"client_id": "your-client-id", "client_secret": SECRET}
    options.update(kwargs)
    return NtxPayPix(**options)


def make_payme(**kwargs: Any) -> PayMe:
    options: dict[str, Any] = {
        "client_id": "your_client_id",
        "client_secret": SECRET,
        "audience": "https://api.preprod.alignet.io",
    }
    options.update(kwargs)
    return PayMe(**options)


def make_zertiban(**kwargs: Any) -> Zertiban:
    options: dict[str, Any] = {
        "client_id": "client-1",
        "client_secret": SECRET,
        "business_uuid": "5f0c6f7e-2b1a-4c3d-9e8f-0a1b2c3d4e5f",
    }
    options.update(kwargs)
    return Zertiban(**options)


def make_navro(**kwargs: Any) -> Navro:
    options: dict[str, Any] = {"client_id": "client-1", "client_secret": SECRET, "company": "acme"}
    options.update(kwargs)
    return Navro(**options)


@pytest.fixture(params=["ntxpay_mx", "ntxpay_pix", "payme", "zertiban", "navro"])
def factory(request: pytest.FixtureRequest, certificate: ClientCertificate) -> Callable[..., Provider]:
    """A constructor for each adapter, with valid settings that keyword arguments override."""
    factories: dict[str, Callable[..., Provider]] = {
        "ntxpay_mx": lambda **kw: make_mx(certificate, **kw),
        "ntxpay_pix": make_pix,
        "payme": make_payme,
        "zertiban": make_zertiban,
        "navro": make_navro,
    }
    return factories[request.param]


def success_body(provider: Provider) -> bytes:
    return {
        NtxPayMX: NTX_MX_EXAMPLE,
        NtxPayPix: NTX_PIX_EXAMPLE,
        PayMe: PAYME_EXAMPLE,
        Zertiban: ZERTIBAN_EXAMPLE,
        Navro: ZERTIBAN_EXAMPLE,
    }[type(provider)]


# ---------------------------------------------------------------- NTX Pay MX


def test_mx_request_is_json_with_the_forwarded_certificate(
    certificate: ClientCertificate, leaf: trustme.LeafCert
) -> None:
    request = make_mx(certificate).build_request()

    assert request.method == "POST"
    assert str(request.url) == "https://sandbox.mx.ntxpay.com/api/auth/token"
    assert request.content == b'{"clientId":"qr-93-550e8400","clientSecret":"a1b2c3d4e5f6g7h8"}'
    leaf_pem = leaf.cert_chain_pems[0].bytes().decode()
    assert sent_headers(request) == {
        "content-type": "application/json",
        "accept": "application/json",
        "x-ssl-client-cert": urllib.parse.quote(leaf_pem, safe=""),
    }


def test_mx_forwards_only_the_leaf_certificate_never_the_key(
    certificate: ClientCertificate, leaf: trustme.LeafCert
) -> None:
    header = make_mx(certificate).build_request().headers["x-ssl-client-cert"]

    pem = urllib.parse.unquote(header)
    assert pem == leaf.cert_chain_pems[0].bytes().decode()
    assert pem.count("BEGIN CERTIFICATE") == 1
    assert "PRIVATE KEY" not in pem
    # URL-encoded as nginx's $ssl_client_escaped_cert: no raw newline, space, '+', '/' or '='.
    assert not set(header) & set("\n +/=")


def test_mx_normalises_crlf_pem(leaf: trustme.LeafCert, tmp_path: Path) -> None:
    path = tmp_path / "crlf.pem"
    path.write_bytes(leaf.cert_chain_pems[0].bytes().replace(b"\n", b"\r\n"))
    provider = make_mx(ClientCertificate(cert_file=str(path)))

    pem = urllib.parse.unquote(provider.build_request().headers["x-ssl-client-cert"])
    assert pem == leaf.cert_chain_pems[0].bytes().decode()


def test_mx_client_certificate_is_a_field_and_the_provider_method(certificate: ClientCertificate) -> None:
    provider = make_mx(certificate)

    assert provider.mtls_certificate() is certificate
    # The config loader discovers constructor arguments through dataclasses.fields().
    assert "client_certificate" in {f.name for f in dataclasses.fields(provider) if f.init}
    assert dataclasses.replace(provider, environment="production").mtls_certificate() is certificate
    assert provider.with_credentials(client_secret=NEW_SECRET).mtls_certificate() is certificate
    assert "client.pem" in repr(provider)


def test_mx_needs_a_certificate_with_a_certificate_block(
    certificate: ClientCertificate, tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match="client_certificate"):
        NtxPayMX(client_id="id", client_secret=SECRET)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="ClientCertificate"):
        NtxPayMX(client_id="id", client_secret=SECRET, client_certificate=certificate.cert_file)  # type: ignore[arg-type]
    key_only = tmp_path / "key.pem"
    marker = "PRIVATE " + "KEY-----"  # assembled so no key-looking text is committed
    key_only.write_text(f"-----BEGIN {marker}\nMIIB\n-----END {marker}\n")
    with pytest.raises(ConfigurationError, match="no PEM"):
        make_mx(ClientCertificate(cert_file=str(key_only)))


def test_mx_presets_and_base_url(certificate: ClientCertificate) -> None:
    assert str(make_mx(certificate, environment="production").token_url) == (
        "https://api.mx.ntxpay.com/api/auth/token"
    )
    provider = make_mx(certificate, environment="production", base_url="https://127.0.0.1:8443/ntx-mx/")
    assert str(provider.token_url) == "https://127.0.0.1:8443/ntx-mx/api/auth/token"
    with pytest.raises(ConfigurationError, match="environment"):
        make_mx(certificate, environment="staging")


def test_mx_parses_the_documented_201(certificate: ClientCertificate) -> None:
    provider = make_mx(certificate)

    token = provider.parse_response(201, {}, NTX_MX_EXAMPLE)
    assert token == TokenResponse(
        access_token="eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
        expires_in=600.0,
        token_type="Bearer",
        scope="email profile",
    )
    assert provider.parse_response(200, {}, NTX_MX_EXAMPLE).expires_in == 600.0


def test_mx_without_expires_in_assumes_the_documented_ten_minutes(certificate: ClientCertificate) -> None:
    token = make_mx(certificate).parse_response(201, {}, b'{"access_token":"abc","token_type":"Bearer"}')
    assert token.expires_in == 600.0


def test_mx_400_says_the_certificate_header_was_not_forwarded(certificate: ClientCertificate) -> None:
    error = raises(make_mx(certificate), 400, b'{"statusCode":400,"message":"Bad Request"}')

    assert isinstance(error, CredentialsRejected)
    assert error.status_code == 400
    assert "X-SSL-Client-Cert" in str(error)
    assert "forward" in str(error)


@pytest.mark.parametrize(
    "message",
    ["Client certificate expired", "certificate revoked", "Certificado revocado"],
)
def test_mx_401_names_the_certificate_when_the_body_does(
    certificate: ClientCertificate, message: str
) -> None:
    body = json.dumps({"statusCode": 401, "message": message, "error": "Unauthorized"}).encode()
    error = raises(make_mx(certificate), 401, body)

    assert isinstance(error, CredentialsRejected)
    assert error.message.startswith("certificate expired or revoked: request renewal from NTX Pay")
    assert "clientSecret" not in error.message


@pytest.mark.parametrize("environment", ["sandbox", "production"])
def test_mx_401_names_the_credentials_otherwise(certificate: ClientCertificate, environment: str) -> None:
    body = b'{"statusCode":401,"message":"Invalid client credentials","error":"Unauthorized"}'
    error = raises(make_mx(certificate, environment=environment), 401, body)

    assert isinstance(error, CredentialsRejected)
    assert error.message.startswith(
        "invalid clientId/clientSecret — sandbox and production credentials are distinct; "
        f"confirm you use the {environment} ones"
    )
    assert "Invalid client credentials" in error.message
    assert "certificate expired" not in error.message


@pytest.mark.parametrize(
    "body",
    [b"", b"Unauthorized", b'{"statusCode":401,"message":"Unauthorized"}', b'{"message":["Unauthorized."]}'],
)
def test_mx_401_with_an_unhelpful_body_names_both_causes(certificate: ClientCertificate, body: bytes) -> None:
    error = raises(make_mx(certificate), 401, body)

    assert isinstance(error, CredentialsRejected)
    assert "invalid clientId/clientSecret" in error.message
    assert "certificate expired or revoked" in error.message


# ---------------------------------------------------------------- NTX Pay PIX


def test_pix_request_is_json() -> None:
    request = make_pix().build_request()

    assert request.method == "POST"
    assert str(request.url) == "https://api.ntxpay.com/oauth/token"
    assert request.content == b'{"clientId":"your-client-id","clientSecret":"a1b2c3d4e5f6g7h8"}'
    assert sent_headers(request) == {"content-type": "application/json", "accept": "application/json"}
    assert make_pix().mtls_certificate() is None
    assert make_pix().api_headers() == {}


@pytest.mark.parametrize(("length", "ok"), [(7, False), (8, True), (64, True), (65, False)])
def test_pix_secret_must_be_8_to_64_characters(length: int, ok: bool) -> None:
    secret = "s" * length
    if ok:
        assert len(make_pix(client_secret=secret).client_secret) == length
        return
    with pytest.raises(ConfigurationError) as info:
        make_pix(client_secret=secret)
    assert f"got {length}" in str(info.value)
    assert secret not in str(info.value)


def test_pix_rotation_checks_the_secret_length() -> None:
    with pytest.raises(ConfigurationError, match="between 8 and 64"):
        make_pix().with_credentials(client_secret="short")


def test_pix_parses_the_documented_response() -> None:
    token = make_pix().parse_response(200, {}, NTX_PIX_EXAMPLE)

    assert token.expires_in == 3600.0
    assert token.scope == "pix:read pix:write balance:read"
    assert make_pix().parse_response(201, {}, NTX_PIX_EXAMPLE).expires_in == 3600.0


def test_pix_without_expires_in_assumes_the_documented_default() -> None:
    assert make_pix().parse_response(200, {}, b'{"access_token":"abc"}').expires_in == 3600.0


def test_pix_401_and_403_are_credentials_rejected() -> None:
    unauthorized = raises(make_pix(), 401, b'{"message":"Invalid credentials"}')
    forbidden = raises(make_pix(), 403, b'{"message":"Permission denied"}')

    assert isinstance(unauthorized, CredentialsRejected)
    assert isinstance(forbidden, CredentialsRejected)
    assert forbidden.hint is not None
    assert "permission" in forbidden.hint
    assert "scope" in forbidden.hint


def test_pix_base_url() -> None:
    assert str(make_pix(base_url="http://localhost:9000").token_url) == "http://localhost:9000/oauth/token"


# ---------------------------------------------------------------- Pay-me


def test_payme_request_is_json_with_action_and_audience() -> None:
    request = make_payme().build_request()

    assert request.method == "POST"
    assert str(request.url) == "https://auth.preprod.alignet.io/token"
    assert sent_headers(request) == {
        "content-type": "application/json",
        "accept": "application/json",
        "alg-api-version": "1709847567",
    }
    body = json.loads(request.content)
    assert list(body.items()) == [
        ("action", "authorize"),
        ("grant_type", "client_credentials"),
        ("audience", "https://api.preprod.alignet.io"),
        ("client_id", "your_client_id"),
        ("client_secret", SECRET),
        ("scope", "create:token post:charges get:charges delete:charges"),
    ]


def test_payme_presets_base_url_and_api_headers() -> None:
    assert str(make_payme(environment="production").token_url) == "https://auth.alignet.io/token"
    assert str(make_payme(base_url="https://127.0.0.1:8443/payme").token_url) == (
        "https://127.0.0.1:8443/payme/token"
    )
    provider = make_payme(api_version="1800000000")
    assert provider.api_headers() == {"ALG-API-VERSION": "1800000000"}
    assert provider.build_request().headers["ALG-API-VERSION"] == "1800000000"


@pytest.mark.parametrize("scope", ["post:charges", "create:tokens post:charges", ""])
def test_payme_scope_must_include_create_token(scope: str) -> None:
    with pytest.raises(ConfigurationError):
        make_payme(scope=scope)


def test_payme_audience_is_required() -> None:
    with pytest.raises(TypeError, match="audience"):
        PayMe(client_id="id", client_secret=SECRET)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="audience"):
        make_payme(audience=" ")


def test_payme_parses_the_documented_response() -> None:
    token = make_payme().parse_response(200, {}, PAYME_EXAMPLE)

    assert token == TokenResponse(
        access_token="eyJhbGciOiJIUzI1NiIs...",
        expires_in=8600.0,
        token_type="Bearer",
        scope="create:token api-test:create:token",
    )


@pytest.mark.parametrize("success", [False, None, "true", 1])
def test_payme_success_must_be_true_even_on_200(success: object) -> None:
    body = payme_answer(success=success)
    if success is None:
        body = payme_answer()
        data = json.loads(body)
        del data["success"]
        body = json.dumps(data).encode()

    error = raises(make_payme(), 200, body)
    assert isinstance(error, InvalidTokenResponse)
    assert '"success": true' in error.message


def test_payme_failure_carries_the_providers_message_and_code() -> None:
    status = {"code": "05", "message_ilgn": [{"locale": "es_PE", "value": "Audiencia\ninválida"}]}
    body = payme_answer(success=False, authorization={"meta": {"status": status}})

    error = raises(make_payme(), 200, body)
    assert isinstance(error, InvalidTokenResponse)
    assert error.error_code == "05"
    assert "Audiencia inválida" in error.message


def test_payme_status_code_other_than_00_is_a_failure() -> None:
    body = payme_answer(authorization={"meta": {"status": {"code": "99"}}})

    error = raises(make_payme(), 200, body)
    assert isinstance(error, InvalidTokenResponse)
    assert error.error_code == "99"


@pytest.mark.parametrize(("status", "code"), [(200, "unauthorized"), (200, "invalid_client"), (401, "07")])
def test_payme_refused_credentials(status: int, code: str) -> None:
    body = payme_answer(success=False, authorization={"meta": {"status": {"code": code}}})

    error = raises(make_payme(), status, body)
    assert isinstance(error, CredentialsRejected)
    assert error.status_code == status


def test_payme_5xx_and_429_are_retryable() -> None:
    error = raises(make_payme(), 429, b'{"success":false}', headers={"retry-after": "7"})
    assert isinstance(error, TokenEndpointError)
    assert error.retry_after == 7.0
    assert isinstance(raises(make_payme(), 502, b"<html>bad gateway</html>"), TokenEndpointError)


def test_payme_without_expires_in_is_invalid() -> None:
    data = json.loads(PAYME_EXAMPLE)
    del data["expires_in"]

    error = raises(make_payme(), 200, json.dumps(data).encode())
    assert isinstance(error, InvalidTokenResponse)
    assert "expires_in" in error.message


def test_payme_scrubs_an_echoed_secret_from_its_messages() -> None:
    status = {"code": "05", "message_ilgn": [{"locale": "es_PE", "value": f"secreto {SECRET} rechazado"}]}
    error = raises(make_payme(), 200, payme_answer(success=False, authorization={"meta": {"status": status}}))

    assert SECRET not in str(error)
    assert "rechazado" in str(error)


# ---------------------------------------------------------------- Zertiban


def test_zertiban_request_is_form_with_basic_and_no_credentials_in_the_body() -> None:
    secret = "s3cr+t/=%&x y"  # characters that form-urlencoding first would change
    request = make_zertiban(client_secret=secret).build_request()

    assert request.method == "POST"
    assert str(request.url) == "https://nc-api-sandbox.zertiban.com/idp/oauth2/token"
    assert request.content == b"grant_type=client_credentials"
    assert sent_headers(request) == {
        "authorization": basic("client-1", secret),
        "content-type": "application/x-www-form-urlencoded",
        "accept": "application/json",
    }
    assert b"client-1" not in request.content


def test_zertiban_tenant_header_presets_and_base_url() -> None:
    provider = make_zertiban()
    assert provider.api_headers() == {"x-tenant-id": "5f0c6f7e-2b1a-4c3d-9e8f-0a1b2c3d4e5f"}
    assert (
        str(make_zertiban(environment="production").token_url)
        == "https://nc-api.zertiban.com/idp/oauth2/token"
    )
    assert str(make_zertiban(base_url="https://127.0.0.1:8443/zertiban").token_url) == (
        "https://127.0.0.1:8443/zertiban/idp/oauth2/token"
    )


def test_zertiban_parses_the_documented_response_and_honours_expires_in() -> None:
    provider = make_zertiban()

    assert provider.parse_response(200, {}, ZERTIBAN_EXAMPLE).expires_in == 300.0
    short = b'{"access_token":"eyJraWQiOiJ...","token_type":"Bearer","expires_in":120}'
    assert provider.parse_response(200, {}, short).expires_in == 120.0
    assert provider.parse_response(200, {}, b'{"access_token":"abc"}').expires_in == 300.0


@pytest.mark.parametrize("value", ["", "a/b", "a b", "tab\there", ".."])
def test_zertiban_business_uuid_is_validated(value: str) -> None:
    with pytest.raises(ConfigurationError, match="business_uuid"):
        make_zertiban(business_uuid=value)


def test_basic_adapters_refuse_a_colon_in_client_id() -> None:
    with pytest.raises(ConfigurationError, match="':'"):
        make_zertiban(client_id="a:b")
    with pytest.raises(ConfigurationError, match="':'"):
        make_navro(client_id="a:b")


# ---------------------------------------------------------------- Navro


def test_navro_request_is_form_with_basic_per_company() -> None:
    request = make_navro().build_request()

    assert request.method == "POST"
    assert str(request.url) == "https://api.sandbox.navro.cloud/authentication/acme/token"
    assert request.content == b"grant_type=client_credentials&scope=openid"
    assert sent_headers(request) == {
        "x-api-version": "1",
        "authorization": basic("client-1", SECRET),
        "content-type": "application/x-www-form-urlencoded",
        "accept": "application/json",
    }


def test_navro_paths_presets_and_base_url() -> None:
    assert str(make_navro(environment="production").token_url) == (
        "https://api.navro.cloud/authentication/acme/token"
    )
    assert str(make_navro(base_url="https://127.0.0.1:8443/navro").token_url) == (
        "https://127.0.0.1:8443/navro/authentication/acme/token"
    )
    assert make_navro(company="Acmé%Ltd").token_url.raw_path == b"/authentication/Acm%C3%A9%25Ltd/token"


def test_navro_api_version() -> None:
    provider = make_navro(api_version="2")
    assert provider.api_headers() == {"X-API-Version": "2"}
    assert provider.build_request().headers["X-API-Version"] == "2"
    with pytest.raises(ConfigurationError, match="api_version"):
        make_navro(api_version="1\r\nX-Injected: yes")


@pytest.mark.parametrize("value", ["", "a/b", "a b", ".", ".."])
def test_navro_company_is_validated(value: str) -> None:
    with pytest.raises(ConfigurationError, match="company"):
        make_navro(company=value)


def test_navro_401_hints_at_a_reset_secret() -> None:
    error = raises(make_navro(), 401, b'{"error":"invalid_client"}')

    assert isinstance(error, CredentialsRejected)
    assert error.error_code == "invalid_client"
    assert error.hint is not None
    assert "configure the new one" in error.hint
    assert "replace_provider(" in error.hint
    assert "with_credentials(client_secret=" in error.hint


@pytest.mark.parametrize(
    ("base_url", "where"),
    [(None, "in the Navro sandbox Hub"), ("https://127.0.0.1:8443/navro", "in the server at 127.0.0.1:8443")],
)
def test_a_credentials_hint_names_the_server_a_base_url_points_at(base_url: str | None, where: str) -> None:
    """Against an emulator or a proxy, "check ... in the Navro sandbox Hub" would mislead."""
    provider = Navro(client_id="acme", client_secret="s" * 20, company="acme-payouts", base_url=base_url)
    error = raises(provider, 400, b'{"error":"invalid_client"}')
    assert error.hint is not None
    assert error.hint.endswith(where), error.hint


def test_navro_defaults_to_the_documented_300_seconds() -> None:
    provider = make_navro()
    assert provider.parse_response(200, {}, ZERTIBAN_EXAMPLE).expires_in == 300.0
    assert (
        provider.parse_response(200, {}, b'{"access_token":"abc","token_type":"bearer"}').expires_in == 300.0
    )


# ---------------------------------------------------------------- every adapter


def test_kinds_are_distinct() -> None:
    kinds = [cls.kind for cls in (NtxPayMX, NtxPayPix, PayMe, Zertiban, Navro)]
    assert kinds == ["ntxpay_mx", "ntxpay_pix", "payme", "zertiban", "navro"]


def test_repr_and_str_never_show_the_secret(factory: Callable[..., Provider]) -> None:
    provider = factory()

    for text in (repr(provider), str(provider), f"{provider}", repr(provider.with_credentials())):
        assert SECRET not in text
    assert isinstance(vars(provider)["client_secret"], Secret)


def test_with_credentials_returns_a_rotated_copy(factory: Callable[..., Provider]) -> None:
    provider = factory()
    rotated = provider.with_credentials(client_id="client-2", client_secret=NEW_SECRET)

    assert type(rotated) is type(provider)
    assert rotated.token_url == provider.token_url
    assert wire_credentials(rotated.build_request()) == ("client-2", NEW_SECRET)
    assert wire_credentials(provider.build_request())[1] == SECRET
    assert wire_credentials(rotated.with_credentials().build_request()) == ("client-2", NEW_SECRET)


def test_providers_are_frozen(factory: Callable[..., Provider]) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        factory().refresh = RefreshPolicy(ratio=0.5)


@pytest.mark.parametrize(
    "base_url", ["http://api.example.com", "ftp://127.0.0.1", "https://u:p@example.com", "x"]
)
def test_plain_http_is_refused_except_on_loopback(factory: Callable[..., Provider], base_url: str) -> None:
    with pytest.raises(ConfigurationError):
        factory(base_url=base_url)
    for loopback in ("http://127.0.0.1:8080", "http://localhost:8080/", "http://[::1]:8080"):
        assert httpx.URL(factory(base_url=loopback).token_url).scheme == "http"


def test_base_url_with_a_query_is_refused(factory: Callable[..., Provider]) -> None:
    with pytest.raises(ConfigurationError, match="query"):
        factory(base_url="https://api.example.com/?tenant=1")


def test_each_parses_its_documented_success(factory: Callable[..., Provider]) -> None:
    provider = factory()
    token = provider.parse_response(
        201 if isinstance(provider, NtxPayMX) else 200, {}, success_body(provider)
    )
    assert token.access_token.startswith("eyJ")
    assert token.token_type == "Bearer"


@pytest.mark.parametrize(
    "field",
    ["client_id", "client_secret"],
)
def test_empty_credentials_are_refused(factory: Callable[..., Provider], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        factory(**{field: ""})


def test_a_2xx_carrying_an_error_is_a_failure(factory: Callable[..., Provider]) -> None:
    provider = factory()
    data = json.loads(success_body(provider))
    data.update(error="invalid_client", error_description="client authentication failed")

    error = raises(provider, 200, json.dumps(data).encode())
    assert isinstance(error, CredentialsRejected)
    assert "client authentication failed" in str(error)

    data["error"] = "server_error"
    assert isinstance(raises(provider, 200, json.dumps(data).encode()), InvalidTokenResponse)


def test_server_errors_are_retryable_with_retry_after(factory: Callable[..., Provider]) -> None:
    error = raises(factory(), 503, b"", headers={"retry-after": "12"})

    assert isinstance(error, TokenEndpointError)
    assert error.retry_after == 12.0
    assert error.retry_at is None
    assert isinstance(raises(factory(), 500, b"oops"), TokenEndpointError)


# ---------------------------------------------------------------- Retry-After, without a clock

RETRY_DATE = "Wed, 21 Oct 2015 07:28:30 GMT"
RETRY_UNIX = datetime.datetime(2015, 10, 21, 7, 28, 30, tzinfo=datetime.UTC).timestamp()


def retry_error(provider: Provider, headers: Mapping[str, str], status: int = 429) -> TokenEndpointError:
    error = raises(provider, status, b"", headers=headers)
    assert isinstance(error, TokenEndpointError)
    return error


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("7", 7.0), (" 12 ", 12.0), ("0007", 7.0), ("86400", 86_400.0), ("9" * 5000, 86_400.0)],
)
def test_retry_after_in_delta_seconds(value: str, seconds: float) -> None:
    error = retry_error(make_zertiban(), {"retry-after": value})
    assert error.retry_after == seconds
    assert error.retry_at is None


@pytest.mark.parametrize(
    ("date", "seconds"),
    [
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 09:28:00 +0200", 30.0),  # the same instant, in another zone
        ("Wed, 21 Oct 2015 07:29:00 GMT", 0.0),  # a date already past is no wait at all
    ],
)
def test_retry_after_as_a_date_is_measured_from_the_answers_date(
    factory: Callable[..., Provider], date: str, seconds: float
) -> None:
    error = retry_error(factory(), {"retry-after": RETRY_DATE, "date": date}, status=503)
    assert error.retry_after == seconds
    assert error.retry_at is None


@pytest.mark.parametrize("headers", [{}, {"date": "yesterday"}, {"date": "Wed, 21 Oct 2015 07:28:00"}])
def test_retry_after_as_a_date_without_a_usable_date_header_is_left_to_the_pool(
    factory: Callable[..., Provider], headers: dict[str, str]
) -> None:
    error = retry_error(factory(), {"retry-after": RETRY_DATE, **headers})
    assert error.retry_after is None
    assert error.retry_at == RETRY_UNIX
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (again.retry_after, again.retry_at) == (None, RETRY_UNIX)


@pytest.mark.parametrize("value", ["soon", "Wed, 21 Oct 2015 07:28:30", "-1", "1e3", ""])
def test_unusable_retry_after_is_ignored(value: str) -> None:
    error = retry_error(make_navro(), {"retry-after": value, "date": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert (error.retry_after, error.retry_at) == (None, None)


def test_retry_after_is_read_only_from_429_and_503() -> None:
    error = retry_error(make_pix(), {"retry-after": "7"}, status=500)
    assert (error.retry_after, error.retry_at) == (None, None)


def test_parsing_reads_no_clock(factory: Callable[..., Provider], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clock() -> float:
        raise AssertionError("an adapter read the clock")

    for name in ("time", "monotonic", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, name, no_clock)
    provider = factory()
    provider.parse_response(201 if isinstance(provider, NtxPayMX) else 200, {}, success_body(provider))
    assert retry_error(provider, {"retry-after": RETRY_DATE}).retry_at == RETRY_UNIX


#: Clock readers, by the name they are called through.
CLOCK_NAMES = frozenset({"now", "utcnow", "today", "localtime", "formatdate"})


def test_no_provider_module_imports_a_clock() -> None:
    """Adapters are sans-IO and read no clock: no ``time``, ``datetime`` or tokenpool clock import."""
    package = Path(tokenpool.providers.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                if isinstance(node, ast.Attribute):
                    assert node.attr not in CLOCK_NAMES, f"{path.name}:{node.lineno} calls .{node.attr}"
                continue
            for name in imported:
                root = name.split(".")[0]
                assert root not in {"time", "datetime"}, f"{path.name}:{node.lineno} imports {name}"
                assert "_clock" not in name.split("."), f"{path.name}:{node.lineno} imports {name}"


@pytest.mark.parametrize(
    "body", [b"", b"<!DOCTYPE html><html></html>", b"[]", b"not json", b'{"token_type":"Bearer"}']
)
def test_unusable_successes_are_invalid(factory: Callable[..., Provider], body: bytes) -> None:
    provider = factory()
    status = 201 if isinstance(provider, NtxPayMX) else 200
    assert isinstance(raises(provider, status, body), InvalidTokenResponse)


def test_a_redirect_is_not_followed_silently(factory: Callable[..., Provider]) -> None:
    error = raises(factory(), 302, b"", headers={"location": "https://elsewhere.example"})
    assert isinstance(error, InvalidTokenResponse)


@pytest.mark.parametrize(
    "body",
    [
        b'{"error":"invalid_client","error_description":"bad secret: %s"}',
        b'{"statusCode":401,"message":"bad secret: %s"}',
        b'{"access_token":"abc","expires_in":"%s"}',
        b'{"access_token":"abc","expires_in":60,"token_type":"%s"}',
    ],
)
@pytest.mark.parametrize("status", [200, 201, 401, 500])
def test_an_echoed_secret_never_reaches_the_error(
    factory: Callable[..., Provider], body: bytes, status: int
) -> None:
    error = raises(factory(), status, body % SECRET.encode())

    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert SECRET not in str(tagged(error, "p"))


# ---------------------------------------------------------------- secrets in every wire form

# Every character here changes under form-urlencoding, JSON escaping or both.
ODD_SECRET = 'a+b/c=d"e\\f é&g%h'
ODD_ID = "client-1"
BASIC_KINDS = frozenset({"zertiban", "navro", "client_credentials"})


def forms_of(secret: str) -> list[str]:
    """The five text forms a server may echo: raw, two urlencodings, two JSON escapings."""
    return [
        secret,
        urllib.parse.quote_plus(secret),
        urllib.parse.quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    ]


@pytest.fixture(params=["ntxpay_mx", "ntxpay_pix", "payme", "zertiban", "navro", "client_credentials"])
def odd(request: pytest.FixtureRequest, certificate: ClientCertificate) -> Provider:
    """Each adapter, the generic one too, holding :data:`ODD_SECRET`."""
    creds: dict[str, Any] = {"client_id": ODD_ID, "client_secret": ODD_SECRET}
    builders: dict[str, Callable[[], Provider]] = {
        "ntxpay_mx": lambda: make_mx(certificate, **creds),
        "ntxpay_pix": lambda: make_pix(**creds),
        "payme": lambda: make_payme(**creds),
        "zertiban": lambda: make_zertiban(**creds),
        "navro": lambda: make_navro(**creds),
        "client_credentials": lambda: ClientCredentials(token_url="https://auth.example.com/token", **creds),
    }
    return builders[request.param]()


def echoable(provider: Provider) -> list[str]:
    """What the test expects :meth:`Provider.sensitive_strings` to hold, built from the wire request."""
    expected = forms_of(ODD_SECRET)
    authorization = provider.build_request().headers.get("authorization")
    if authorization is not None:
        expected += [authorization, authorization.removeprefix("Basic ")]
    return expected


def test_odd_secret_changes_under_every_encoding() -> None:
    assert len(ODD_SECRET) >= 12
    assert len(set(forms_of(ODD_SECRET))) == 5


def test_sensitive_strings_are_every_wire_form(odd: Provider) -> None:
    strings = odd.sensitive_strings()

    assert set(strings) == set(echoable(odd))
    assert all(isinstance(s, str) and s for s in strings)
    assert len(strings) == len(set(strings))
    assert [len(s) for s in strings] == sorted((len(s) for s in strings), reverse=True)
    has_basic = odd.build_request().headers.get("authorization") is not None
    assert has_basic == (odd.kind in BASIC_KINDS)


def test_generic_basic_credential_is_the_one_it_sends() -> None:
    provider = ClientCredentials(
        token_url="https://auth.example.com/token", client_id="my client", client_secret=ODD_SECRET
    )
    header = provider.build_request().headers["authorization"]
    encoded = f"{urllib.parse.quote_plus('my client')}:{urllib.parse.quote_plus(ODD_SECRET)}".encode()

    assert header == "Basic " + base64.b64encode(encoded).decode()
    assert {header, header.removeprefix("Basic ")} <= set(provider.sensitive_strings())
    post = dataclasses.replace(provider, auth_method="client_secret_post")
    assert set(post.sensitive_strings()) == set(forms_of(ODD_SECRET))


#: The shortest secret whose forms Provider.sensitive_strings() names (its docstring says 8).
MIN_SENSITIVE = 8


def test_short_secrets_are_left_to_the_basic_credential() -> None:
    short = "s+cr/t"
    assert len(short) < MIN_SENSITIVE
    zertiban = make_zertiban(client_id="c", client_secret=short)
    header = zertiban.build_request().headers["authorization"]

    assert sorted(zertiban.sensitive_strings()) == sorted([header, header.removeprefix("Basic ")])
    assert make_pix(client_secret="s+cr/t/x").sensitive_strings() == sorted(
        set(forms_of("s+cr/t/x")), key=len, reverse=True
    )
    assert make_payme(client_secret=short).sensitive_strings() == []


def test_a_certificate_password_is_sensitive_too(leaf: trustme.LeafCert, tmp_path: Path) -> None:
    path = tmp_path / "client.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    password = "pass+word/1234"
    provider = make_mx(ClientCertificate(cert_file=str(path), password=password))

    assert set(forms_of(password)) <= set(provider.sensitive_strings())
    assert set(forms_of(SECRET)) <= set(provider.sensitive_strings())


def test_an_echoed_basic_header_is_scrubbed_whole() -> None:
    """The longer form goes first: the Basic header holds its credential, and no part of it is left."""
    provider = make_zertiban()
    header = provider.build_request().headers["authorization"]
    body = json.dumps({"error": "invalid_client", "error_description": f"<{header}>"}).encode()

    error = raises(provider, 401, body)
    assert error.message == "token endpoint refused the request: <**********>"


def test_a_short_secret_is_scrubbed_from_what_the_server_said_but_not_from_our_wording() -> None:
    # "secret" is too short to look for in tokenpool's own text (the hint says client_secret),
    # but it went on the wire, so it is scrubbed from what the server echoes.
    provider = make_payme(client_secret="secret")
    body = payme_answer(success=False, error="invalid_client", error_description="bad secret")

    error = raises(provider, 401, body)
    assert error.message == 'Pay-me answered without "success": true: bad **********'
    assert error.hint is not None
    assert "client_id/client_secret" in error.hint


def fragments(text: str, size: int = 10) -> set[str]:
    """Every *size*-character run of *text*: a leak cut short by truncation still shows one."""
    return {text[i : i + size] for i in range(len(text) - size + 1)} or {text}


def assert_clean(error: TokenRequestError, provider: Provider) -> None:
    texts = {
        "str": str(error),
        "message": error.message,
        "hint": error.hint or "",
        "error_code": error.error_code or "",
        "repr": repr(error),
        "tagged": str(tagged(error, "payouts")),
    }
    for form in echoable(provider):
        for where, text in texts.items():
            assert form not in text, (where, form, text)
            leaked = [piece for piece in fragments(form) if piece in text]
            assert not leaked, (where, form, leaked)


def echo_bodies(form: str) -> list[bytes]:
    """Token-endpoint answers that quote *form* back in each field some adapter shows."""
    said = f"invalid client secret {form} for client {ODD_ID}"
    long_said = "x" * 190 + form  # straddles the 200-character cut of quoted text
    status = {"code": form, "message_ilgn": [{"locale": "es_PE", "value": said}]}
    objects: list[dict[str, Any]] = [
        {"error": "invalid_client", "error_description": said},
        {"error": "invalid_client", "error_description": long_said},
        {"error": form, "error_description": said},
        {"error": "x" * 60 + form},  # error codes are cut at 64 characters
        {"code": form, "message": said},
        {"errorCode": form, "detail": said},
        {"statusCode": 401, "message": said, "error": "Unauthorized"},
        {"statusCode": 401, "message": [said, f"certificate {form}"]},
        {"access_token": "abc", "expires_in": form},
        {"access_token": "abc", "expires_in": "9" * 30 + form},
        {"access_token": "abc", "expires_in": 60, "token_type": form},
        {"access_token": "abc", "expires_in": 60, "token_type": "MAC" + form},
        {"success": False, "authorization": {"meta": {"status": status}}},
        {
            "success": True,
            "access_token": "abc",
            "expires_in": 60,
            "authorization": {"meta": {"status": status}},
        },
        {"success": False, "error": "invalid_client", "error_description": long_said},
    ]
    return [json.dumps(data).encode() for data in objects] + [
        said.encode(),
        f"<html><body>{said}</body></html>".encode(),
        f"grant_type=client_credentials&client_secret={form}".encode(),
    ]


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 429, 500, 503])
def test_no_wire_form_of_the_secret_is_echoed_into_an_error(odd: Provider, status: int) -> None:
    failures = 0
    for form in echoable(odd):
        for body in echo_bodies(form):
            try:
                odd.parse_response(status, {"retry-after": "5"}, body)
            except TokenRequestError as error:
                failures += 1
                assert_clean(error, odd)
    assert failures  # the bodies above are refusals, not tokens
