"""The pages themselves: every one in the nav, every code block run or checked, every figure sourced.

- A ``python`` block is either nothing but a snippet include of a file under
  examples/ (run by ``test_docs_examples.py``) or runnable on its own: it is
  run here, in a fresh interpreter.
- A ``toml`` block parses; one with a ``[providers.*]`` table is a complete
  configuration and ``parse_config`` accepts it (fake values stand in for the
  ``${VARIABLES}``); one with only ``[pool]`` is checked with a stand-in provider.
- ``python examples/NAME`` in a shell block names a file that exists.
- The home page's architecture picture and install line are the README's.
- The outage figures on the timing page are the ones recorded beside the plot.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from _docs_pages import DOCS, REPO, Block, all_blocks, nav_pages, pages

from tokenpool._config import parse_config

PYTHON_BLOCKS = [block for block in all_blocks() if block.language in {"python", "py", "python3"}]
TOML_BLOCKS = [block for block in all_blocks() if block.language == "toml"]
SHELL_BLOCKS = [block for block in all_blocks() if block.language in {"bash", "sh", "shell", "console"}]


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = nav_pages()
    assert sorted(nav) == pages(), "a page is missing from mkdocs.yml's nav, or the nav names a missing page"
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"


def test_the_docs_have_python_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 10


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=Block.where)
def test_python_blocks_are_included_examples_or_run_here(block: Block) -> None:
    if block.only_includes:
        for path in block.includes:
            assert path.startswith("examples/"), f"{block.where()}: examples live in examples/, not {path}"
            assert path.endswith(".py"), f"{block.where()}: a Python block includes {path}"
            assert (REPO / path).is_file(), f"{block.where()}: {path} does not exist"
        return
    assert not block.includes, f"{block.where()}: mixes an include with inline code"
    # Inline code must run as it stands (the block is the whole program).
    done = subprocess.run(
        [sys.executable, "-c", block.body], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{block.where()} does not run:\n{done.stderr}"


class FakeEnvironment(Mapping[str, str]):
    """Every ``${VARIABLE}`` is set, to a value of the shape its name suggests."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file

    def __getitem__(self, name: str) -> str:
        if name.endswith("_URL"):
            return "https://127.0.0.1:8443"
        if name.endswith("KEY_FILE"):
            return self.key_file
        if name.endswith("_FILE"):
            return self.cert_file
        if name.endswith("KEYS"):
            return "k1:" + base64.b64encode(bytes(range(32))).decode()
        if "SECRET" in name or "PASSWORD" in name:
            return "s3cret-value-for-the-docs"
        return "value-for-the-docs"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)


def _relative_files(data: Mapping[str, Any]) -> set[str]:
    """The relative certificate paths a configuration names literally."""
    names = set()
    for table in data.get("providers", {}).values():
        for key in ("cert_file", "key_file"):
            value = table.get(key)
            if isinstance(value, str) and "${" not in value and not Path(value).is_absolute():
                names.add(value)
    return names


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    pytest.importorskip("trustme")
    from tokenpool.testing import generate_certificates

    files = generate_certificates(tmp_path_factory.mktemp("certs"))
    return files.client_cert_file, files.client_key_file


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=Block.where)
def test_toml_blocks_parse_and_complete_ones_are_valid_configs(
    block: Block, certificates: tuple[str, str], tmp_path: Path
) -> None:
    data = tomllib.loads(block.text())
    if "providers" not in data and "pool" not in data:
        return  # a fragment of something else
    if "store" in data.get("pool", {}):
        pytest.importorskip("redis")
    if "providers" not in data:
        data = {**data, "providers": {"stand-in": {"type": "navro", "client_id": "a", "company": "b"}}}
        data["providers"]["stand-in"]["client_secret"] = "${STAND_IN_SECRET}"
    cert_file, key_file = certificates
    # A file's relative certificate paths resolve against its directory: put certificates there.
    for name in _relative_files(data):
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = key_file if name.endswith(".key") else cert_file
        target.write_bytes(Path(source).read_bytes())
    config = parse_config(
        data, environ=FakeEnvironment(cert_file, key_file), source=block.where(), base_dir=tmp_path
    )
    assert config.providers


def test_commands_name_example_files_that_exist() -> None:
    named = {
        match
        for block in SHELL_BLOCKS
        for match in re.findall(r"\b(examples/[\w./-]+\.(?:py|toml))", block.body)
    }
    assert named
    missing = sorted(path for path in named if not (REPO / path).is_file())
    assert missing == []


def _readme_architecture() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Architecture\n", 1)[1]
    return section.split("```text\n", 1)[1].split("```", 1)[0]


def test_the_architecture_picture_is_the_readmes() -> None:
    (picture,) = [b for b in all_blocks() if b.page == "index.md" and b.language == "text"]
    assert picture.body == _readme_architecture(), "docs/index.md's picture must be the README's: copy it"


def test_the_thirty_second_path_is_the_readmes() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ours = re.findall(r"```bash\n(.*?)```", readme.split("\n## ", 1)[0], re.DOTALL)
    home = [b.body for b in all_blocks() if b.page == "index.md" and b.language == "bash"]
    assert home, "docs/index.md has no install block"
    assert home == ours, "docs/index.md's 30-second path must be the README's first blocks: copy them"


def test_the_outage_figures_are_the_recorded_ones() -> None:
    recorded = json.loads((DOCS / "img" / "outage-timeline.json").read_text(encoding="utf-8"))
    figures, produced = recorded["figures"], recorded["produced"]
    page = (DOCS / "timing.md").read_text(encoding="utf-8")
    assert (DOCS / "img" / "outage-timeline.png").read_bytes().startswith(b"\x89PNG")
    assert figures["calls_not_200"] == 0
    assert figures["callers_waited_after_warm_up"] == 0
    expected = [
        f"**{figures['token_requests_failed_during_outage']} token requests failed**",
        f"**0 of {figures['calls']:,} API calls failed**",
        f"median latency of {figures['call_latency_p50_ms']:.2f} ms",
        f"slowest at {figures['call_latency_max_ms']:.0f} ms",
        f"{figures['min_remaining_life']:.2f} s of life left",
        f"on {produced['date'][:10]}",
        f"`{produced['command']}`",
    ]
    for text in expected:
        assert text in page, f"docs/timing.md should say {text!r} (from docs/img/outage-timeline.json)"
    assert "2 cores" in produced["machine"]
    assert "2-core" in page
    assert produced["command"] == "python docs/scripts/outage_timeline.py", (
        "the committed plot is the full run"
    )
