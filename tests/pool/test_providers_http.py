"""Each provider adapter against the emulator over real HTTP (TLS, HTTP/2, mTLS for NTX MX)."""

from __future__ import annotations

import ssl
from typing import Any

import anyio
import httpx
import pytest

from tokenpool import CredentialsRejected, InvalidTokenResponse, TokenPool
from tokenpool.providers import Navro, NtxPayMX, NtxPayPix, PayMe, Provider, Zertiban
from tokenpool.testing import EmulatorProcess

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def build(emulator: EmulatorProcess, name: str, **overrides: Any) -> Provider:
    info = emulator.client_info(name)
    creds: dict[str, Any] = {"client_id": info["client_id"], "client_secret": info["client_secret"]}
    base = emulator.url(name)
    if name == "ntxmx":
        return NtxPayMX(
            **creds,
            client_certificate=overrides.pop("cert", emulator.client_cert),
            base_url=base,
            **overrides,
        )
    if name == "ntxpix":
        return NtxPayPix(**creds, base_url=base, **overrides)
    if name == "payme":
        return PayMe(**creds, audience=info["audience"], base_url=base, **overrides)
    if name == "zertiban":
        tenant = overrides.pop("tenant", info["business_uuids"][0])
        return Zertiban(**creds, business_uuid=tenant, base_url=base, **overrides)
    if name == "navro":
        return Navro(**creds, company=info["company"], base_url=base, **overrides)
    raise AssertionError(name)


def pool(emulator: EmulatorProcess, providers: dict[str, Provider], **kwargs: Any) -> TokenPool:
    return TokenPool(providers, ca_file=emulator.ca_file, metrics=False, warm_up="lazy", **kwargs)


def stats(emulator: EmulatorProcess, name: str) -> dict[str, Any]:
    result: dict[str, Any] = emulator.stats(events=False)["providers"][name]
    return result


def ssl_context(emulator: EmulatorProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=emulator.ca_file)


@pytest.mark.parametrize(
    ("name", "lifetime"),
    [("ntxmx", 600), ("ntxpix", 3600), ("payme", 8600), ("zertiban", 300), ("navro", 300)],
)
async def test_each_provider_token_and_a_protected_call(
    emulator: EmulatorProcess, name: str, lifetime: int
) -> None:
    provider = build(emulator, name)
    async with pool(emulator, {name: provider}) as p:
        token = await p.token(name)
        assert token.expires_in == lifetime
        context = ssl_context(emulator)
        cert = provider.mtls_certificate()
        if cert is not None:  # NTX MX API calls are mutual TLS too
            cert.load_into(context)
        async with httpx.AsyncClient(auth=p.auth(name), verify=context, http2=True) as client:
            response = await client.post(f"{emulator.url(name)}/api/resource", json={"amount": 15000})
            get = await client.get(f"{emulator.url(name)}/api/resource")
    assert response.status_code == 200, response.text
    assert response.http_version == "HTTP/2"
    assert get.status_code == 200, get.text
    s = stats(emulator, name)
    assert s["token_requests"] == 1
    assert s["resource_ok"] == 2
    assert s["resource_400"] == s["resource_403"] == 0


async def test_ntx_mx_rejects_a_revoked_certificate_with_a_message_that_says_so(
    emulator: EmulatorProcess,
) -> None:
    provider = build(emulator, "ntxmx", cert=emulator.revoked_client_cert)
    async with pool(emulator, {"mx": provider}) as p:
        with pytest.raises(CredentialsRejected) as info:
            await p.token("mx")
    assert info.value.status_code == 401
    assert "certificate" in str(info.value).lower()
    assert "renewal" in str(info.value).lower()


async def test_ntx_mx_wrong_credentials_say_sandbox_versus_production(emulator: EmulatorProcess) -> None:
    provider = build(emulator, "ntxmx").with_credentials(client_secret="production-secret-not-sandbox")
    async with pool(emulator, {"mx": provider}) as p:
        with pytest.raises(CredentialsRejected) as info:
            await p.token("mx")
    message = str(info.value)
    assert info.value.status_code == 401
    assert "sandbox" in message
    assert "production-secret-not-sandbox" not in message


async def test_ntx_mx_missing_certificate_header_is_explained(emulator: EmulatorProcess) -> None:
    provider = build(emulator, "ntxmx")
    request = provider.build_request()
    del request.headers["X-SSL-Client-Cert"]
    context = ssl_context(emulator)
    cert = provider.mtls_certificate()
    assert cert is not None
    cert.load_into(context)
    async with httpx.AsyncClient(verify=context) as client:
        response = await client.send(request)
    assert response.status_code == 400
    with pytest.raises(CredentialsRejected, match="X-SSL-Client-Cert"):
        provider.parse_response(response.status_code, response.headers, response.content)


async def test_ntx_mx_listener_requires_the_client_certificate(emulator: EmulatorProcess) -> None:
    async with httpx.AsyncClient(verify=ssl_context(emulator)) as client:
        with pytest.raises(httpx.HTTPError):
            await client.get(f"{emulator.url('ntxmx')}/api/resource")


async def test_pix_403_at_the_token_endpoint_hints_at_scope(emulator: EmulatorProcess) -> None:
    emulator.fault("ntxpix", status=403, count=1)
    async with pool(emulator, {"pix": build(emulator, "ntxpix")}) as p:
        with pytest.raises(CredentialsRejected) as info:
            await p.token("pix")
    assert info.value.status_code == 403
    assert "scope" in str(info.value).lower()


async def test_payme_success_false_on_http_200_is_a_failure(emulator: EmulatorProcess) -> None:
    emulator.fault("payme", malformed="success_false", count=1)
    async with pool(emulator, {"payme": build(emulator, "payme")}) as p:
        with pytest.raises((CredentialsRejected, InvalidTokenResponse)) as info:
            await p.token("payme")
    assert info.value.status_code == 200


async def test_payme_wrong_api_version_is_refused(emulator: EmulatorProcess) -> None:
    provider = build(emulator, "payme", api_version="1")
    async with pool(emulator, {"payme": provider}) as p:
        with pytest.raises(CredentialsRejected) as info:
            await p.token("payme")
    assert info.value.status_code == 400


async def test_payme_api_calls_need_the_version_header(emulator: EmulatorProcess) -> None:
    async with pool(emulator, {"payme": build(emulator, "payme")}) as p:
        token = await p.token("payme")
        async with httpx.AsyncClient(verify=ssl_context(emulator)) as client:
            bare = await client.get(
                f"{emulator.url('payme')}/api/resource", headers={"Authorization": token.authorization}
            )
    assert bare.status_code == 400  # the header is missing: a 400, never a 401


async def test_zertiban_credentials_in_the_body_are_refused(emulator: EmulatorProcess) -> None:
    provider = build(emulator, "zertiban")
    client_id, secret = emulator.credentials("zertiban")
    async with httpx.AsyncClient(verify=ssl_context(emulator)) as client:
        response = await client.post(
            str(provider.token_url),
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
    assert response.status_code == 400
    with pytest.raises(CredentialsRejected):
        provider.parse_response(response.status_code, response.headers, response.content)
    # And our own request never puts them there.
    assert secret.encode() not in provider.build_request().read()


async def test_zertiban_many_tenants_one_cell_each(emulator: EmulatorProcess) -> None:
    tenants = emulator.client_info("zertiban")["business_uuids"][:25]
    providers = {f"z-{t}": build(emulator, "zertiban", tenant=t) for t in tenants}
    async with pool(emulator, providers) as p:
        await p.warm_up()
        async with httpx.AsyncClient(verify=ssl_context(emulator)) as client, anyio.create_task_group() as tg:
            statuses: list[int] = []

            async def call(name: str) -> None:
                statuses.append(
                    (
                        await client.get(f"{emulator.url('zertiban')}/api/resource", auth=p.auth(name))
                    ).status_code
                )

            for name in providers:
                tg.start_soon(call, name)
    assert statuses == [200] * 25
    assert stats(emulator, "zertiban")["token_requests"] == 25


async def test_zertiban_lifetime_that_changes_between_tokens_is_followed(emulator: EmulatorProcess) -> None:
    async with pool(emulator, {"z": build(emulator, "zertiban")}) as p:
        first = await p.token("z")
        emulator.set_lifetime("zertiban", expires_in=120)
        second = await p.refresh("z")
    assert first.expires_in == 300
    assert second.expires_in == 120
    assert second.refresh_at - second.sent_at == pytest.approx(0.8 * 120, abs=0.05 * 120)


async def test_navro_wrong_api_version_is_refused(emulator: EmulatorProcess) -> None:
    async with pool(emulator, {"navro": build(emulator, "navro", api_version="2")}) as p:
        with pytest.raises(CredentialsRejected) as info:
            await p.token("navro")
    assert info.value.status_code == 400


async def test_navro_secret_reset_and_swap_in_a_running_pool(emulator: EmulatorProcess) -> None:
    provider = build(emulator, "navro")
    assert isinstance(provider, Navro)
    async with pool(emulator, {"navro": provider}) as p:
        before = await p.token("navro")
        new_secret = emulator.rotate_secret("navro")
        # The old secret now fails, with a hint on what to do.
        with pytest.raises(CredentialsRejected) as info:
            await p.refresh("navro")
        assert info.value.status_code == 401
        assert "replace_provider" in str(info.value)
        assert new_secret not in str(info.value)
        # The still-valid token is served meanwhile: no call fails.
        assert (await p.token("navro")) is before
        fresh = await p.replace_provider("navro", provider.with_credentials(client_secret=new_secret))
        assert fresh is not None
        assert (await p.token("navro")) is fresh
