"""Every adapter's ``parse_response`` is total: a usable token or a ``TokenRequestError``, for any answer."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import urllib.parse
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenpool import Secret, TokenRequestError, TokenResponse
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

#: The longest lifetime any adapter accepts: 366 days (documented on ClientCredentials.default_expires_in).
MAX_EXPIRES_IN = 366 * 86_400.0

# When a property fails, hypothesis imports libcst to suggest a patch; libcst's
# import warns (mypy_extensions.TypedDict), and filterwarnings = error turns that
# into an INTERNALERROR hiding the falsifying example.  Import it quietly now.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    importlib.import_module("libcst")

# Characters that change under form-urlencoding and JSON escaping, so every wire form differs.
SECRET = 'fuzz+Secret/0123"456\\789 é&%'
CLIENT_ID = "id"
# Every adapter scrubs what it raises (Provider.parse_response), the generic one too.
SCRUBBING = {"client_credentials", "ntxpay_mx", "ntxpay_pix", "payme", "zertiban", "navro"}
# The secret as a server might echo it: raw, form-urlencoded (two ways), JSON-escaped (two ways).
SECRET_FORMS = [
    SECRET,
    urllib.parse.quote_plus(SECRET),
    urllib.parse.quote(SECRET, safe=""),
    json.dumps(SECRET)[1:-1],
    json.dumps(SECRET, ensure_ascii=False)[1:-1],
]
# What a server might echo: those forms, and the Basic credentials as sent.
ECHOES = sorted(
    {
        echo
        for provider in (
            ClientCredentials(
                token_url="https://auth.example.com/token", client_id=CLIENT_ID, client_secret=SECRET
            ),
            Zertiban(client_id=CLIENT_ID, client_secret=SECRET, business_uuid="tenant"),
        )
        for echo in provider.sensitive_strings()
    }
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Provider]:
    ca = trustme.CA()
    path: Path = tmp_path_factory.mktemp("fuzz") / "client.pem"
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(str(path))
    return {
        "client_credentials": ClientCredentials(
            token_url=httpx.URL("https://auth.example.com/token"),
            client_id=CLIENT_ID,
            client_secret=Secret(SECRET),
        ),
        "ntxpay_mx": NtxPayMX(
            client_id=CLIENT_ID,
            client_secret=SECRET,
            client_certificate=ClientCertificate(cert_file=str(path)),
        ),
        "ntxpay_pix": NtxPayPix(client_id=CLIENT_ID, client_secret=SECRET),
        "payme": PayMe(client_id=CLIENT_ID, client_secret=SECRET, audience="https://api.example.com"),
        "zertiban": Zertiban(client_id=CLIENT_ID, client_secret=SECRET, business_uuid="tenant"),
        "navro": Navro(client_id=CLIENT_ID, client_secret=SECRET, company="acme"),
    }


# ---------------------------------------------------------------- strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(ECHOES)
    | st.builds(lambda pad, echo: pad + echo, st.text(max_size=220), st.sampled_from(ECHOES))
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
statuses = st.integers(min_value=100, max_value=599)
likely_statuses = st.sampled_from([200, 201, 400, 401, 403, 408, 429, 500, 503]) | statuses
retry_after_junk = st.sampled_from(
    [
        "0",
        "7",
        "0007",
        "²",
        "١٢",
        "9" * 5000,
        "-1",
        "1e9",
        " 12 ",
        "",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Mon, 01 Jan 0001 00:00:00 +2359",
        "Sat, 01 Jan 10000 00:00:00 GMT",
        "Wed, 21 Oct 2015 07:28:00",
    ]
) | st.text(max_size=40)
header_maps = st.dictionaries(
    st.sampled_from(["retry-after", "Retry-After", "content-type", "www-authenticate"])
    | st.text(max_size=10),
    retry_after_junk,
    max_size=4,
)


def outcome(
    provider: Provider, status: int, headers: Mapping[str, str], body: bytes
) -> TokenResponse | Exception:
    """What ``parse_response`` gave: a token, or the exception it raised (of any kind)."""
    try:
        return provider.parse_response(status, headers, body)
    except Exception as error:  # anything but our own errors is the bug looked for
        return error


def check(adapters: Mapping[str, Provider], status: int, headers: Mapping[str, str], body: bytes) -> None:
    """The property, for every adapter: a sane token, or one of our errors without the secret in it."""
    for name, provider in adapters.items():
        result = outcome(provider, status, headers, body)
        if isinstance(result, Exception):
            assert isinstance(result, TokenRequestError), f"{name} raised {result!r}"
            if name in SCRUBBING:
                shown = [str(result), repr(result), result.hint or "", result.error_code or ""]
                for echo in provider.sensitive_strings():
                    assert not any(echo in text for text in shown), (name, echo)
                for form in SECRET_FORMS:
                    # Nor any 12-character run of it: an echo cut short by truncation must not show.
                    runs = {form[i : i + 12] for i in range(len(form) - 11)}
                    assert not any(run in text for run in runs for text in shown), (name, form)
            continue
        assert isinstance(result.expires_in, float), name
        assert math.isfinite(result.expires_in), name
        assert 0 < result.expires_in <= MAX_EXPIRES_IN, name
        assert isinstance(result.access_token, str), name
        assert result.access_token, name
        assert all(33 <= ord(ch) <= 126 for ch in result.access_token), f"{name}: not header-safe"
        assert result.token_type == "Bearer", name
        assert result.scope is None or isinstance(result.scope, str), name


# ---------------------------------------------------------------- properties


@FUZZ
@given(status=statuses, headers=header_maps, body=st.binary(max_size=300))
def test_arbitrary_bytes(
    adapters: dict[str, Provider], status: int, headers: dict[str, str], body: bytes
) -> None:
    check(adapters, status, headers, body)


@FUZZ
@given(status=likely_statuses, headers=header_maps, value=json_values, ascii_only=st.booleans())
def test_arbitrary_json(
    adapters: dict[str, Provider],
    status: int,
    headers: dict[str, str],
    value: Any,
    ascii_only: bool,
) -> None:
    check(adapters, status, headers, json.dumps(value, ensure_ascii=ascii_only).encode())


# Values a broken or hostile endpoint might put where a token's fields belong.
odd_numbers = st.sampled_from(
    [0, -1, -0.0, 1e-300, 10**400, "600", " 600 ", "1e400", "nan", "-inf", "", "六百", "²", True, False]
)
expires_in_values = st.integers() | st.floats() | st.text(max_size=12) | odd_numbers | json_values
token_types = (
    st.sampled_from(["Bearer", "bearer", "BEARER ", "MAC", "", "Bearer\r\nX: y", *ECHOES]) | json_values
)
access_tokens = (
    st.text(max_size=40)
    | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)
    | st.sampled_from(["", " ", "a b", "tok\r\nen", "x" * 20_000, "é"])
    | json_values
)
MISSING = object()


@st.composite
def token_bodies(draw: st.DrawFn) -> bytes:
    """A documented-looking success answer with some fields mutated, dropped or added."""
    data: dict[str, Any] = {
        "action": "authorize",
        "success": True,
        "access_token": "eyJhbGciOiJIUzI1NiIs.abc.def",
        "token_type": "Bearer",
        "expires_in": 600,
        "scope": "create:token",
        "authorization": {"meta": {"status": {"code": "00", "message_ilgn": [{"value": "ok"}]}}},
    }
    mutations: dict[str, st.SearchStrategy[Any]] = {
        "expires_in": expires_in_values,
        "token_type": token_types,
        "access_token": access_tokens,
        "success": st.sampled_from([True, False, "true", 1, None]),
        "scope": json_values,
        "authorization": json_values
        | st.sampled_from(ECHOES).map(
            lambda echo: {"meta": {"status": {"code": echo, "message_ilgn": [{"value": echo}]}}}
        ),
        "error": st.sampled_from(["invalid_client", "server_error", "", *ECHOES]) | json_values,
        "error_description": st.sampled_from(ECHOES) | json_values,
        "message": st.sampled_from(ECHOES).map(lambda echo: f"certificate {echo}") | json_values,
    }
    for key in draw(st.lists(st.sampled_from(sorted(mutations)), unique=True, max_size=4)):
        value = draw(st.just(MISSING) | mutations[key])
        if value is MISSING:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data).encode()


@FUZZ
@given(status=st.sampled_from([200, 201]) | likely_statuses, headers=header_maps, body=token_bodies())
def test_token_shaped_json(
    adapters: dict[str, Provider], status: int, headers: dict[str, str], body: bytes
) -> None:
    check(adapters, status, headers, body)


@FUZZ
@given(
    status=st.sampled_from([408, 425, 429, 500, 502, 503, 504, 599]),
    retry_after=retry_after_junk.filter(lambda v: v.isascii() and v.isprintable()),
)
def test_retry_after_junk_in_real_headers(
    adapters: dict[str, Provider], status: int, retry_after: str
) -> None:
    headers = httpx.Headers({"Retry-After": retry_after})
    for name, provider in adapters.items():
        result = outcome(provider, status, headers, b"")
        assert isinstance(result, TokenRequestError), f"{name} gave {result!r}"
        retry = getattr(result, "retry_after", None)
        assert retry is None or (math.isfinite(retry) and retry >= 0), name
        retry_at = getattr(result, "retry_at", None)
        assert retry_at is None or math.isfinite(retry_at), name
        assert retry is None or retry_at is None, name
