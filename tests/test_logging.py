"""tokenpool.logging: the redaction processor and the recommended structlog configuration."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

import tokenpool.logging
from tokenpool import Secret
from tokenpool.logging import (
    REDACTED,
    Redactor,
    configure_recommended,
    recommended_processors,
    redact_secrets,
)

CERT = """-----BEGIN CERTIFICATE-----
MIIBszCCAVmgAwIBAgIUQ2x1c3RlcnNlY3JldGNlcnRpZmljYXRlMAoGCCqGSM49
BAMCMBQxEjAQBgNVBAMMCXRlc3QtY2VydDAeFw0yNTAxMDEwMDAwMDBaFw0zNTAx
-----END CERTIFICATE-----
"""
KEY_BODY = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgY2xpZW50LWtleS1zZWNyZXQtbWF0ZXJpYWw"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """configure_recommended() changes global state; put it back after each test."""
    yield
    structlog.reset_defaults()


def redact(**event: Any) -> dict[str, Any]:
    return dict(redact_secrets(None, "info", dict(event)))


# -- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "access_token",
        "accessToken",
        "token",
        "refresh_token",
        "client_secret",
        "clientSecret",
        "secret",
        "password",
        "Authorization",
        "authorization",
        "Proxy-Authorization",
        "cookie",
        "Set-Cookie",
        "X-SSL-Client-Cert",
        "x_ssl_client_cert",
        "api_key",
        "X-API-Key",
        "bearer_token",
        "db_password",
        "private_key",
    ],
)
def test_values_under_credential_keys_are_masked(key: str) -> None:
    assert redact(event="e", **{key: "s3cr3t-value"})[key] == REDACTED


@pytest.mark.parametrize(
    "key",
    ["provider", "token_type", "expires_in", "status", "error_code", "reason", "remaining", "tokens_issued"],
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert redact(**{key: "plain-value", "event": "e"})[key] == "plain-value"


def test_nested_structures_are_redacted_without_touching_the_callers_objects() -> None:
    headers = {"Authorization": "Bearer abc.def", "Accept": "application/json"}
    body: list[Any] = [{"clientSecret": "x1y2z3", "clientId": "payouts"}, ("access_token", "keep-me-out")]
    event = redact(event="sent", headers=headers, body=body, count=3)
    assert event["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert event["body"][0] == {"clientSecret": REDACTED, "clientId": "payouts"}
    assert event["count"] == 3
    assert headers["Authorization"] == "Bearer abc.def"  # the caller's dict is untouched
    assert body[0]["clientSecret"] == "x1y2z3"


def test_missing_values_stay_visible() -> None:
    event = redact(event="e", token=None, password="", secret=False)
    assert event == {"event": "e", "token": None, "password": "", "secret": False}


def test_unchanged_events_keep_their_objects() -> None:
    payload = {"provider": "acme", "sizes": [1, 2, 3]}
    event = redact(event="e", payload=payload)
    assert event["payload"] is payload


# -- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.abc-123_x", f"Authorization: Bearer {REDACTED}"),
        ("authorization: bearer 0123456789abcdef", f"authorization: bearer {REDACTED}"),
        ("Basic dXNlcjpwYXNz", f"Basic {REDACTED}"),  # user:pass, all letters
        ("Basic Y2xpZW50OnMzY3JldA==", f"Basic {REDACTED}"),
        (
            "grant_type=client_credentials&client_secret=hunter2&scope=a",
            f"grant_type=client_credentials&client_secret={REDACTED}&scope=a",
        ),
        ('{"accessToken":"tok123","expiresIn":300}', f'{{"accessToken":"{REDACTED}","expiresIn":300}}'),
        (
            "{'access_token': 'abc', 'token_type': 'Bearer'}",
            f"{{'access_token': '{REDACTED}', 'token_type': 'Bearer'}}",
        ),
        ("https://payouts:pa55word@proxy.internal:8080/", f"https://payouts:{REDACTED}@proxy.internal:8080/"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig-nature_x", f"jwt {REDACTED}"),
    ],
)
def test_credentials_inside_strings_are_masked(text: str, expected: str) -> None:
    assert redact(event=text)["event"] == expected


@pytest.mark.parametrize(
    "text",
    [
        "refusing to send a bearer token over plain http to example.com; use https",
        "basic auth failed",
        "token endpoint answered with 70000 bytes; more than 65536 is refused",
        "check client_id/client_secret for idp.example.com and auth_method='client_secret_basic'",
        "token_type must be Bearer",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(event=text)["event"] == text


def test_pem_blocks_are_masked_raw_url_encoded_and_cut_off() -> None:
    event = redact(
        event="cert",
        raw=f"got {CERT} from nginx",
        encoded=(
            "X-SSL-Client-Cert: -----BEGIN%20CERTIFICATE-----%0AMIIBszCCAVmg%0A-----END%20CERTIFICATE-----%0A"
        ),
        # A truncated key; the marker is assembled so no key-looking text is committed.
        cut="-----BEGIN " + "PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49",
        der=f"key={KEY_BODY}",
    )
    dumped = json.dumps(event)
    assert "MIIB" not in dumped
    assert "MIGH" not in dumped
    assert "BEGIN" not in dumped
    assert event["raw"] == "got [redacted PEM]\n from nginx"


def test_bytes_and_other_objects_are_judged_by_their_text() -> None:
    class Leaky:
        def __repr__(self) -> str:
            return "<Leaky password=hunter22>"

    event = redact(event="e", body=b"client_secret=abc&x=1", thing=Leaky(), fine=b"abc")
    assert event["body"] == f"client_secret={REDACTED}&x=1"
    # The value runs to the next delimiter: better a lost ">" than a half-shown password.
    assert event["thing"] == f"<Leaky password={REDACTED}"
    assert event["fine"] == b"abc"


def test_secret_objects_stay_masked() -> None:
    assert redact(event="e", value=Secret("hunter2"))["value"] == Secret(
        "hunter2"
    )  # its repr is masked already


def test_a_redactor_with_extra_keys_and_literal_values() -> None:
    redactor = Redactor(
        keys=["X-Tenant-Signature"], values=["opaque-secret-42", Secret("other-secret"), "abc"]
    )
    event = redactor(
        None,
        "info",
        {
            "event": "upstream said opaque-secret-42 and other-secret",
            "x_tenant_signature": "sig",
            "short": "abc",  # too short to be searched for
        },
    )
    assert event == {
        "event": f"upstream said {REDACTED} and {REDACTED}",
        "x_tenant_signature": REDACTED,
        "short": "abc",
    }
    assert "opaque" not in repr(redactor)


def test_structlog_managed_keys_are_left_for_the_exception_renderer() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        error = exc
    exc_info = (ValueError, error, error.__traceback__)
    assert redact(event="e", exc_info=exc_info)["exc_info"] is exc_info


# -- the recommended configuration --------------------------------------------------------------


#: Built at run time, so that no source line in a traceback shows it.
LOCAL_SECRET = "-".join(["hunter2", "local", "secret"])


def failing_request(client_secret: str) -> None:
    """A frame whose locals hold a secret, as build_request's do."""
    body = f"grant_type=client_credentials&client_secret={client_secret}"
    raise RuntimeError(f"could not send {len(body)} bytes")


def render(processors: list[Any], **event: Any) -> str:
    out = io.StringIO()
    logger = structlog.wrap_logger(structlog.WriteLogger(out), processors=processors)
    logger.error("payout.failed", **event)
    return out.getvalue()


@pytest.mark.parametrize("as_json", [True, False])
def test_recommended_chain_renders_exceptions_without_locals(as_json: bool) -> None:
    try:
        failing_request(LOCAL_SECRET)
    except RuntimeError as exc:
        error = exc
    line = render(recommended_processors(json=as_json), exc_info=error, authorization="Bearer abcdef123456")
    assert "could not send" in line
    assert "failing_request" in line  # the traceback is there...
    assert LOCAL_SECRET not in line  # ...its locals are not
    assert "abcdef123456" not in line
    if as_json:
        event = json.loads(line)
        assert event["level"] == "error"
        assert event["event"] == "payout.failed"
        assert event["timestamp"].endswith("Z")
        assert event["exception"][0]["exc_type"] == "RuntimeError"
        assert all("locals" not in frame or not frame["locals"] for frame in event["exception"][0]["frames"])


def test_dict_tracebacks_default_would_show_the_locals() -> None:
    """Why the recommended chain does not use structlog.processors.dict_tracebacks as is."""
    try:
        failing_request(LOCAL_SECRET)
    except RuntimeError as exc:
        error = exc
    line = render([structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()], exc_info=error)
    assert LOCAL_SECRET in line


def test_recommended_processors_pick_json_unless_stderr_is_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(recommended_processors()[-1], structlog.processors.JSONRenderer)
    monkeypatch.setattr("sys.stderr", Terminal())
    assert isinstance(recommended_processors()[-1], structlog.dev.ConsoleRenderer)
    for chain in (recommended_processors(json=True), recommended_processors(json=False)):
        assert redact_secrets in chain
        assert chain.index(redact_secrets) == len(chain) - 2


def test_configure_recommended_writes_redacted_json_lines() -> None:
    out = io.StringIO()
    configure_recommended(file=out, level="info")
    log = structlog.get_logger("tokenpool")
    log.debug("token.refresh.start", provider="acme", attempt=1)  # below the level
    log.info("token.refresh.success", provider="acme", access_token="tok-123456789")
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "token.refresh.success"
    assert event["access_token"] == REDACTED
    assert event["level"] == "info"


def test_configure_recommended_console_for_terminals() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    configure_recommended(file=out)
    structlog.get_logger("tokenpool").warning("token.refresh.retry", provider="acme", password="pw-123")
    text = out.getvalue()
    assert "token.refresh.retry" in text
    assert "pw-123" not in text
    assert not text.lstrip().startswith("{")


def test_the_library_never_configures_structlog() -> None:
    """Importing tokenpool and its public modules, and making a pool, leaves structlog as it was."""
    code = (
        "import structlog; before = repr(structlog.get_config()); "
        "import tokenpool, tokenpool.logging, tokenpool.metrics; "
        "tokenpool.TokenPool({}, metrics=False); "
        "assert repr(structlog.get_config()) == before; "
        "assert not structlog.is_configured()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_surface() -> None:
    assert sorted(tokenpool.logging.__all__) == [
        "REDACTED",
        "Redactor",
        "configure_recommended",
        "recommended_processors",
        "redact_secrets",
    ]
