"""The emulator as a tool in someone else's tests: paths it tells, state it keeps across restarts.

``--state-dir`` keeps the certificates and the credentials, so a static config
(``examples/tokenpool.toml``) keeps working after a restart, and writes the
values that config refers to into ``emulator.env``.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from _workers import REPO, run_check

from tokenpool.testing import PROVIDERS, EmulatorProcess

pytestmark = [pytest.mark.integration]

EXAMPLE = REPO / "examples" / "tokenpool.toml"


def read_env(path: Path) -> dict[str, str]:
    """The assignments of an ``emulator.env`` as the shell would read them."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, quoted = line.partition("=")
            (values[name],) = shlex.split(quoted)
    return values


def started(state: Path) -> EmulatorProcess:
    """An emulator keeping its state in *state* (started by ``with``)."""
    return EmulatorProcess(extra_args=["--state-dir", str(state)])


def test_the_state_directory_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with started(state) as first:
        credentials = {name: first.credentials(name) for name in PROVIDERS}
        ca = Path(first.ca_file).read_bytes()
        assert first.info["state_dir"] == str(state)
        assert first.info["env_file"] == str(state / "emulator.env")
    assert stat.S_IMODE((state / "credentials.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "emulator.env").stat().st_mode) == 0o600
    with started(state) as second:
        assert {name: second.credentials(name) for name in PROVIDERS} == credentials
        assert Path(second.ca_file).read_bytes() == ca
        env = read_env(state / "emulator.env")
        assert env["EMULATOR_HTTPS_URL"] == second.info["listeners"]["https"]
        assert env["ZERTIBAN_CLIENT_SECRET"] == credentials["zertiban"][1]


def test_without_a_state_directory_every_start_has_new_credentials() -> None:
    with EmulatorProcess() as one, EmulatorProcess() as two:
        assert one.credentials("navro") != two.credentials("navro")


def test_the_five_provider_example_is_accepted_against_the_emulator(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with started(state):
        env = {**os.environ, **read_env(state / "emulator.env")}
        result = run_check(EXAMPLE, env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows == dict.fromkeys(("ntx-mx", "ntx-pix", "payme", "zertiban", "navro"), "ok")
    assert result.stderr == ""
    for name, value in env.items():
        if name.endswith("_CLIENT_SECRET"):
            assert value not in result.stdout


def test_a_damaged_credentials_file_is_a_usage_error_that_shows_none_of_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "credentials.json").write_text('{"navro": [{"client_secret": "do-not-print-me"}]}')
    result = subprocess.run(
        [sys.executable, "-m", "tokenpool", "emulator", "--state-dir", str(state), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "credentials.json" in result.stderr
    assert "delete it" in result.stderr
    assert "do-not-print-me" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_the_paths_are_in_the_help_and_in_the_ready_document(emulator: EmulatorProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenpool", "emulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    paths = emulator.info["resource_paths"]
    assert set(paths) == set(PROVIDERS)
    company = emulator.client_info("navro")["company"]
    for name in PROVIDERS:
        token_path = emulator.info["token_paths"][name].replace(company, "{company}")
        assert f"POST /{name}{token_path}" in result.stdout
        for path in paths[name]:
            assert path in result.stdout
    # Each resource path is a real, protected endpoint: 401 without a token, never 404.
    with httpx.Client(base_url=emulator.info["listeners"]["http"]) as client:
        for name in PROVIDERS:
            for path in paths[name]:
                answer = client.post(path)
                assert answer.status_code == 401, (path, answer.status_code)
                assert json.loads(answer.text)["reason"] == "missing"
