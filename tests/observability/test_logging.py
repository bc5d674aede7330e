"""tokenpool.logging: the redaction processor and the recommended structlog configuration."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
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
from tokenpool.testing import EmulatorProcess

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
        "LibraryLogger",
        "REDACTED",
        "Redactor",
        "configure_recommended",
        "library_logger",
        "recommended_processors",
        "redact_secrets",
    ]


# -- where the events go when the application configured nothing, or only the stdlib ----------------

#: The emulator needs the ``testing`` extra (hypercorn, trustme).  Skipped only where it is
#: not installed (the no-extras session, which runs the rest of this file).
needs_the_emulator = pytest.mark.skipif(
    importlib.util.find_spec("hypercorn") is None or importlib.util.find_spec("trustme") is None,
    reason="the testing extra is not installed",
)

_POOL_SCRIPT = """
import logging, sys
import anyio
from tokenpool import TokenPool
from tokenpool.providers import ClientCredentials

SETUP

async def main() -> None:
    provider = ClientCredentials(token_url=sys.argv[1], client_id=sys.argv[2], client_secret=sys.argv[3])
    async with TokenPool({"acme": provider}, metrics=False, ca_file=sys.argv[4]) as pool:
        await pool.token("acme")
        await pool.refresh("acme")
    print("done")

anyio.run(main)
"""


def _run_pool(emulator: EmulatorProcess, setup: str) -> subprocess.CompletedProcess[str]:
    client_id, client_secret = emulator.credentials("generic")
    script = _POOL_SCRIPT.replace("SETUP", setup)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            emulator.token_url("generic"),
            client_id,
            client_secret,
            emulator.ca_file,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.integration
@needs_the_emulator
def test_unconfigured_the_pool_writes_nothing_to_stdout_and_is_quiet(emulator: EmulatorProcess) -> None:
    """No logging set up at all: stdout is the application's; debug and info events are not shown."""
    result = _run_pool(emulator, "")
    assert result.stdout == "done\n"
    assert "token.refresh" not in result.stderr


@pytest.mark.integration
@needs_the_emulator
def test_the_stdlib_configuration_governs_the_events(emulator: EmulatorProcess) -> None:
    """``logging.basicConfig(level=DEBUG)`` shows every event, through the ``tokenpool`` logger."""
    setup = "logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s %(message)s')"
    result = _run_pool(emulator, setup)
    assert result.stdout == "done\n"
    lines = [line for line in result.stderr.splitlines() if line.split(" ")[1:2] == ["tokenpool"]]
    assert any(line.startswith("DEBUG tokenpool token.refresh.start provider=acme") for line in lines)
    assert any(line.startswith("INFO tokenpool token.refresh.success provider=acme") for line in lines)
    _client_id, client_secret = emulator.credentials("generic")
    assert client_secret not in result.stderr


@pytest.mark.integration
@needs_the_emulator
def test_a_level_on_the_tokenpool_logger_alone_is_honoured(emulator: EmulatorProcess) -> None:
    setup = (
        "logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s %(message)s')\n"
        "logging.getLogger('tokenpool').setLevel(logging.WARNING)"
    )
    result = _run_pool(emulator, setup)
    assert "token.refresh" not in result.stderr


@pytest.mark.integration
@needs_the_emulator
def test_once_structlog_is_configured_the_events_go_through_it(emulator: EmulatorProcess) -> None:
    setup = (
        "import structlog\n"
        "structlog.configure(processors=[structlog.processors.KeyValueRenderer(key_order=['event'])],"
        " logger_factory=structlog.PrintLoggerFactory(sys.stderr))"
    )
    result = _run_pool(emulator, setup)
    assert result.stdout == "done\n"
    assert "event='token.refresh.success' provider='acme'" in result.stderr


def test_the_library_logger_masks_credentials_on_the_way_to_the_stdlib(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import structlog

    logger = tokenpool.logging.LibraryLogger("tokenpool.test")
    was_configured = structlog.is_configured()
    config = structlog.get_config()
    structlog.reset_defaults()
    try:
        with caplog.at_level(logging.DEBUG, logger="tokenpool.test"):
            logger.warning("token.refresh.retry", provider="acme", error="a b", access_token="t0ken-value")
    finally:
        if was_configured:
            structlog.configure(**config)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "token.refresh.retry provider=acme error='a b' access_token=[redacted]"
    assert record.tokenpool == {  # type: ignore[attr-defined]
        "event": "token.refresh.retry",
        "provider": "acme",
        "error": "a b",
        "access_token": "[redacted]",
    }
