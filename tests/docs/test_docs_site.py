"""``mkdocs build --strict`` passes: every page renders, every link and anchor resolves.

Skipped where mkdocs is not installed, except in CI (``CI=true``), where the
site must build.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from _docs_pages import DOCS, REPO, in_ci

pytestmark = pytest.mark.slow

TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "griffe")


def require_tools() -> None:
    missing = [name for name in TOOLS if importlib.util.find_spec(name.split(".")[0]) is None]
    if missing:
        if in_ci():
            pytest.fail(f"CI must build the documentation; missing {missing}", pytrace=False)
        pytest.skip(f"the documentation tooling is not installed: {missing}")


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    require_tools()
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    for page in ("index.html", "timing/index.html", "reference/tokenpool/index.html", "changelog/index.html"):
        assert (site / page).is_file(), page
    assert (site / "img" / "outage-timeline.png").is_file()
    assert not (site / "scripts").exists(), "docs/scripts/ is build tooling, not part of the site"
    reference = (site / "reference" / "tokenpool" / "index.html").read_text(encoding="utf-8")
    assert 'id="tokenpool.TokenPool"' in reference
    assert ":class:`" not in reference, "a Sphinx role was rendered as text"
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "Keep a Changelog" in changelog, "CHANGELOG.md is included"


def _roles_extension() -> ModuleType:
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location(
        "griffe_sphinx_roles", DOCS / "scripts" / "griffe_sphinx_roles.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sphinx_roles_become_optional_cross_references() -> None:
    roles = _roles_extension()
    import griffe

    package = griffe.load("tokenpool", search_paths=[str(REPO)], resolve_aliases=False)
    pool = package["TokenPool"]
    text = roles.rewrite(pool, "Uses :class:`~tokenpool.Secret` and :meth:`TokenPool.statistics`.")
    assert '<autoref identifier="tokenpool.Secret" optional><code>Secret</code></autoref>' in text
    assert "<code>TokenPool.statistics()</code>" in text
    assert roles.rewrite(pool, "Example::") == "Example:"
    raises = roles.rewrite(pool, "Raises:\n    A, B, C.\n    D: why.")
    assert raises == "Raises:\n    A, B, C:\n    D: why."
