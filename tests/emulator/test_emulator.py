"""The loopback emulator, over real HTTP: each provider's contract, faults, expiry, counters.

Everything here talks to the session's emulator child process (``emulator``
fixture, reset before each test) through httpx over 127.0.0.1: plain HTTP,
HTTPS verified against the generated CA, HTTP/2, and mutual TLS for NTX MX.
The only real waits are one ~1.1 s sleep for expiry by the server's clock and
the injected latencies that hold requests open for the concurrency checks.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import h2.exceptions
import httpx
import pytest
import trustme

from tokenpool.providers import ClientCertificate
from tokenpool.testing import (
    PROVIDERS,
    ClientSpec,
    EmulatorApp,
    EmulatorError,
    EmulatorProcess,
    EmulatorSettings,
)

pytestmark = pytest.mark.integration

DOCUMENTED = {"ntxmx": 600, "ntxpix": 3600, "payme": 8600, "zertiban": 300, "navro": 300, "generic": 600}
PAYME_VERSION = {"ALG-API-VERSION": "1709847567"}
NAVRO_VERSION = {"X-API-Version": "1"}


# --------------------------------------------------------------------------- helpers


def expected_expires_in(emulator: EmulatorProcess, provider: str) -> int:
    return max(1, round(DOCUMENTED[provider] * emulator.lifetime_scale))


def escaped_pem(cert: ClientCertificate) -> str:
    """What NGINX's ``$ssl_client_escaped_cert`` forwards: the PEM, URL-encoded."""
    return urllib.parse.quote(cert.pem())


@pytest.fixture
def plain() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


@pytest.fixture
def tls(emulator: EmulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(verify=emulator.ssl_context(), http2=True, timeout=10.0) as client:
        yield client


@pytest.fixture
def mtls(emulator: EmulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(verify=emulator.ssl_context(client_cert=True), http2=True, timeout=10.0) as client:
        yield client


def ntxmx_token(client: httpx.Client, emulator: EmulatorProcess, *, tls: bool = True) -> str:
    client_id, secret = emulator.credentials("ntxmx")
    response = client.post(
        emulator.token_url("ntxmx", tls=tls),
        headers={"X-SSL-Client-Cert": escaped_pem(emulator.client_cert)},
        json={"clientId": client_id, "clientSecret": secret},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


def ntxpix_token(client: httpx.Client, emulator: EmulatorProcess, *, tls: bool = True, **extra: str) -> str:
    client_id, secret = emulator.credentials("ntxpix")
    body = {"clientId": client_id, "clientSecret": secret, **extra}
    response = client.post(emulator.token_url("ntxpix", tls=tls), json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def payme_body(emulator: EmulatorProcess, **changes: str) -> dict[str, str]:
    client_id, secret = emulator.credentials("payme")
    body = {
        "action": "authorize",
        "grant_type": "client_credentials",
        "audience": "https://api.payme.test",
        "client_id": client_id,
        "client_secret": secret,
        "scope": "create:token post:charges get:charges delete:charges",
    }
    body.update(changes)
    return body


def payme_token(client: httpx.Client, emulator: EmulatorProcess, *, tls: bool = True, **changes: str) -> str:
    response = client.post(
        emulator.token_url("payme", tls=tls), headers=PAYME_VERSION, json=payme_body(emulator, **changes)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def zertiban_token(client: httpx.Client, emulator: EmulatorProcess, *, tls: bool = True) -> httpx.Response:
    response = client.post(
        emulator.token_url("zertiban", tls=tls),
        auth=emulator.credentials("zertiban"),
        data={"grant_type": "client_credentials"},
    )
    assert response.status_code == 200, response.text
    return response


def navro_token(
    client: httpx.Client, emulator: EmulatorProcess, *, tls: bool = True, secret: str | None = None
) -> httpx.Response:
    client_id, current = emulator.credentials("navro")
    return client.post(
        emulator.token_url("navro", tls=tls),
        headers=NAVRO_VERSION,
        auth=(client_id, secret or current),
        data={"grant_type": "client_credentials", "scope": "openid"},
    )


def generic_basic(client_id: str, secret: str, *, encode: bool = True) -> dict[str, str]:
    if encode:  # RFC 6749 §2.3.1: form-urlencode each part before base64
        client_id, secret = urllib.parse.quote_plus(client_id), urllib.parse.quote_plus(secret)
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def generic_token(client: httpx.Client, emulator: EmulatorProcess, *, tls: bool = True) -> httpx.Response:
    response = client.post(
        emulator.token_url("generic", tls=tls),
        headers=generic_basic(*emulator.credentials("generic")),
        data={"grant_type": "client_credentials"},
    )
    assert response.status_code == 200, response.text
    return response


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def resource(emulator: EmulatorProcess, provider: str, *, tls: bool = True) -> str:
    return f"{emulator.url(provider, tls=tls)}/api/resource"


def provider_stats(emulator: EmulatorProcess, provider: str) -> dict[str, Any]:
    stats: dict[str, Any] = emulator.stats(events=False)["providers"][provider]
    return stats


# --------------------------------------------------------------------------- the process and its ready line


def test_ready_document_describes_listeners_certificates_and_credentials(emulator: EmulatorProcess) -> None:
    info = emulator.info
    assert info["host"] == "127.0.0.1"
    assert set(info["ports"]) == {"http", "https", "mtls"}
    assert len(set(info["ports"].values())) == 3
    for provider in PROVIDERS:
        assert info["urls"][provider]["http"] == f"http://127.0.0.1:{info['ports']['http']}/{provider}"
        assert info["urls"][provider]["https"] == f"https://127.0.0.1:{info['ports']['https']}/{provider}"
        assert info["urls"][provider]["mtls"] == f"https://127.0.0.1:{info['ports']['mtls']}/{provider}"
        assert set(info["credentials"][provider]) >= {"client_id", "client_secret"}
    assert emulator.url("ntxmx") == info["urls"]["ntxmx"]["mtls"]
    assert emulator.url("navro") == info["urls"]["navro"]["https"]
    assert emulator.url("payme", tls=False) == info["urls"]["payme"]["http"]
    for path in (info["ca_file"], emulator.client_cert.cert_file, emulator.revoked_client_cert.cert_file):
        assert Path(path).is_file()
    assert emulator.client_cert.pem().startswith(b"-----BEGIN CERTIFICATE-----")
    key_file = emulator.client_cert.key_file
    assert key_file is not None
    assert Path(key_file).stat().st_mode & 0o077 == 0  # private keys are not readable by others
    assert emulator.running


def test_client_info_lists_businesses_company_and_scopes(emulator: EmulatorProcess) -> None:
    zertiban = emulator.client_info("zertiban")
    uuids = zertiban["business_uuids"]
    assert len(uuids) == len(set(uuids)) == 1000
    assert all(str(uuid.UUID(value)) == value for value in uuids)
    assert uuids == emulator.info["credentials"]["zertiban"]["business_uuids"]  # deterministic
    assert emulator.client_info("navro")["company"] == "acme-payouts"
    assert emulator.info["token_paths"]["navro"] == "/authentication/acme-payouts/token"
    assert emulator.client_info("ntxpix")["scope"] == "pix:read pix:write balance:read"
    assert len(emulator.credentials("ntxpix")[1]) in range(8, 65)
    with pytest.raises(ValueError, match="unknown provider"):
        emulator.credentials("stripe")


def test_admin_api_answers_on_every_listener(
    emulator: EmulatorProcess, plain: httpx.Client, tls: httpx.Client, mtls: httpx.Client
) -> None:
    for client, base in ((plain, "http"), (tls, "https"), (mtls, "mtls")):
        response = client.get(f"{emulator.info['listeners'][base]}/_admin/health")
        assert response.json() == {"ok": True}
    index = plain.get(f"{emulator.admin_url}/").json()
    assert "POST /_admin/faults" in index["endpoints"]
    assert "POST /_admin/revoke-on-issue" in index["endpoints"]


# --------------------------------------------------------------------------- NTX Pay MX


def test_ntxmx_token_over_mutual_tls_is_201_as_documented(
    emulator: EmulatorProcess, mtls: httpx.Client
) -> None:
    client_id, secret = emulator.credentials("ntxmx")
    response = mtls.post(
        emulator.token_url("ntxmx"),
        headers={"X-SSL-Client-Cert": escaped_pem(emulator.client_cert)},
        json={"clientId": client_id, "clientSecret": secret},
    )
    assert response.status_code == 201
    assert response.http_version == "HTTP/2"
    body = response.json()
    assert list(body) == ["access_token", "token_type", "expires_in", "scope"]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == expected_expires_in(emulator, "ntxmx")
    assert body["scope"] == "email profile"
    assert not body["access_token"].startswith("eyJ")  # opaque, not JWT-looking
    assert response.headers["cache-control"] == "no-store"

    token = body["access_token"]
    cash_out = mtls.post(
        f"{emulator.url('ntxmx')}/api/spei/cash-out",
        headers=bearer(token),
        json={"amountCentavos": 15000, "destinationClabe": "012180001234567890", "externalId": "test-001"},
    )
    assert cash_out.status_code == 201
    assert cash_out.json()["status"] == "PENDING"
    ok = mtls.put(resource(emulator, "ntxmx"), headers=bearer(token), content=b"x" * 123)
    assert ok.json() == {"ok": True, "provider": "ntxmx", "method": "PUT", "body_bytes": 123}


@pytest.mark.parametrize("encoding", ["url", "base64"])
def test_ntxmx_plain_listener_needs_the_header_but_no_tls(
    emulator: EmulatorProcess, plain: httpx.Client, encoding: str
) -> None:
    client_id, secret = emulator.credentials("ntxmx")
    pem = emulator.client_cert.pem()
    header = escaped_pem(emulator.client_cert) if encoding == "url" else base64.b64encode(pem).decode()
    response = plain.post(
        emulator.token_url("ntxmx", tls=False),
        headers={"X-SSL-Client-Cert": header},
        json={"clientId": client_id, "clientSecret": secret},
    )
    assert response.status_code == 201, response.text


def test_ntxmx_without_the_certificate_header_is_400(emulator: EmulatorProcess, mtls: httpx.Client) -> None:
    client_id, secret = emulator.credentials("ntxmx")
    response = mtls.post(emulator.token_url("ntxmx"), json={"clientId": client_id, "clientSecret": secret})
    assert response.status_code == 400
    body = response.json()
    assert body["statusCode"] == 400
    assert body["error"] == "Bad Request"
    assert "X-SSL-Client-Cert" in body["message"]


@pytest.mark.parametrize(
    "header", ["not-a-certificate", "%2D%2D%2D%2D%2DBEGIN%20CERTIFICATE", "bm90IGEgY2VydA=="]
)
def test_ntxmx_unparseable_certificate_header_is_400(
    emulator: EmulatorProcess, plain: httpx.Client, header: str
) -> None:
    client_id, secret = emulator.credentials("ntxmx")
    response = plain.post(
        emulator.token_url("ntxmx", tls=False),
        headers={"X-SSL-Client-Cert": header},
        json={"clientId": client_id, "clientSecret": secret},
    )
    assert response.status_code == 400
    assert "certificate" in response.json()["message"]


@pytest.mark.parametrize("which", ["revoked", "expired", "foreign"])
def test_ntxmx_untrusted_certificates_are_401(
    emulator: EmulatorProcess, plain: httpx.Client, which: str, tmp_path: Path
) -> None:
    if which == "revoked":
        header = escaped_pem(emulator.revoked_client_cert)
    elif which == "expired":
        header = escaped_pem(emulator.expired_client_cert)
    else:  # a certificate from a CA the emulator never heard of
        pem = trustme.CA().issue_cert("intruder.example").cert_chain_pems[0].bytes()
        header = urllib.parse.quote(pem)
    client_id, secret = emulator.credentials("ntxmx")
    response = plain.post(
        emulator.token_url("ntxmx", tls=False),
        headers={"X-SSL-Client-Cert": header},
        json={"clientId": client_id, "clientSecret": secret},
    )
    assert response.status_code == 401
    body = response.json()
    assert body == {"statusCode": 401, "message": body["message"], "error": "Unauthorized"}
    assert "certificate" in body["message"]


def test_ntxmx_revoked_certificate_passes_tls_but_not_the_check(emulator: EmulatorProcess) -> None:
    context = emulator.ssl_context(client_cert=emulator.revoked_client_cert)
    client_id, secret = emulator.credentials("ntxmx")
    with httpx.Client(verify=context, http2=True) as client:
        response = client.post(
            emulator.token_url("ntxmx"),
            headers={"X-SSL-Client-Cert": escaped_pem(emulator.revoked_client_cert)},
            json={"clientId": client_id, "clientSecret": secret},
        )
    assert response.status_code == 401
    assert "revoked" in response.json()["message"]


def test_ntxmx_wrong_credentials_say_which_environment(emulator: EmulatorProcess, mtls: httpx.Client) -> None:
    client_id, _ = emulator.credentials("ntxmx")
    response = mtls.post(
        emulator.token_url("ntxmx"),
        headers={"X-SSL-Client-Cert": escaped_pem(emulator.client_cert)},
        json={"clientId": client_id, "clientSecret": "production-secret-0000"},
    )
    assert response.status_code == 401
    assert "not valid for this environment" in response.json()["message"]
    assert "sandbox" in response.json()["message"]


def test_ntxmx_is_refused_on_the_tls_listener_without_client_certificates(
    emulator: EmulatorProcess, tls: httpx.Client
) -> None:
    client_id, secret = emulator.credentials("ntxmx")
    base = emulator.info["urls"]["ntxmx"]["https"]
    response = tls.post(
        f"{base}/api/auth/token",
        headers={"X-SSL-Client-Cert": escaped_pem(emulator.client_cert)},
        json={"clientId": client_id, "clientSecret": secret},
    )
    assert response.status_code == 400
    assert response.json()["message"] == "No required SSL certificate was sent"


@pytest.mark.parametrize("certificate", ["none", "expired"])
def test_mutual_tls_listener_refuses_clients_without_a_valid_certificate(
    emulator: EmulatorProcess, certificate: str
) -> None:
    cert = emulator.expired_client_cert if certificate == "expired" else False
    with (
        httpx.Client(verify=emulator.ssl_context(client_cert=cert), timeout=10.0) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get(f"{emulator.url('ntxmx')}/api/resource")


# --------------------------------------------------------------------------- NTX Pay PIX


def test_ntxpix_token_as_documented(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    client_id, secret = emulator.credentials("ntxpix")
    response = tls.post(emulator.token_url("ntxpix"), json={"clientId": client_id, "clientSecret": secret})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["access_token", "token_type", "expires_in", "scope"]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == expected_expires_in(emulator, "ntxpix")
    assert body["scope"] == "pix:read pix:write balance:read"
    for method in ("GET", "PUT", "POST"):
        ok = tls.request(method, resource(emulator, "ntxpix"), headers=bearer(body["access_token"]))
        assert ok.status_code == 200


@pytest.mark.parametrize("secret", ["short77", "x" * 65])
def test_ntxpix_secret_length_is_validated(emulator: EmulatorProcess, tls: httpx.Client, secret: str) -> None:
    client_id, _ = emulator.credentials("ntxpix")
    response = tls.post(emulator.token_url("ntxpix"), json={"clientId": client_id, "clientSecret": secret})
    assert response.status_code == 400
    assert response.json()["message"] == ["clientSecret must be between 8 and 64 characters"]


def test_ntxpix_wrong_secret_is_401(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    client_id, _ = emulator.credentials("ntxpix")
    response = tls.post(
        emulator.token_url("ntxpix"), json={"clientId": client_id, "clientSecret": "12345678"}
    )
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401


def test_ntxpix_read_only_token_gets_403_on_writes(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    token = ntxpix_token(tls, emulator, scope="pix:read")
    assert tls.get(resource(emulator, "ntxpix"), headers=bearer(token)).status_code == 200
    denied = tls.put(resource(emulator, "ntxpix"), headers=bearer(token))
    assert denied.status_code == 403
    assert denied.json()["scope"] == "pix:write"


# --------------------------------------------------------------------------- Pay-me


def test_payme_token_as_documented(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    response = tls.post(emulator.token_url("payme"), headers=PAYME_VERSION, json=payme_body(emulator))
    assert response.status_code == 200
    body = response.json()
    assert list(body) == [
        "action",
        "success",
        "access_token",
        "scope",
        "expires_in",
        "token_type",
        "authorization",
    ]
    assert body["action"] == "authorize"
    assert body["success"] is True
    assert body["scope"] == "create:token post:charges get:charges delete:charges"
    assert body["expires_in"] == expected_expires_in(emulator, "payme")
    assert isinstance(body["expires_in"], int)
    assert body["token_type"] == "Bearer"
    status = body["authorization"]["meta"]["status"]
    assert status["code"] == "00"
    assert status["message_ilgn"] == [{"locale": "es_PE", "value": "Access Token creado"}]
    for method in ("GET", "POST", "DELETE"):
        ok = tls.request(
            method, resource(emulator, "payme"), headers=bearer(body["access_token"], **PAYME_VERSION)
        )
        assert ok.status_code == 200


@pytest.mark.parametrize("headers", [{}, {"ALG-API-VERSION": "1"}])
def test_payme_api_version_header_is_required(
    emulator: EmulatorProcess, tls: httpx.Client, headers: dict[str, str]
) -> None:
    response = tls.post(emulator.token_url("payme"), headers=headers, json=payme_body(emulator))
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["authorization"]["meta"]["status"]["code"] not in ("00", "")


@pytest.mark.parametrize(
    "changes",
    [
        {"action": "capture"},
        {"grant_type": "password"},
        {"audience": ""},
        {"client_id": ""},
        {"scope": "post:charges get:charges"},
    ],
)
def test_payme_invalid_requests_are_success_false(
    emulator: EmulatorProcess, tls: httpx.Client, changes: dict[str, str]
) -> None:
    response = tls.post(
        emulator.token_url("payme"), headers=PAYME_VERSION, json=payme_body(emulator, **changes)
    )
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert "access_token" not in body
    assert body["authorization"]["meta"]["status"]["code"] != "00"


def test_payme_bad_credentials_are_401_success_false(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    body = payme_body(emulator, client_secret="wrong")
    response = tls.post(emulator.token_url("payme"), headers=PAYME_VERSION, json=body)
    assert response.status_code == 401
    assert response.json()["success"] is False
    assert response.json()["authorization"]["meta"]["status"]["code"] == "04"


def test_payme_resource_needs_version_header_and_scopes(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    token = payme_token(tls, emulator, scope="create:token get:charges")
    url = resource(emulator, "payme")
    assert tls.get(url, headers=bearer(token)).status_code == 400  # header problems are never 401
    assert tls.get(url, headers=bearer(token, **PAYME_VERSION)).status_code == 200
    post = tls.post(url, headers=bearer(token, **PAYME_VERSION))
    assert post.status_code == 403
    assert post.json()["scope"] == "post:charges"
    assert tls.delete(url, headers=bearer(token, **PAYME_VERSION)).status_code == 403


# --------------------------------------------------------------------------- Zertiban


def test_zertiban_token_as_documented(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    response = zertiban_token(tls, emulator)
    assert response.http_version == "HTTP/2"
    body = response.json()
    assert list(body) == ["access_token", "token_type", "expires_in"]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == expected_expires_in(emulator, "zertiban")


def test_zertiban_credentials_in_the_body_are_400(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    client_id, secret = emulator.credentials("zertiban")
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    without_basic = tls.post(emulator.token_url("zertiban"), data=form)
    with_basic_too = tls.post(emulator.token_url("zertiban"), data=form, auth=(client_id, secret))
    for response in (without_basic, with_basic_too):
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("auth", ["missing", "wrong", "garbled"])
def test_zertiban_needs_valid_basic_auth(emulator: EmulatorProcess, tls: httpx.Client, auth: str) -> None:
    client_id, _ = emulator.credentials("zertiban")
    headers = {
        "missing": {},
        "wrong": {"Authorization": "Basic " + base64.b64encode(f"{client_id}:wrong".encode()).decode()},
        "garbled": {"Authorization": "Basic %%%"},
    }[auth]
    response = tls.post(
        emulator.token_url("zertiban"), data={"grant_type": "client_credentials"}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic ")


def test_zertiban_grant_type_is_required(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    response = tls.post(emulator.token_url("zertiban"), data={}, auth=emulator.credentials("zertiban"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_zertiban_tenant_must_be_one_of_the_clients_businesses(
    emulator: EmulatorProcess, tls: httpx.Client
) -> None:
    token = zertiban_token(tls, emulator).json()["access_token"]
    businesses = emulator.client_info("zertiban")["business_uuids"]
    url = resource(emulator, "zertiban")
    for business in (businesses[0], businesses[-1]):
        assert tls.get(url, headers=bearer(token, **{"x-tenant-id": business})).status_code == 200
    assert tls.get(url, headers=bearer(token)).status_code == 400
    assert tls.get(url, headers=bearer(token, **{"x-tenant-id": str(uuid.uuid4())})).status_code == 400
    # The token is checked first: a bad token with a bad tenant is a 401.
    assert tls.get(url, headers=bearer("nope", **{"x-tenant-id": "x"})).status_code == 401


def test_zertiban_lifetime_can_change_between_tokens(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    first = zertiban_token(tls, emulator).json()["expires_in"]
    assert first == expected_expires_in(emulator, "zertiban")
    assert emulator.set_lifetime("zertiban", 120) == max(1, round(120 * emulator.lifetime_scale))
    assert zertiban_token(tls, emulator).json()["expires_in"] == max(1, round(120 * emulator.lifetime_scale))
    assert emulator.set_lifetime("zertiban", expires_in=7) == 7
    assert zertiban_token(tls, emulator).json()["expires_in"] == 7
    emulator.set_lifetime("zertiban")
    assert zertiban_token(tls, emulator).json()["expires_in"] == first


# --------------------------------------------------------------------------- Navro


def test_navro_token_as_documented(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    response = navro_token(tls, emulator)  # the documented curl: urlencoded form, Basic, X-API-Version: 1
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == expected_expires_in(emulator, "navro")
    url = resource(emulator, "navro")
    assert tls.get(url, headers=bearer(body["access_token"], **NAVRO_VERSION)).status_code == 200
    assert tls.get(url, headers=bearer(body["access_token"])).status_code == 400


def test_navro_accepts_multipart_form_data(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    response = tls.post(
        emulator.token_url("navro"),
        headers=NAVRO_VERSION,
        auth=emulator.credentials("navro"),
        files={"grant_type": (None, "client_credentials"), "scope": (None, "openid")},
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("version", [None, "2"])
def test_navro_api_version_header_is_required(
    emulator: EmulatorProcess, tls: httpx.Client, version: str | None
) -> None:
    headers = {} if version is None else {"X-API-Version": version}
    response = tls.post(
        emulator.token_url("navro"),
        headers=headers,
        auth=emulator.credentials("navro"),
        data={"grant_type": "client_credentials", "scope": "openid"},
    )
    assert response.status_code == 400


def test_navro_unknown_company_is_404_and_bad_requests_are_rejected(
    emulator: EmulatorProcess, tls: httpx.Client
) -> None:
    credentials = emulator.credentials("navro")
    form = {"grant_type": "client_credentials", "scope": "openid"}
    unknown = tls.post(
        f"{emulator.url('navro')}/authentication/globex/token",
        headers=NAVRO_VERSION,
        auth=credentials,
        data=form,
    )
    assert unknown.status_code == 404
    no_scope = tls.post(
        emulator.token_url("navro"),
        headers=NAVRO_VERSION,
        auth=credentials,
        data={"grant_type": "client_credentials"},
    )
    assert no_scope.status_code == 400
    wrong = navro_token(tls, emulator, secret="not-the-secret")
    assert wrong.status_code == 401


def test_navro_secret_rotation(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    _, old_secret = emulator.credentials("navro")
    old_token = navro_token(tls, emulator).json()["access_token"]
    new_secret = emulator.rotate_secret("navro")
    assert new_secret != old_secret
    assert emulator.credentials("navro")[1] == new_secret
    assert navro_token(tls, emulator, secret=old_secret).status_code == 401  # at once
    assert navro_token(tls, emulator, secret=new_secret).status_code == 200
    # Tokens issued with the old secret stay valid until they expire.
    assert tls.get(resource(emulator, "navro"), headers=bearer(old_token, **NAVRO_VERSION)).status_code == 200


# --------------------------------------------------------------------------- generic RFC 6749


@pytest.mark.parametrize("method", ["basic_encoded", "basic_raw", "post"])
def test_generic_client_authentication_methods(
    emulator: EmulatorProcess, tls: httpx.Client, method: str
) -> None:
    client_id, secret = emulator.credentials("generic")
    assert secret != urllib.parse.quote_plus(secret)  # the encodings really differ
    form = {"grant_type": "client_credentials", "scope": "payouts"}
    headers: dict[str, str] = {}
    if method == "post":
        form.update(client_id=client_id, client_secret=secret)
    else:
        headers = generic_basic(client_id, secret, encode=method == "basic_encoded")
    response = tls.post(emulator.token_url("generic"), headers=headers, data=form)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["access_token", "token_type", "expires_in"]
    assert body["expires_in"] == expected_expires_in(emulator, "generic")
    assert response.headers["cache-control"] == "no-store"
    assert provider_stats(emulator, "generic")["token_requests_by_client"] == {client_id: 1}


def test_generic_errors_follow_rfc_6749(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    client_id, secret = emulator.credentials("generic")
    url = emulator.token_url("generic")
    basic = generic_basic(client_id, secret)

    def error(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, str(response.json()["error"])

    assert error(tls.post(url, headers=basic, data={"grant_type": "password"})) == (
        400,
        "unsupported_grant_type",
    )
    assert error(tls.post(url, headers=basic, data={})) == (400, "invalid_request")
    both = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    assert error(tls.post(url, headers=basic, data=both)) == (400, "invalid_request")
    assert error(tls.post(url, headers=basic, json={"grant_type": "client_credentials"})) == (
        400,
        "invalid_request",
    )
    missing = tls.post(url, data={"grant_type": "client_credentials"})
    assert error(missing) == (401, "invalid_client")
    assert missing.headers["www-authenticate"].startswith("Basic realm=")
    wrong = tls.post(url, headers=generic_basic(client_id, "nope"), data={"grant_type": "client_credentials"})
    assert error(wrong) == (401, "invalid_client")
    assert "www-authenticate" in wrong.headers


# --------------------------------------------------------------------------- resource checks


def test_resource_401_reasons(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    url = resource(emulator, "generic")
    zertiban = zertiban_token(tls, emulator).json()["access_token"]
    cases = {
        "missing": {},
        "unknown": bearer("not-a-token"),
    }
    for reason, headers in cases.items():
        response = tls.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json()["reason"] == reason
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert response.headers["www-authenticate"].startswith("Bearer ")
    # A valid token of another provider is unknown here.
    assert tls.get(url, headers=bearer(zertiban)).json()["reason"] == "unknown"
    assert provider_stats(emulator, "generic")["resource_401"] == {"missing": 1, "unknown": 2}


def test_mass_revocation(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    generic = generic_token(tls, emulator).json()["access_token"]
    navro = navro_token(tls, emulator).json()["access_token"]
    assert emulator.revoke_tokens("generic") == 1
    revoked = tls.get(resource(emulator, "generic"), headers=bearer(generic))
    assert revoked.status_code == 401
    assert revoked.json()["reason"] == "revoked"
    assert tls.get(resource(emulator, "navro"), headers=bearer(navro, **NAVRO_VERSION)).status_code == 200
    assert emulator.revoke_tokens() == 1  # the Navro one; the generic one was already revoked
    again = tls.get(resource(emulator, "navro"), headers=bearer(navro, **NAVRO_VERSION))
    assert again.json()["reason"] == "revoked"
    fresh = generic_token(tls, emulator).json()["access_token"]  # new tokens are fine
    assert tls.get(resource(emulator, "generic"), headers=bearer(fresh)).status_code == 200


def test_revoke_on_issue_revokes_the_clients_earlier_tokens(
    emulator: EmulatorProcess, tls: httpx.Client
) -> None:
    url = resource(emulator, "generic")
    navro = navro_token(tls, emulator).json()["access_token"]
    before = generic_token(tls, emulator).json()["access_token"]  # issued while the mode was off
    emulator.set_revoke_on_issue("generic")
    first = generic_token(tls, emulator).json()["access_token"]
    revoked = tls.get(url, headers=bearer(before))
    assert revoked.status_code == 401
    assert revoked.json()["reason"] == "revoked"
    assert 'error="invalid_token"' in revoked.headers["www-authenticate"]
    assert tls.get(url, headers=bearer(first)).status_code == 200
    second = generic_token(tls, emulator).json()["access_token"]
    assert tls.get(url, headers=bearer(first)).json()["reason"] == "revoked"
    assert tls.get(url, headers=bearer(second)).status_code == 200
    # Another provider's token is untouched, and so is that provider's mode.
    assert tls.get(resource(emulator, "navro"), headers=bearer(navro, **NAVRO_VERSION)).status_code == 200
    stats = emulator.stats(events=False)["providers"]
    generic = stats["generic"]
    assert generic["revoke_on_issue"] is True
    assert generic["revoked_on_issue"] == 2
    assert generic["tokens_issued"] == 3
    assert generic["live_tokens"] == 1
    assert generic["resource_401"] == {"revoked": 2}
    assert stats["navro"]["revoke_on_issue"] is False
    assert stats["navro"]["revoked_on_issue"] == 0
    assert stats["navro"]["live_tokens"] == 1
    # An admin revocation is not counted as one caused by issuing.
    assert emulator.revoke_tokens("generic") == 1
    third = generic_token(tls, emulator).json()["access_token"]
    assert tls.get(url, headers=bearer(third)).status_code == 200
    assert provider_stats(emulator, "generic")["revoked_on_issue"] == 2


def test_revoke_on_issue_is_off_by_default_and_can_be_switched_off(
    emulator: EmulatorProcess, plain: httpx.Client, tls: httpx.Client
) -> None:
    url = resource(emulator, "zertiban")
    tenant = {"x-tenant-id": emulator.client_info("zertiban")["business_uuids"][0]}
    assert provider_stats(emulator, "zertiban")["revoke_on_issue"] is False
    tokens = [zertiban_token(tls, emulator).json()["access_token"] for _ in range(2)]
    emulator.set_revoke_on_issue("zertiban")
    emulator.set_revoke_on_issue("zertiban", enabled=False)
    tokens.append(zertiban_token(tls, emulator).json()["access_token"])
    for token in tokens:
        assert tls.get(url, headers=bearer(token, **tenant)).status_code == 200
    stats = provider_stats(emulator, "zertiban")
    assert stats["revoke_on_issue"] is False
    assert stats["revoked_on_issue"] == 0
    assert stats["live_tokens"] == 3
    # The admin endpoint itself: its answer, and what it refuses.
    answer = plain.post(f"{emulator.admin_url}/revoke-on-issue", json={"provider": "payme"})
    assert answer.json() == {"provider": "payme", "revoke_on_issue": True}
    for body in ({}, {"provider": "stripe"}, {"provider": "payme", "enabled": "yes"}):
        refused = plain.post(f"{emulator.admin_url}/revoke-on-issue", json=body)
        assert refused.status_code == 400, body
    assert provider_stats(emulator, "payme")["revoke_on_issue"] is True
    with pytest.raises(ValueError, match="unknown provider"):
        emulator.set_revoke_on_issue("stripe")


def test_reset_turns_revoke_on_issue_off(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    for provider in PROVIDERS:
        emulator.set_revoke_on_issue(provider)
    generic_token(tls, emulator)
    generic_token(tls, emulator)
    assert provider_stats(emulator, "generic")["revoked_on_issue"] == 1

    emulator.reset()

    stats = emulator.stats(events=False)["providers"]
    for provider in PROVIDERS:
        assert stats[provider]["revoke_on_issue"] is False
        assert stats[provider]["revoked_on_issue"] == 0
    url = resource(emulator, "generic")
    tokens = [generic_token(tls, emulator).json()["access_token"] for _ in range(2)]
    for token in tokens:
        assert tls.get(url, headers=bearer(token)).status_code == 200
    assert provider_stats(emulator, "generic")["revoked_on_issue"] == 0


def test_tokens_expire_by_the_server_clock(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    """The one real wait: 1-second tokens, checked just after their second is up."""
    emulator.set_lifetime("generic", expires_in=1)
    emulator.set_lifetime_scale(1 / 600)  # Zertiban: max(1, round(300 / 600)) == 1
    emulator.fault("ntxpix", status=503, duration=1.0)  # a timed fault lapses in the same wait
    generic = generic_token(tls, emulator).json()
    zertiban = zertiban_token(tls, emulator).json()
    assert generic["expires_in"] == zertiban["expires_in"] == 1
    client_id, secret = emulator.credentials("ntxpix")
    pix = {"clientId": client_id, "clientSecret": secret}
    assert tls.post(emulator.token_url("ntxpix"), json=pix).status_code == 503
    tenant = {"x-tenant-id": emulator.client_info("zertiban")["business_uuids"][0]}
    assert tls.get(resource(emulator, "generic"), headers=bearer(generic["access_token"])).status_code == 200

    time.sleep(1.1)

    expired = tls.get(resource(emulator, "generic"), headers=bearer(generic["access_token"]))
    assert expired.status_code == 401
    assert expired.json()["reason"] == "expired"
    expired = tls.get(resource(emulator, "zertiban"), headers=bearer(zertiban["access_token"], **tenant))
    assert expired.json()["reason"] == "expired"
    assert tls.post(emulator.token_url("ntxpix"), json=pix).status_code == 200
    assert provider_stats(emulator, "ntxpix")["faults"] == []


def test_lifetime_scale_multiplies_every_documented_lifetime(
    emulator: EmulatorProcess, tls: httpx.Client
) -> None:
    assert emulator.set_lifetime_scale(0.01) == 0.01
    stats = emulator.stats(events=False)
    assert stats["lifetime_scale"] == 0.01
    expected = {"ntxmx": 6, "ntxpix": 36, "payme": 86, "zertiban": 3, "navro": 3, "generic": 6}
    assert {name: stats["providers"][name]["expires_in"] for name in PROVIDERS} == expected
    assert zertiban_token(tls, emulator).json()["expires_in"] == 3
    emulator.set_lifetime_scale(0.0001)
    assert generic_token(tls, emulator).json()["expires_in"] == 1  # never below 1
    with pytest.raises(EmulatorError, match="400"):
        emulator.set_lifetime_scale(0)


# --------------------------------------------------------------------------- HTTP versions


def test_http2_over_tls_and_h2c_and_http11_fallback(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    assert generic_token(tls, emulator).http_version == "HTTP/2"
    with httpx.Client(http1=False, http2=True) as h2c:
        assert generic_token(h2c, emulator, tls=False).http_version == "HTTP/2"
    with httpx.Client(verify=emulator.ssl_context()) as http11:
        assert generic_token(http11, emulator).http_version == "HTTP/1.1"


# --------------------------------------------------------------------------- faults


def test_status_fault_with_retry_after_and_count(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    emulator.fault("zertiban", status=503, retry_after=7, count=2)
    url = emulator.token_url("zertiban")
    form = {"grant_type": "client_credentials"}
    credentials = emulator.credentials("zertiban")
    for _ in range(2):
        response = tls.post(url, auth=credentials, data=form)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"] == "temporarily_unavailable"
    assert tls.post(url, auth=credentials, data=form).status_code == 200
    stats = provider_stats(emulator, "zertiban")
    assert stats["token_failures"] == {"503": 2}
    assert stats["tokens_issued"] == 1
    assert stats["faults"] == []


def test_faults_apply_only_to_their_provider_and_can_be_cleared(
    emulator: EmulatorProcess, tls: httpx.Client
) -> None:
    emulator.fault("generic", status=429, retry_after="Wed, 21 Oct 2026 07:28:00 GMT")
    emulator.fault("payme", status=500)
    assert zertiban_token(tls, emulator).status_code == 200
    limited = tls.post(
        emulator.token_url("generic"),
        headers=generic_basic(*emulator.credentials("generic")),
        data={"grant_type": "client_credentials"},
    )
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert emulator.clear_faults("generic") == 1
    assert generic_token(tls, emulator).status_code == 200
    assert emulator.clear_faults() == 1


def test_invalid_fault_specs_are_refused(emulator: EmulatorProcess) -> None:
    with pytest.raises(EmulatorError, match="malformed"):
        emulator.fault("generic", malformed="gibberish")
    with pytest.raises(EmulatorError, match="at least one"):
        emulator.fault("generic", count=3)
    with pytest.raises(EmulatorError, match="status"):
        emulator.fault("generic", status=200)


@pytest.mark.parametrize(
    "kind",
    [
        "html",
        "not_json",
        "empty",
        "missing_access_token",
        "bad_expires_in",
        "zero_expires_in",
        "wrong_token_type",
        "success_false",
    ],
)
def test_malformed_answers(emulator: EmulatorProcess, tls: httpx.Client, kind: str) -> None:
    emulator.fault("generic", malformed=kind, count=1)
    response = generic_token(tls, emulator)
    assert response.status_code == 200
    if kind == "html":
        assert response.headers["content-type"].startswith("text/html")
    elif kind == "not_json":
        with pytest.raises(json.JSONDecodeError):
            response.json()
    elif kind == "empty":
        assert response.content == b""
    elif kind == "missing_access_token":
        assert "access_token" not in response.json()
        assert response.json()["expires_in"] > 0
    elif kind == "bad_expires_in":
        assert response.json()["expires_in"] == "soon"
    elif kind == "zero_expires_in":
        assert response.json()["expires_in"] == 0
    elif kind == "wrong_token_type":
        assert response.json()["token_type"] == "MAC"
    else:
        assert response.json() == {"success": False, "error": "server_error"}
    stats = provider_stats(emulator, "generic")
    assert stats["token_malformed"] == {kind: 1}
    issued = 1 if kind in ("bad_expires_in", "zero_expires_in", "wrong_token_type") else 0
    assert stats["tokens_issued"] == issued
    assert generic_token(tls, emulator).json()["token_type"] == "Bearer"  # count=1: next one is fine


def test_payme_success_false_fault(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    emulator.fault("payme", malformed="success_false")
    response = tls.post(emulator.token_url("payme"), headers=PAYME_VERSION, json=payme_body(emulator))
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert body["action"] == "authorize"
    assert body["authorization"]["meta"]["status"]["code"] == "99"
    assert "access_token" not in body


@pytest.mark.parametrize("http2", [False, True])
def test_drop_breaks_the_answer_mid_way(emulator: EmulatorProcess, http2: bool) -> None:
    emulator.fault("generic", drop=True, count=1)
    # HTTP/1.1: the connection closes short of Content-Length; HTTP/2: the stream
    # ends short of it (httpx lets h2's own ProtocolError through over TLS).
    with (
        httpx.Client(verify=emulator.ssl_context(), http2=http2, timeout=10.0) as client,
        pytest.raises((httpx.TransportError, h2.exceptions.ProtocolError)),
    ):
        generic_token(client, emulator)
    with httpx.Client(verify=emulator.ssl_context(), http2=http2, timeout=10.0) as client:
        assert generic_token(client, emulator).status_code == 200
    stats = provider_stats(emulator, "generic")
    assert stats["token_failures"] == {"dropped": 1}
    assert stats["tokens_issued"] == 1


@pytest.mark.anyio
async def test_latency_holds_token_requests_open_concurrently(emulator: EmulatorProcess) -> None:
    emulator.fault("generic", latency=0.3, status=503, count=5)
    client_id, secret = emulator.credentials("generic")
    statuses: list[int] = []
    async with httpx.AsyncClient(verify=emulator.ssl_context(), http2=True, timeout=10.0) as client:

        async def one() -> None:
            response = await client.post(
                emulator.token_url("generic"),
                data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
            )
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(one)
    assert statuses == [503] * 5
    stats = provider_stats(emulator, "generic")
    assert stats["max_concurrent_token_requests"] == 5  # all five were held by the latency at once
    assert stats["token_requests_in_flight"] == 0
    assert stats["token_failures"] == {"503": 5}


@pytest.mark.anyio
async def test_resource_latency_and_http2_multiplexing(emulator: EmulatorProcess) -> None:
    emulator.fault("zertiban", resource_latency=0.3, count=8)
    tenant = emulator.client_info("zertiban")["business_uuids"][3]
    async with httpx.AsyncClient(verify=emulator.ssl_context(), http2=True, timeout=10.0) as client:
        token = await client.post(
            emulator.token_url("zertiban"),
            auth=emulator.credentials("zertiban"),
            data={"grant_type": "client_credentials"},
        )
        headers = bearer(token.json()["access_token"], **{"x-tenant-id": tenant})
        versions: list[str] = []

        async def one(size: int) -> None:
            response = await client.post(resource(emulator, "zertiban"), headers=headers, content=b"b" * size)
            assert response.json()["body_bytes"] == size
            versions.append(response.http_version)

        async with anyio.create_task_group() as group:
            for size in range(8):
                group.start_soon(one, size)
    assert versions == ["HTTP/2"] * 8
    stats = provider_stats(emulator, "zertiban")
    assert stats["max_concurrent_resource_calls"] == 8
    assert stats["resource_ok"] == 8


def test_a_caller_that_gives_up_during_latency_is_counted(emulator: EmulatorProcess) -> None:
    emulator.fault("generic", latency=5.0, count=1)
    emulator.fault("navro", resource_latency=5.0, count=1)
    with httpx.Client(verify=emulator.ssl_context(), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            generic_token(client, emulator)
        with pytest.raises(httpx.ReadTimeout):
            client.get(resource(emulator, "navro"))
    generic: dict[str, Any] = {}
    navro: dict[str, Any] = {}
    for _ in range(100):  # the server notices the closed connections within a few ms
        generic, navro = provider_stats(emulator, "generic"), provider_stats(emulator, "navro")
        if generic["token_failures"] and navro["resource_disconnected"]:
            break
        time.sleep(0.02)
    assert generic["token_failures"] == {"disconnected": 1}
    assert generic["token_requests_in_flight"] == 0
    assert navro["resource_disconnected"] == navro["resource_calls"] == 1


# --------------------------------------------------------------------------- stats and reset


def test_stats_count_exactly(emulator: EmulatorProcess, tls: httpx.Client) -> None:
    client_id, secret = emulator.credentials("zertiban")
    url = emulator.token_url("zertiban")
    tokens = [zertiban_token(tls, emulator).json()["access_token"] for _ in range(3)]
    for _ in range(2):
        wrong = tls.post(url, auth=(client_id, "wrong"), data={"grant_type": "client_credentials"})
        assert wrong.status_code == 401
    body_credentials = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    assert tls.post(url, data=body_credentials).status_code == 400
    tenant = {"x-tenant-id": emulator.client_info("zertiban")["business_uuids"][0]}
    api = resource(emulator, "zertiban")
    for token in tokens + tokens[:1]:
        assert tls.get(api, headers=bearer(token, **tenant)).status_code == 200
    assert tls.get(api).status_code == 401
    assert tls.get(api, headers=bearer("bogus")).status_code == 401
    assert tls.get(api, headers=bearer("bogus2")).status_code == 401
    assert tls.get(api, headers=bearer(tokens[0])).status_code == 400

    stats = emulator.stats()
    zertiban = stats["providers"]["zertiban"]
    assert {key: zertiban[key] for key in zertiban if key not in ("faults", "expires_in")} == {
        "token_requests": 6,
        "tokens_issued": 3,
        "token_failures": {"401": 2, "400": 1},
        "token_malformed": {},
        "token_requests_by_client": {client_id: 5, "<none>": 1},
        "token_requests_by_http_version": {"2": 6},
        "token_requests_in_flight": 0,
        "max_concurrent_token_requests": 1,
        "resource_calls": 8,
        "resource_ok": 4,
        "resource_401": {"missing": 1, "unknown": 2},
        "resource_400": 1,
        "resource_403": 0,
        "resource_disconnected": 0,
        "max_concurrent_resource_calls": 1,
        "live_tokens": 3,
        "revoke_on_issue": False,
        "revoked_on_issue": 0,
    }
    for other in set(PROVIDERS) - {"zertiban"}:
        assert stats["providers"][other]["token_requests"] == 0
    kinds: dict[str, int] = {}
    for event in stats["events"]:
        assert event["provider"] == "zertiban"
        kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
    assert kinds == {"token_request": 6, "token_issued": 3, "token_failure": 3, "resource_401": 3}
    times = [event["t"] for event in stats["events"]]
    assert times == sorted(times)
    assert stats["events_total"] == 15
    assert stats["events_dropped"] == 0
    assert emulator.stats(since=times[-1])["events"] == stats["events"][-1:]


def test_reset_forgets_tokens_faults_secrets_lifetimes_and_counters(
    emulator: EmulatorProcess, tls: httpx.Client
) -> None:
    token = generic_token(tls, emulator).json()["access_token"]
    _, original = emulator.credentials("navro")
    emulator.rotate_secret("navro")
    emulator.fault("payme", status=503)
    emulator.set_lifetime("zertiban", expires_in=5)
    emulator.set_lifetime_scale(0.5)

    emulator.reset()

    stats = emulator.stats()
    assert stats["events"] == []
    assert stats["lifetime_scale"] == emulator.lifetime_scale
    for provider in PROVIDERS:
        counters = stats["providers"][provider]
        assert counters["token_requests"] == counters["resource_calls"] == counters["live_tokens"] == 0
        assert counters["faults"] == []
        assert counters["expires_in"] == expected_expires_in(emulator, provider)
    assert emulator.credentials("navro")[1] == original
    assert navro_token(tls, emulator).status_code == 200
    assert tls.get(resource(emulator, "generic"), headers=bearer(token)).json()["reason"] == "unknown"


# --------------------------------------------------------------------------- async clients, both backends


@pytest.mark.anyio
async def test_async_clients_on_every_provider(emulator: EmulatorProcess) -> None:
    context = emulator.ssl_context(client_cert=True)
    async with httpx.AsyncClient(verify=context, http2=True, timeout=10.0) as client:
        ntx_id, ntx_secret = emulator.credentials("ntxmx")
        response = await client.post(
            emulator.token_url("ntxmx"),
            headers={"X-SSL-Client-Cert": escaped_pem(emulator.client_cert)},
            json={"clientId": ntx_id, "clientSecret": ntx_secret},
        )
        assert response.status_code == 201
        assert response.http_version == "HTTP/2"
        payme = await client.post(
            emulator.token_url("payme"), headers=PAYME_VERSION, json=payme_body(emulator)
        )
        assert payme.json()["success"] is True
        navro = await client.post(
            emulator.token_url("navro"),
            headers=NAVRO_VERSION,
            auth=emulator.credentials("navro"),
            data={"grant_type": "client_credentials", "scope": "openid"},
        )
        token = navro.json()["access_token"]
        answers = []

        async def call() -> None:
            answer = await client.get(resource(emulator, "navro"), headers=bearer(token, **NAVRO_VERSION))
            answers.append(answer.status_code)

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(call)
    assert answers == [200] * 50
    assert provider_stats(emulator, "navro")["resource_ok"] == 50


def is_running(process: EmulatorProcess) -> bool:
    return process.running


@pytest.mark.anyio
async def test_emulator_process_as_async_context_manager() -> None:
    async with EmulatorProcess(lifetime_scale=0.5) as process:
        assert process.running
        async with httpx.AsyncClient(verify=process.ssl_context(), timeout=10.0) as client:
            response = await client.post(
                process.token_url("zertiban"),
                auth=process.credentials("zertiban"),
                data={"grant_type": "client_credentials"},
            )
        assert response.json()["expires_in"] == 150
        assert process.stats(events=False)["providers"]["zertiban"]["tokens_issued"] == 1
        cert_dir = anyio.Path(process.info["cert_dir"])
        assert await cert_dir.is_dir()
    assert not is_running(process)
    assert process.returncode == 0  # SIGTERM is a clean shutdown
    assert not await cert_dir.exists()  # the child removed its certificates and keys
    with pytest.raises(EmulatorError, match="not running"):
        process.stats()


# --------------------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenpool.testing", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_is_light() -> None:
    code = (
        "import sys, tokenpool.testing as t; t.PROVIDERS; "
        "print(sorted(m for m in ('hypercorn', 'trustme', 'tokenpool.testing._process', "
        "'tokenpool.testing._server') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_cli_help() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--port-file", "--lifetime-scale", "--host", "--cert-dir", "--json"):
        assert option in result.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.com"])  # noqa: S104 - refused on purpose
def test_cli_refuses_non_loopback_hosts(host: str) -> None:
    result = run_cli("--host", host)
    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_start_failure_reports_the_childs_stderr() -> None:
    process = EmulatorProcess(extra_args=["--host", "203.0.113.7"])
    with pytest.raises(EmulatorError, match="loopback"):
        process.start()
    assert not process.running


def test_port_file_and_clean_shutdown(tmp_path: Path) -> None:
    port_file = tmp_path / "emulator.json"
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    with EmulatorProcess(extra_args=["--port-file", str(port_file), "--cert-dir", str(cert_dir)]) as process:
        assert json.loads(port_file.read_text()) == process.info
        assert process.ca_file == str(cert_dir / "ca.pem")
        with httpx.Client(verify=ssl.create_default_context(cafile=process.ca_file)) as client:
            assert client.get(f"{process.info['listeners']['https']}/_admin/health").status_code == 200
        pid = process.pid
    assert process.returncode == 0
    assert not port_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_emulator_does_not_outlive_a_killed_parent() -> None:
    parent_code = (
        "import json, sys, time\n"
        "from tokenpool.testing import EmulatorProcess\n"
        "emulator = EmulatorProcess().start()\n"
        "print(json.dumps([emulator.pid, emulator.info['cert_dir']]), flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid, cert_dir = json.loads(parent.stdout.readline())
        parent.kill()  # no cleanup code runs in the parent
        parent.wait(timeout=30)
        for _ in range(200):  # the child sees its stdin close and shuts down
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(child_pid, 9)
            pytest.fail("the emulator outlived its parent")
        for _ in range(100):  # it may still be removing its directory as it exits
            if not Path(cert_dir).exists():
                break
            time.sleep(0.05)
        assert not Path(cert_dir).exists()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        if parent.stdout is not None:
            parent.stdout.close()


# --------------------------------------------------------------------------- in process, scripted clock


@pytest.mark.anyio
async def test_in_process_app_expires_and_prunes_by_its_clock() -> None:
    now = [1000.0]
    app = EmulatorApp(EmulatorSettings(clock=lambda: now[0], expired_token_grace=60.0))
    client_id, secret = app.credentials("generic")["client_id"], app.credentials("generic")["client_secret"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        response = await client.post(
            "/generic/oauth/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
        token = response.json()["access_token"]
        assert (await client.get("/generic/api/resource", headers=bearer(token))).status_code == 200
        now[0] += 599.999
        assert (await client.get("/generic/api/resource", headers=bearer(token))).status_code == 200
        now[0] += 0.001  # exactly expires_in after issue
        expired = await client.get("/generic/api/resource", headers=bearer(token))
        assert expired.json()["reason"] == "expired"
        assert app.stats()["tracked_tokens"] == 1
        now[0] += 60.0  # past the grace period: forgotten, memory stays bounded
        assert app.stats()["tracked_tokens"] == 0
        forgotten = await client.get("/generic/api/resource", headers=bearer(token))
        assert forgotten.json()["reason"] == "unknown"


@pytest.mark.anyio
async def test_in_process_revoke_on_issue_spares_other_clients_and_expired_tokens() -> None:
    """Two clients of one provider (the child process has one per provider), and a scripted clock."""
    now = [1000.0]
    known = {"client-a": "secret-a", "client-b": "secret-b"}
    specs = tuple(ClientSpec(client_id, secret) for client_id, secret in known.items())
    app = EmulatorApp(EmulatorSettings(clients={"generic": specs}, clock=lambda: now[0]))
    app.set_revoke_on_issue("generic")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:

        async def token(client_id: str) -> str:
            form = {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": known[client_id],
            }
            response = await client.post("/generic/oauth/token", data=form)
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        async def outcome(token: str) -> str:
            response = await client.get("/generic/api/resource", headers=bearer(token))
            return "ok" if response.status_code == 200 else str(response.json()["reason"])

        a1 = await token("client-a")
        b1 = await token("client-b")
        a2 = await token("client-a")
        assert [await outcome(t) for t in (a1, b1, a2)] == ["revoked", "ok", "ok"]
        assert app.stats()["providers"]["generic"]["revoked_on_issue"] == 1
        now[0] += 600.0  # every token so far has expired by the server's clock
        a3 = await token("client-a")
        # An expired token is not revoked again: it stays expired and is not counted.
        assert [await outcome(t) for t in (a1, b1, a2, a3)] == ["revoked", "expired", "expired", "ok"]
        b2 = await token("client-b")
        b3 = await token("client-b")
        assert [await outcome(t) for t in (a3, b2, b3)] == ["ok", "revoked", "ok"]
        stats = app.stats()["providers"]["generic"]
        assert stats["revoked_on_issue"] == 2
        assert stats["live_tokens"] == 2
        assert stats["token_requests_by_client"] == {"client-a": 3, "client-b": 3}
