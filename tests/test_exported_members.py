"""The public namespace is what ``__all__`` says, no more and no less (httpx keeps the same test)."""

from __future__ import annotations

import importlib

import pytest

import tokenpool


@pytest.mark.parametrize(
    "module_name", ["tokenpool", "tokenpool.providers", "tokenpool.metrics", "tokenpool.logging"]
)
def test_all_lists_exactly_the_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    # Defined here, or (for a package) in one of its private modules: imports from elsewhere don't count.
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None)
        in {module_name}
        | {m for m in _private_modules(module_name) if getattr(value, "__module__", None) == m}
    }
    assert public <= exported, f"public but not in __all__: {sorted(public - exported)}"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names a missing {name!r}"


def _private_modules(package: str) -> set[str]:
    import pkgutil

    module = importlib.import_module(package)
    paths = getattr(module, "__path__", None)
    if paths is None:
        return set()
    return {f"{package}.{info.name}" for info in pkgutil.iter_modules(paths) if info.name.startswith("_")}


def test_public_classes_claim_the_public_module() -> None:
    for name in tokenpool.__all__:
        value = getattr(tokenpool, name)
        if isinstance(value, type):
            assert value.__module__.startswith("tokenpool."), name


def test_import_is_light() -> None:
    import subprocess
    import sys

    optional = ("hypercorn", "trustme", "celery", "arq", "locust", "gevent", "matplotlib")
    code = f"import sys, tokenpool; print(','.join(m for m in {optional!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"`import tokenpool` pulled in optional dependencies: {out}"
