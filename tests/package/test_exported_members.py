"""The public namespace is what ``__all__`` says, no more and no less (httpx keeps the same test)."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import subprocess
import sys
import types
from typing import Any

import pytest

import tokenpool

#: Every public module of the package.
PUBLIC_MODULES = (
    "tokenpool",
    "tokenpool.providers",
    "tokenpool.metrics",
    "tokenpool.logging",
    "tokenpool.fleet",
    "tokenpool.testing",
    "tokenpool.loadtest",
)

#: Public names that the rule below cannot see as defined in their module: a version
#: string and type aliases (whose objects belong to ``typing``).
NOT_DETECTABLE = {
    "tokenpool": {"__version__"},
    "tokenpool.metrics": {"ASGIApp"},
    "tokenpool.loadtest": {"Action"},
    # Defined in the core (the Clock seam lives there), public as a test tool.
    "tokenpool.testing": {"ManualClock"},
}


def _owners(module_name: str) -> set[str]:
    """The module and, for a package, its private modules: where its public names may be defined."""
    module = importlib.import_module(module_name)
    paths = getattr(module, "__path__", None)
    if paths is None:
        return {module_name}
    private = {
        f"{module_name}.{info.name}" for info in pkgutil.iter_modules(paths) if info.name.startswith("_")
    }
    return {module_name} | private


def _defined_here(module_name: str, name: str, value: Any, owners: set[str]) -> bool:
    """Whether *value*, bound to *name* in the module, is the module's own (not an import)."""
    if isinstance(value, types.ModuleType):
        # Submodules become attributes once anything imports them: public by their own
        # dotted name (PUBLIC_MODULES), exported only where __init__ imports them on purpose.
        return False
    if isinstance(value, type) or callable(value):
        return _origin(value) in owners
    # A constant: ours if its type is a plain value type, or one of ours (an imported
    # registry or a __future__ feature is not).
    kind = type(value)
    return kind.__module__ == "builtins" or kind.__module__.startswith("tokenpool")


def _origin(value: Any) -> str | None:
    """Where a class or function was defined (``__module__`` may have been set to claim the package)."""
    origin = getattr(value, "__tokenpool_origin__", None)
    return origin if isinstance(origin, str) else getattr(value, "__module__", None)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_lists_exactly_the_public_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    owners = _owners(module_name)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != "TYPE_CHECKING"
        and _defined_here(module_name, name, value, owners)
    }
    # Names a module provides lazily (``__getattr__``, so that importing it stays light).
    lazy = {name for name in exported - set(vars(module)) if hasattr(module, name)}
    submodules = {name for name in exported if isinstance(getattr(module, name, None), types.ModuleType)}
    assert all(getattr(module, name).__name__ == f"{module_name}.{name}" for name in submodules)
    public |= submodules
    assert exported == public | lazy | NOT_DETECTABLE.get(module_name, set()), (
        f"only in __all__: {sorted(exported - public - lazy)}; "
        f"public but not in __all__: {sorted(public - exported)}"
    )
    assert len(module.__all__) == len(exported), f"{module_name}.__all__ lists a name twice"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names a missing {name!r}"


def test_public_classes_and_functions_claim_the_package() -> None:
    """``tokenpool.TokenPool``, not ``tokenpool._pool.TokenPool``, in reprs, tracebacks and docs."""
    for name in tokenpool.__all__:
        value = getattr(tokenpool, name)
        if isinstance(value, (type, types.FunctionType)):
            assert value.__module__ == "tokenpool", name


def test_exceptions_still_pickle_under_the_public_name() -> None:
    import pickle

    error = tokenpool.TokenEndpointError("503", status_code=503)
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(again) is tokenpool.TokenEndpointError
    assert again.status_code == 503


def test_the_version_is_written_once() -> None:
    assert importlib.metadata.version("tokenpool") == tokenpool.__version__


def test_import_is_light() -> None:
    optional = (
        "hypercorn",
        "trustme",
        "celery",
        "arq",
        "locust",
        "gevent",
        "matplotlib",
        "redis",
        "cryptography",
        "tokenpool.testing",
        "tokenpool.fleet",
        "tokenpool.loadtest",
    )
    code = f"import sys, tokenpool; print(','.join(m for m in {optional!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"`import tokenpool` pulled in optional or test-only modules: {out}"


def test_the_old_manual_clock_name_still_works_with_a_warning() -> None:
    import tokenpool.testing

    with pytest.warns(DeprecationWarning, match=r"tokenpool\.testing\.ManualClock"):
        old = tokenpool.ManualClock  # type: ignore[attr-defined]
    assert old is tokenpool.testing.ManualClock
    with pytest.raises(AttributeError):
        _ = tokenpool.NoSuchName  # type: ignore[attr-defined]
