"""TOML configuration and the ``tokenpool check`` command (the latter against the emulator)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _workers import run_check

from tokenpool import ConfigurationError, RefreshPolicy, load_config
from tokenpool._config import parse_config
from tokenpool.providers import ClientCredentials, Navro, NtxPayMX, Zertiban
from tokenpool.testing import EmulatorProcess

SECRET = "s3cr3t-value-never-shown"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokenpool.toml"
    path.write_text(text)
    return path


def test_a_full_config(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("placeholder")
    path = write(
        tmp_path,
        """
        [pool]
        warm_up = "background"

        [providers.acme]
        type = "client_credentials"
        token_url = "https://auth.example.com/oauth/token"
        client_id = "acme-id"
        client_secret = "${ACME_SECRET}"
        scope = "read write"

        [providers.acme.refresh]
        ratio = 0.75

        [providers.z]
        type = "zertiban"
        client_id = "z-id"
        client_secret = "${Z_SECRET}"
        business_uuid = "5f0c7a9e-0000-4000-8000-000000000001"

        [providers.n]
        type = "navro"
        environment = "production"
        client_id = "n-id"
        client_secret = "${N_SECRET}"
        company = "acme"
        """,
    )
    config = load_config(path, environ={"ACME_SECRET": SECRET, "Z_SECRET": SECRET, "N_SECRET": SECRET})
    assert config.pool_options == {"warm_up": "background"}
    acme = config.providers["acme"]
    assert isinstance(acme, ClientCredentials)
    assert acme.refresh == RefreshPolicy(ratio=0.75)
    assert isinstance(config.providers["z"], Zertiban)
    navro = config.providers["n"]
    assert isinstance(navro, Navro)
    assert str(navro.token_url) == "https://api.navro.cloud/authentication/acme/token"
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'type = "navro"\nclient_id = "a"\nclient_secret = "' + SECRET + '"\ncompany = "c"',
            "environment reference",
        ),
        ('type = "navro"\nclient_id = "a"\nclient_secret = "${MISSING_VAR}"\ncompany = "c"', "MISSING_VAR"),
        ('type = "navro"\nclient_id = "a"\nclient_secret = "${S}"', "missing keys ['company']"),
        ('type = "navro"\nclient_id = "a"\nclient_secret = "${S}"\ncompany = "c"\ncolour = "red"', "colour"),
        ('type = "martian"', "'type' must be one of"),
        ('type = "ntxpay_pix"\nclient_id = "a"\nclient_secret = "${SHORT}"', "between 8 and 64"),
        ('type = "ntxpay_mx"\nclient_id = "a"\nclient_secret = "${S}"', "cert_file"),
        (
            'type = "navro"\nclient_id = "a"\nclient_secret = "${S}"\ncompany = "c"\n'
            "[providers.p.refresh]\nratio = 2",
            "ratio",
        ),
        (
            'type = "client_credentials"\nclient_id = "a"\nclient_secret = "${S}"\n'
            'token_url = "http://auth.example.com/t"',
            "https is required",
        ),
    ],
)
def test_every_mistake_names_the_provider_and_key_and_never_the_secret(
    tmp_path: Path, table: str, message: str
) -> None:
    path = write(tmp_path, "[providers.p]\n" + table + "\n")
    with pytest.raises(ConfigurationError) as info:
        load_config(path, environ={"S": SECRET, "SHORT": "abc"})
    text = str(info.value)
    assert "'p'" in text
    assert message in text
    assert SECRET not in text


def test_a_config_without_providers_or_with_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no providers"):
        parse_config({})
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_config(write(tmp_path, "[providers.p\n"))
    with pytest.raises(ConfigurationError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_ntx_mx_certificate_paths_are_relative_to_the_config(
    tmp_path: Path, emulator: EmulatorProcess
) -> None:
    cert = Path(emulator.client_cert.cert_file)
    key = Path(emulator.client_cert.key_file or "")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "c.pem").write_bytes(cert.read_bytes())
    (tmp_path / "certs" / "c.key").write_bytes(key.read_bytes())
    path = write(
        tmp_path,
        '[providers.mx]\ntype = "ntxpay_mx"\nclient_id = "a"\nclient_secret = "${S}"\n'
        'cert_file = "certs/c.pem"\nkey_file = "certs/c.key"\n',
    )
    provider = load_config(path, environ={"S": SECRET}).providers["mx"]
    assert isinstance(provider, NtxPayMX)
    assert provider.client_certificate.cert_file == str(tmp_path / "certs" / "c.pem")


def emulator_config(emulator: EmulatorProcess, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    env = dict(os.environ)
    lines = [f'[pool]\nca_file = "{emulator.ca_file}"\n']
    for name, kind in [
        ("zertiban", "zertiban"),
        ("navro", "navro"),
        ("pix", "ntxpay_pix"),
        ("payme", "payme"),
    ]:
        source = {"pix": "ntxpix"}.get(name, name)
        info = emulator.client_info(source)
        env[f"{name.upper()}_SECRET"] = info["client_secret"]
        extra = {
            "zertiban": f'business_uuid = "{info.get("business_uuids", [""])[0]}"',
            "navro": f'company = "{info.get("company")}"',
            "payme": f'audience = "{info.get("audience")}"',
            "pix": "",
        }[name]
        lines.append(
            f'[providers.{name}]\ntype = "{kind}"\nbase_url = "{emulator.url(source)}"\n'
            f'client_id = "{info["client_id"]}"\nclient_secret = "${{{name.upper()}_SECRET}}"\n{extra}\n'
        )
    path = tmp_path / "emulator.toml"
    path.write_text("\n".join(lines))
    return path, env


@pytest.mark.integration
def test_check_prints_a_table_and_exits_zero(emulator: EmulatorProcess, tmp_path: Path) -> None:
    path, env = emulator_config(emulator, tmp_path)
    result = run_check(path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["provider", "status", "lifetime", "latency"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["zertiban"][1:3] == ["ok", "300"]
    assert rows["pix"][1:3] == ["ok", "3600"]
    assert rows["payme"][1:3] == ["ok", "8600"]


@pytest.mark.integration
def test_check_reports_a_rejected_provider_with_a_hint_and_no_secret(
    emulator: EmulatorProcess, tmp_path: Path
) -> None:
    path, env = emulator_config(emulator, tmp_path)
    env["NAVRO_SECRET"] = "wrong-secret-for-navro"
    result = run_check(path, env)
    assert result.returncode == 1
    navro = next(line for line in result.stdout.splitlines() if line.startswith("navro"))
    assert "FAIL HTTP 401" in navro
    assert "hint:" in navro
    assert "wrong-secret-for-navro" not in result.stdout + result.stderr
    for name in ("zertiban", "pix", "payme"):
        assert env[f"{name.upper()}_SECRET"] not in result.stdout + result.stderr


def test_cli_help_and_usage_errors(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "tokenpool", "--help"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0
    for command in ("demo", "check", "emulator"):
        assert command in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "tokenpool", "check", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "no such file" in bad.stderr


@pytest.mark.integration
def test_check_never_prints_the_secret_a_server_quotes_back(tmp_path: Path) -> None:
    """A token endpoint that quotes the Basic header and the form body it got, in its error text."""
    import base64
    import json
    import threading
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    secret = 'Zx9+/q=w"e\\r é&t%y-long-enough'

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
            quoted = f"got Authorization={self.headers.get('authorization')} body={body}"
            answer = json.dumps({"error": "invalid_client", "error_description": quoted}).encode()
            self.send_response(400)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/oauth/token"
        path = write(
            tmp_path,
            f"""
            [providers.basic]
            type = "client_credentials"
            token_url = "{url}"
            client_id = "basic-client"
            client_secret = "${{ECHO_SECRET}}"
            auth_method = "client_secret_basic"

            [providers.post]
            type = "client_credentials"
            token_url = "{url}"
            client_id = "post-client"
            client_secret = "${{ECHO_SECRET}}"
            auth_method = "client_secret_post"
            """,
        )
        result = run_check(path, {**os.environ, "ECHO_SECRET": secret})
    finally:
        server.shutdown()
        server.server_close()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "basic" in result.stdout
    assert "post" in result.stdout
    basic = base64.b64encode(f"basic-client:{urllib.parse.quote_plus(secret)}".encode()).decode()
    for form in (
        secret,
        urllib.parse.quote_plus(secret),
        urllib.parse.quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        basic,
        base64.b64encode(f"basic-client:{secret}".encode()).decode(),
    ):
        assert form not in output, form
