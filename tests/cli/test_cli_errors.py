"""Every user error of the CLI is one line on stderr with exit status 2: never a traceback, never a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SECRET = "s3cr3t-value-never-shown-anywhere"

ZERTIBAN = """
[providers.z]
type = "zertiban"
client_id = "z-client"
client_secret = "${Z_SECRET}"
business_uuid = "5f0c7a9e-0000-4000-8000-000000000001"
"""


def tokenpool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenpool", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "Z_SECRET": SECRET, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit status 2 and one error line on stderr naming *fragments* (after argparse's usage, if any)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if lines and lines[0].startswith("usage:"):  # argparse: its usage (wrapped), then "PROG: error: ..."
        lines = [line for line in lines if ": error: " in line]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "soon"])
def test_check_refuses_a_timeout_that_is_not_a_positive_finite_number(tmp_path: Path, value: str) -> None:
    path = tmp_path / "tokenpool.toml"
    path.write_text(ZERTIBAN)
    result = tokenpool("check", str(path), f"--timeout={value}")
    assert_one_line_error(result, "--timeout", value)


@pytest.mark.parametrize(
    ("pool", "key", "said"),
    [
        ('max_concurrent_requests = "20"', "max_concurrent_requests", "got '20' (a string)"),
        ("max_concurrent_requests = 0", "max_concurrent_requests", "a positive integer"),
        ("max_requests_per_host = 1.5", "max_requests_per_host", "got 1.5 (a float)"),
        ("max_requests_per_host = true", "max_requests_per_host", "got True (a boolean)"),
        ("ca_file = 5", "ca_file", "must be a file path (a string), got 5 (an integer)"),
        ('ca_file = ""', "ca_file", "must be a file path"),
        ("warm_up = 3", "warm_up", "one of 'wait', 'background', 'lazy'"),
        ('warm_up_timeout = "x"', "warm_up_timeout", "a positive number of seconds"),
        ("metrics_interval = -1", "metrics_interval", "a positive number of seconds"),
        ("metrics_label = 7", "metrics_label", "'kind' or 'name'"),
        ("metrics_label = [1, 2]", "metrics_label", "got an array"),
    ],
)
def test_a_pool_value_of_the_wrong_type_names_the_file_the_table_and_the_key(
    tmp_path: Path, pool: str, key: str, said: str
) -> None:
    path = tmp_path / "tokenpool.toml"
    path.write_text(f"[pool]\n{pool}\n{ZERTIBAN}")
    result = tokenpool("check", str(path))
    assert_one_line_error(result, "configuration error", str(path), "[pool]", repr(key), said)


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        ("client_id = 5", ("provider 'z'", "Zertiban.client_id")),
        ('business_uuid = ["a"]', ("provider 'z'", "Zertiban.business_uuid")),
        ("environment = 3", ("provider 'z'", "Zertiban.environment")),
        ('refresh = {ratio = "0.8"}', ("provider 'z'", "RefreshPolicy.ratio")),
        ("refresh = 5", ("provider 'z'", "[refresh] must be a table")),
    ],
)
def test_a_provider_value_of_the_wrong_type_names_the_file_the_table_and_the_key(
    tmp_path: Path, line: str, fragments: tuple[str, ...]
) -> None:
    key = line.split(" = ")[0]
    table = "\n".join(row for row in ZERTIBAN.splitlines() if not row.startswith(f"{key} = "))
    path = tmp_path / "tokenpool.toml"
    path.write_text(f"{table}\n{line}\n")
    result = tokenpool("check", str(path))
    assert_one_line_error(result, "configuration error", str(path), *fragments)


def test_a_certificate_path_of_the_wrong_type_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "tokenpool.toml"
    path.write_text(
        '[providers.mx]\ntype = "ntxpay_mx"\nclient_id = "c"\nclient_secret = "${Z_SECRET}"\ncert_file = 5\n'
    )
    result = tokenpool("check", str(path))
    assert_one_line_error(result, str(path), "provider 'mx'", "'cert_file'", "a file path")


@pytest.mark.parametrize(
    "args",
    [
        ("demo", "--workers", "0"),
        ("demo", "--duration", "nan"),
        ("demo", "--lifetime-scale", "-1"),
        ("demo", "--max-lifetime", "-3"),
        ("demo", "--max-lifetime", "nan"),
        ("demo", "--tasks", "many"),
        ("demo", "--json", "/nonexistent-directory/results.json"),
        ("demo", "--json", "/"),
        ("demo", "--providers", "paypal"),
        ("emulator", "--host", "0.0.0.0"),  # noqa: S104 - the point: a non-loopback address is refused
        ("emulator", "--lifetime-scale", "inf"),
        ("emulator", "--http-port", "70000"),
        ("emulator", "--state-dir", "x", "--cert-dir", "y"),
        ("no-such-command",),
    ],
)
def test_usage_errors_are_refused_before_anything_starts(args: tuple[str, ...]) -> None:
    result = tokenpool(*args)
    assert_one_line_error(result, "error:")


def test_an_unknown_log_level_is_named_and_ignored(tmp_path: Path) -> None:
    path = tmp_path / "tokenpool.toml"
    path.write_text("[pool]\nwarm_up = 3\n" + ZERTIBAN)
    result = tokenpool("check", str(path), env={"TOKENPOOL_LOG_LEVEL": "chatty"})
    assert result.returncode == 2
    assert "ignoring TOKENPOOL_LOG_LEVEL='chatty'" in result.stderr
