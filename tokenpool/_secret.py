"""A string wrapper that never shows its value by accident."""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn

__all__ = ["Secret", "settings_of"]


class Secret:
    """Holds a credential; its ``repr``, ``str`` and ``format`` are masked.

    The value is only reachable through :meth:`reveal`, so a secret cannot slip
    into a log line, an f-string or an exception message without someone
    writing ``.reveal()`` on purpose.  Secrets refuse to be pickled, so they do
    not travel into task queues or result backends either.  ``copy.copy`` and
    ``copy.deepcopy`` return the secret itself: it is immutable, so a copy of
    an object holding one (a provider, a client certificate) shares it.

    Args:
        value: The secret text.  Must not be empty.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret expects a str, got {type(value).__name__}")
        if not value:
            raise ValueError("a secret must not be empty")
        self._value = value

    def reveal(self) -> str:
        """Return the secret text; call it only where it goes on the wire."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("tokenpool.Secret refuses to be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError("tokenpool.Secret refuses to be pickled")

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_value"):
            raise AttributeError("Secret is immutable")
        object.__setattr__(self, name, value)


def as_secret(value: str | Secret) -> Secret:
    """Wrap *value* in a :class:`Secret` unless it already is one."""
    return value if isinstance(value, Secret) else Secret(value)


def settings_of(obj: object) -> dict[str, Any]:
    """An object's settings by name: a dataclass's fields, else its ``__dict__`` (searched for secrets)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return dict(getattr(obj, "__dict__", {}))
