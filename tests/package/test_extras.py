"""An integration imported without its extra says which extra to install.

In the full environment the missing package is made unimportable for one child
interpreter (``sys.modules[name] = None``, which makes ``import name`` fail as an
uninstalled package does); in the no-extras session (``nox -s
tests_without_extras``) the packages are really absent and the same assertions hold.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    # (module imported, package made missing, extra named)
    ("tokenpool.contrib.celery", "celery", "celery"),
    ("tokenpool.contrib.locust", "locust", "locust"),
    ("tokenpool.contrib.locust", "gevent", "locust"),
]


def _import_without(module: str, missing: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import importlib.util, sys\n"
        f"if importlib.util.find_spec({missing!r}) is not None:\n"
        f"    sys.modules[{missing!r}] = None\n"
        f"import {module}\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(("module", "missing", "extra"), CASES)
def test_the_import_error_names_the_extra(module: str, missing: str, extra: str) -> None:
    result = _import_without(module, missing)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: "), last
    assert f"pip install 'tokenpool[{extra}]'" in last
    assert repr(missing) in last


def test_the_emulator_command_names_the_testing_extra() -> None:
    code = (
        "import importlib.util, sys\n"
        "if importlib.util.find_spec('hypercorn') is not None:\n"
        "    sys.modules['hypercorn'] = None\n"
        "from tokenpool._cli import main\n"
        "sys.exit(main(['emulator', '--json']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'tokenpool[testing]'" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_another_import_error_is_not_disguised() -> None:
    """Only a missing module of the extra is reworded: a broken import elsewhere passes unchanged."""
    from tokenpool._extras import require_extra

    with pytest.raises(ModuleNotFoundError) as caught, require_extra("celery", feature="x"):
        import tokenpool_no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert caught.value.name == "tokenpool_no_such_module"
    assert "tokenpool[" not in str(caught.value)
