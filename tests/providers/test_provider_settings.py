"""Provider settings are checked when a provider is built; copies keep secrets; requests need no files.

Everything a user passes to an adapter is validated in ``__post_init__``, so
``build_request()`` and ``api_headers()`` never fail later on the event loop.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import math
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenpool import ConfigurationError, CredentialsRejected, Secret, TokenRequestError
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

SECRET = 'a+b/c=d"e\\f é&g%h-0123'
TOKEN_URL = "https://auth.example.com/oauth/token"
ADAPTERS: list[type[Provider]] = [ClientCredentials, NtxPayMX, NtxPayPix, PayMe, Zertiban, Navro]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cert_path(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "client.pem"
    ca.issue_cert("client.payouts.example").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


@pytest.fixture
def certificate(cert_path: Path) -> ClientCertificate:
    return ClientCertificate(cert_file=str(cert_path), password="key-pass+word/0123")


def generic(**kwargs: Any) -> ClientCredentials:
    options: dict[str, Any] = {"token_url": TOKEN_URL, "client_id": "client-1", "client_secret": SECRET}
    options.update(kwargs)
    return ClientCredentials(**options)


@pytest.fixture
def builders(certificate: ClientCertificate) -> dict[str, Callable[..., Provider]]:
    """A constructor per adapter, with valid settings that keyword arguments override."""
    creds = {"client_id": "client-1", "client_secret": SECRET}

    def build(cls: type[Provider], **fixed: Any) -> Callable[..., Provider]:
        return lambda **kw: cls(**{**creds, **fixed, **kw})

    return {
        "client_credentials": build(ClientCredentials, token_url=TOKEN_URL),
        "ntxpay_mx": build(NtxPayMX, client_certificate=certificate),
        "ntxpay_pix": build(NtxPayPix),
        "payme": build(PayMe, audience="https://api.preprod.alignet.io"),
        "zertiban": build(Zertiban, business_uuid="5f0c6f7e-2b1a-4c3d-9e8f-0a1b2c3d4e5f"),
        "navro": build(Navro, company="acme"),
    }


@pytest.fixture(params=["client_credentials", "ntxpay_mx", "ntxpay_pix", "payme", "zertiban", "navro"])
def make(
    request: pytest.FixtureRequest, builders: dict[str, Callable[..., Provider]]
) -> Callable[..., Provider]:
    return builders[request.param]


def assert_one_line(error: BaseException, *needles: str) -> None:
    text = str(error)
    assert "\n" not in text
    assert "\r" not in text
    for needle in needles:
        assert needle in text


def h11_accepts(request: httpx.Request) -> None:
    """Raise unless h11 would put this request's headers on the wire as they are."""
    h11.Request(method=request.method, target=request.url.raw_path, headers=list(request.headers.raw))


# ---------------------------------------------------------------- default_expires_in


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (-1, "-1"),
        (-0.5, "-0.5"),
        ("abc", "'abc'"),
        ("", "''"),
        ("nan", "'nan'"),
        ("1e400", "'1e400'"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (True, "True"),
        (False, "False"),
        ([600], "a list"),
        (b"600", "a bytes"),
    ],
)
def test_default_expires_in_must_be_a_positive_finite_number(value: object, shown: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        generic(default_expires_in=value)

    assert str(info.value) == (
        f"ClientCredentials.default_expires_in must be a positive finite number of seconds, got {shown}"
    )


@pytest.mark.parametrize("value", [366 * 86_400 + 1, 1e12, 10**400, "1e9"])
def test_default_expires_in_above_a_year_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        generic(default_expires_in=value)
    assert_one_line(info.value, "ClientCredentials.default_expires_in", "at most")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(1, 1.0), (600, 600.0), (0.25, 0.25), (86_400 * 366, 86_400.0 * 366), ("600", 600.0), (" 90.5 ", 90.5)],
)
def test_default_expires_in_accepts_positive_numbers_and_numeric_strings(
    value: object, seconds: float
) -> None:
    provider = generic(default_expires_in=value)

    assert provider.default_expires_in == seconds
    assert isinstance(provider.default_expires_in, float)
    token = provider.parse_response(200, {}, b'{"access_token":"abc","token_type":"Bearer"}')
    assert token.expires_in == seconds


def test_default_expires_in_none_means_the_server_must_say() -> None:
    assert generic().default_expires_in is None
    assert generic(default_expires_in=None).default_expires_in is None


def test_every_adapter_with_a_default_lifetime_setting_validates_it(
    builders: dict[str, Callable[..., Provider]],
) -> None:
    """Only ClientCredentials has the setting today; any adapter that grows one is checked too."""
    checked = []
    for kind, build in builders.items():
        cls = type(build())
        if "default_expires_in" not in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
            continue
        checked.append(kind)
        for bad in (0, -1, "abc", math.nan, math.inf, True):
            with pytest.raises(ConfigurationError, match=rf"^{cls.__name__}\.default_expires_in must be"):
                build(default_expires_in=bad)
    assert checked == ["client_credentials"]


# ---------------------------------------------------------------- headers


BAD_HEADERS: list[tuple[object, str]] = [
    ({1: "v"}, "header names must be str"),
    ({b"X-A": "v"}, "header names must be str"),
    ({"": "v"}, "not a non-empty RFC 9110 token"),
    ({"X A": "v"}, "not a non-empty RFC 9110 token"),
    ({"X-A:": "v"}, "not a non-empty RFC 9110 token"),
    ({"X-É": "v"}, "not a non-empty RFC 9110 token"),
    ({"X-A\r\nY": "v"}, "not a non-empty RFC 9110 token"),
    ({"X-A": 1}, "must be a str, got int"),
    ({"X-A": None}, "must be a str, got NoneType"),
    ({"X-A": b"v"}, "must be a str, got bytes"),
    ({"X-A": Secret("header-secret-value")}, "must be a str, got Secret"),
    ({"X-A": "header-secret\r\nX-Evil: 1"}, "must not contain CR or LF"),
    ({"X-A": "header-secret\n"}, "must not contain CR or LF"),
    ({"X-A": "header-secret\x00"}, "visible ASCII"),
    ({"X-A": "header-secrét"}, "visible ASCII"),
    ({"X-A": " header-secret"}, "must not start or end with whitespace"),
    ({"X-A": "header-secret\t"}, "must not start or end with whitespace"),
    ({"X-A": "1", "x-a": "2"}, "twice"),
    ({"Content-Length": "3"}, "must not set 'Content-Length'"),
    ({"transfer-encoding": "chunked"}, "must not set"),
    ({"Host": "elsewhere.example"}, "must not set"),
    ({"Connection": "close"}, "must not set"),
    ("X-A: v", "must be a mapping"),
    ([("X-A", "v")], "must be a mapping"),
    (None, "must be a mapping"),
]


@pytest.mark.parametrize("setting", ["headers", "extra_api_headers"])
@pytest.mark.parametrize(("value", "reason"), BAD_HEADERS)
def test_generic_headers_are_checked_when_built(setting: str, value: object, reason: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        generic(**{setting: value})

    assert_one_line(info.value, f"ClientCredentials.{setting}", reason)
    assert "header-secret" not in str(info.value)  # a header value may be an API key: never shown


def test_authorization_belongs_to_tokenpool() -> None:
    with pytest.raises(ConfigurationError, match=r"ClientCredentials\.extra_api_headers must not set"):
        generic(extra_api_headers={"Authorization": "Bearer other"})
    with pytest.raises(ConfigurationError, match=r"ClientCredentials\.headers must not set 'authorization'"):
        generic(headers={"authorization": "Basic other"})
    # With client_secret_post the credentials travel in the body; a gateway's Authorization may be added.
    post = generic(auth_method="client_secret_post", headers={"Authorization": "ApiKey gateway-key"})
    assert post.build_request().headers["authorization"] == "ApiKey gateway-key"


def test_valid_generic_headers_reach_the_wire() -> None:
    provider = generic(
        headers={"accept": "application/jwt", "X-Request-Source": "payouts\tworker 7", "X-Empty": ""},
        extra_api_headers={"X-Api-Version": "2024-01-01", "x-tenant": "t-1"},
    )
    request = provider.build_request()

    assert request.headers.get_list("accept") == ["application/jwt"]  # replaced, not doubled
    assert request.headers["x-request-source"] == "payouts\tworker 7"
    assert request.headers["x-empty"] == ""
    assert request.headers["authorization"].startswith("Basic ")
    assert provider.api_headers() == {"X-Api-Version": "2024-01-01", "x-tenant": "t-1"}
    h11_accepts(request)


def test_header_mappings_are_copied() -> None:
    headers = {"X-A": "1"}
    provider = generic(headers=headers, extra_api_headers=headers)
    headers["X-A"] = "changed"

    assert provider.headers == {"X-A": "1"}
    assert provider.api_headers() == {"X-A": "1"}
    assert type(provider.headers) is dict


@pytest.mark.parametrize(
    ("kind", "setting"),
    [("payme", "api_version"), ("navro", "api_version"), ("zertiban", "business_uuid")],
)
@pytest.mark.parametrize("value", [1709847567, None, b"1", 1.0, "", "1 2", "1\r\nX: y", "é"])
def test_header_settings_of_the_adapters_are_checked_when_built(
    builders: dict[str, Callable[..., Provider]], kind: str, setting: str, value: object
) -> None:
    build = builders[kind]
    with pytest.raises(ConfigurationError) as info:
        build(**{setting: value})
    assert_one_line(info.value, f"{type(build()).__name__}.{setting}")


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"extra_params": {"audience": 1}}, "ClientCredentials.extra_params"),
        ({"extra_params": {1: "x"}}, "ClientCredentials.extra_params"),
        ({"extra_params": {"audience": "\ud800"}}, "ClientCredentials.extra_params"),
        ({"extra_params": "audience=x"}, "ClientCredentials.extra_params"),
        ({"scope": 1}, "ClientCredentials.scope"),
        ({"scope": ["read"]}, "ClientCredentials.scope"),
        ({"scope": "read \udcff"}, "ClientCredentials.scope"),
        ({"client_id": "id-\ud800"}, "ClientCredentials.client_id"),
        ({"client_secret": "secret-\ud800-0123"}, "ClientCredentials.client_secret"),
        ({"client_secret": Secret("secret-\ud800-0123")}, "ClientCredentials.client_secret"),
    ],
)
def test_generic_form_settings_are_checked_when_built(changes: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        generic(**changes)
    assert_one_line(info.value, setting)
    assert "secret-" not in str(info.value)


def test_lone_surrogates_in_credentials_are_refused_by_every_adapter(make: Callable[..., Provider]) -> None:
    with pytest.raises(ConfigurationError, match="client_secret must be valid Unicode text"):
        make(client_secret="secret-\ud800-0123")
    with pytest.raises(ConfigurationError, match="client_id must be valid Unicode text"):
        make(client_id="client-\udfff")


VALID_VARIANTS: list[dict[str, Any]] = [
    {},
    {"client_id": "ünïcode-client", "client_secret": "sécret:with:colons+and/slashes=="},
    {"client_secret": "x" * 64},
    {"client_secret": "tab\tnewline\nnul\x00-0123"},
]


@pytest.mark.parametrize("variant", VALID_VARIANTS)
def test_build_request_never_fails_once_built(make: Callable[..., Provider], variant: dict[str, Any]) -> None:
    provider = make(**variant)
    for request in (provider.build_request(), provider.build_request()):
        assert request.method == "POST"
        h11_accepts(request)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in provider.api_headers().items())
    if provider.api_headers():
        api_call = httpx.Request("GET", "https://api.example.com/x", headers=dict(provider.api_headers()))
        h11_accepts(api_call)
    assert isinstance(provider.sensitive_strings(), list)


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"scope": "read write", "extra_params": {"audience": "https://api.example.com", "résumé": "naïve"}},
        {"scope": "", "default_expires_in": "600"},
        {"headers": {"X-Trace": "a b", "Accept": "*/*"}, "extra_api_headers": {"X-Api-Version": "3"}},
    ],
)
def test_generic_build_request_never_fails_once_built(auth_method: str, extra: dict[str, Any]) -> None:
    request = generic(auth_method=auth_method, **extra).build_request()
    h11_accepts(request)


texts = st.text(max_size=12) | st.sampled_from(["\ud800", "a\r\nb", " x", "x ", "é", "Host", "Authorization"])
values = texts | st.integers() | st.none() | st.binary(max_size=4) | st.floats()
header_maps = st.dictionaries(texts | st.integers(), values, max_size=3) | values


@settings(max_examples=300, deadline=None)
@given(
    client_id=texts,
    client_secret=texts,
    scope=st.none() | values,
    extra_params=st.dictionaries(texts, values, max_size=2) | values,
    headers=header_maps,
    extra_api_headers=header_maps,
    default_expires_in=st.none() | values,
    auth_method=st.sampled_from(["client_secret_basic", "client_secret_post"]),
)
def test_generic_is_refused_when_built_or_builds_requests(**settings_: Any) -> None:
    """Property: any settings either raise ConfigurationError when built, or give a sendable request."""
    try:
        provider = generic(**settings_)
    except ConfigurationError as error:
        assert_one_line(error)
        return
    h11_accepts(provider.build_request())
    api_headers = dict(provider.api_headers())
    h11_accepts(httpx.Request("GET", "https://api.example.com/x", headers=api_headers))
    assert "authorization" not in {name.lower() for name in api_headers}
    assert all(isinstance(s, str) and s for s in provider.sensitive_strings())


# ---------------------------------------------------------------- copies and pickling


def test_secret_copies_are_the_secret_itself() -> None:
    secret = Secret(SECRET)

    assert copy.copy(secret) is secret
    assert copy.deepcopy(secret) is secret
    nested: dict[str, Any] = {"a": secret, "b": [secret]}
    assert copy.deepcopy(nested)["b"][0] is secret


COPIERS: dict[str, Callable[[Any], Any]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "replace": dataclasses.replace,
}


@pytest.mark.parametrize("how", sorted(COPIERS))
def test_copies_of_every_adapter_keep_the_secret(make: Callable[..., Provider], how: str) -> None:
    provider = make()
    clone: Provider = COPIERS[how](provider)

    assert type(clone) is type(provider)
    assert clone is not provider
    secret = vars(clone)["client_secret"]
    assert isinstance(secret, Secret)
    assert secret.reveal() == SECRET
    if how != "replace":  # a copy shares the immutable Secret; replace re-validates it
        assert secret is vars(provider)["client_secret"]
    assert clone.token_url == provider.token_url
    assert clone.build_request().content == provider.build_request().content
    assert clone.build_request().headers == provider.build_request().headers
    assert clone.sensitive_strings() == provider.sensitive_strings()
    assert clone.api_headers() == provider.api_headers()
    assert clone.mtls_certificate() == provider.mtls_certificate()
    rotated = clone.with_credentials(client_secret="rotated-secret-0123")
    assert vars(rotated)["client_secret"].reveal() == "rotated-secret-0123"
    assert vars(clone)["client_secret"].reveal() == SECRET


def test_deepcopy_of_a_generic_provider_copies_its_mappings() -> None:
    provider = generic(headers={"X-A": "1"}, extra_params={"audience": "x"})
    clone = copy.deepcopy(provider)

    assert clone.headers == provider.headers
    assert clone.headers is not provider.headers
    assert clone.extra_params == provider.extra_params


@pytest.mark.parametrize("how", sorted(COPIERS))
def test_copies_of_a_client_certificate_keep_its_password(certificate: ClientCertificate, how: str) -> None:
    clone: ClientCertificate = COPIERS[how](certificate)

    assert clone == certificate
    assert isinstance(clone.password, Secret)
    assert clone.password.reveal() == "key-pass+word/0123"
    assert clone.cert_file == certificate.cert_file


def test_client_certificate_password_is_checked(cert_path: Path) -> None:
    for bad in ("", 1234, b"pass"):
        with pytest.raises(ConfigurationError, match=r"^ClientCertificate\.password must"):
            ClientCertificate(cert_file=str(cert_path), password=bad)  # type: ignore[arg-type]
    assert ClientCertificate(cert_file=str(cert_path)).password is None


def test_pickling_is_still_refused_without_showing_the_secret(
    make: Callable[..., Provider], certificate: ClientCertificate
) -> None:
    provider = make()
    for obj in (Secret(SECRET), provider, copy.deepcopy(provider), certificate):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            with pytest.raises(TypeError) as info:
                pickle.dumps(obj, protocol=protocol)
            assert "refuses to be pickled" in str(info.value)
            assert SECRET not in str(info.value)
            assert "key-pass" not in str(info.value)


# ---------------------------------------------------------------- no files on the request path


def test_requests_and_parsing_read_no_files(
    make: Callable[..., Provider], cert_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_request and parse_response run on the event loop for every token request: no disk I/O.

    NTX Pay MX forwards its certificate in a header; the file is read once, when the
    provider is built (and again by with_credentials/replace, which build a new one).
    """
    provider = make()
    before = provider.build_request()
    cert_path.unlink()

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"file opened on the request path: {args[:1]!r}")

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", no_open)
        patch.setattr(Path, "open", no_open)
        after = provider.build_request()
        for status, body in [(200, b"{}"), (201, b"{}"), (401, b'{"message":"certificate revoked"}')]:
            with pytest.raises(TokenRequestError):
                provider.parse_response(status, {}, body)
        provider.api_headers()
        provider.mtls_certificate()
        provider.sensitive_strings()

    assert after.headers == before.headers
    assert after.content == before.content


def test_mx_forwarded_certificate_is_read_once(
    certificate: ClientCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    original = ClientCertificate.pem

    def counting_pem(self: ClientCertificate) -> bytes:
        reads.append(self.cert_file)
        return original(self)

    monkeypatch.setattr(ClientCertificate, "pem", counting_pem)
    provider = NtxPayMX(client_id="client-1", client_secret=SECRET, client_certificate=certificate)
    for _ in range(5):
        provider.build_request()
        with pytest.raises(CredentialsRejected):
            provider.parse_response(401, {}, b"")
    assert len(reads) == 1
    provider.with_credentials(client_secret="rotated-secret-0123")
    assert len(reads) == 2  # rotation picks up a renewed certificate on disk


def _header_names(headers: Mapping[str, str]) -> set[str]:
    return {name.lower() for name in headers}


def test_adapters_put_only_their_own_headers_on_api_calls(make: Callable[..., Provider]) -> None:
    names = _header_names(make().api_headers())
    assert "authorization" not in names
    assert names <= {"alg-api-version", "x-tenant-id", "x-api-version"}
