"""Optional dependencies: an import that fails for want of an extra says which one to install."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

__all__ = ["EXTRAS", "require_extra"]

#: Each extra and the top-level modules it provides (``pyproject.toml``'s optional dependencies).
EXTRAS: Mapping[str, frozenset[str]] = {
    "celery": frozenset({"celery", "kombu", "billiard"}),
    "arq": frozenset({"arq"}),
    "locust": frozenset({"locust", "gevent", "requests"}),
    "redis": frozenset({"redis", "cryptography"}),
    "testing": frozenset({"hypercorn", "trustme"}),
    "trio": frozenset({"trio"}),
    "uvloop": frozenset({"uvloop"}),
}


@contextlib.contextmanager
def require_extra(extra: str, *, feature: str) -> Iterator[None]:
    """Turn a missing module of *extra*, imported inside the block, into an error that names the extra.

    Other import errors (a module of another extra, a broken installation) pass unchanged.

    Args:
        extra: The ``tokenpool[...]`` extra that provides the modules.
        feature: What needs them, as the user wrote it (``"tokenpool.contrib.celery"``).
    """
    modules = EXTRAS[extra]
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in modules:
            raise
        raise ModuleNotFoundError(
            f"{feature} needs the {extra!r} extra, which provides {missing!r}: "
            f"pip install 'tokenpool[{extra}]'",
            name=exc.name,
        ) from None
