"""The logger tokenpool uses when given none: structlog's once configured, else the standard library's."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import structlog

from ._redact import redact_secrets

__all__ = ["LibraryLogger", "library_logger"]

_LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class LibraryLogger:
    """The structlog-shaped logger tokenpool uses when you pass none (see the module docstring).

    It has the methods tokenpool calls -- ``debug``, ``info``, ``warning``,
    ``error``, ``critical`` and ``exception`` -- each taking an event name and
    key-value fields.  Every event is checked by :data:`redact_secrets` on the
    way to the standard library (structlog's chain is yours to configure).

    Args:
        name: The structlog logger name and the standard-library logger name.
    """

    __slots__ = ("_name", "_stdlib")

    def __init__(self, name: str = "tokenpool") -> None:
        self._name = name
        self._stdlib = logging.getLogger(name)

    def __repr__(self) -> str:
        return f"<LibraryLogger {self._name!r}>"

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._emit("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._emit("error", event, fields)

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(structlog.get_logger(self._name), method)(event, **fields)
            return
        level = _LEVELS[method]
        if not self._stdlib.isEnabledFor(level):
            return
        exc_info = fields.pop("exc_info", None)
        cleaned = redact_secrets(None, method, dict(fields))
        text = " ".join([event, *(f"{key}={_plain(value)}" for key, value in cleaned.items())])
        self._stdlib.log(
            level, "%s", text, exc_info=exc_info, extra={"tokenpool": {"event": event, **cleaned}}
        )


def _plain(value: object) -> str:
    """A field's value as ``key=value`` text: bare when it has no space or quote, else ``repr``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else repr(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return repr(text)
    return text


_DEFAULT = LibraryLogger()


def library_logger() -> LibraryLogger:
    """The logger tokenpool uses when none is given: structlog's if configured, else the stdlib's."""
    return _DEFAULT
