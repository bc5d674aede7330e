"""Structured logs: where tokenpool's events go, a redaction processor, a recommended structlog setup.

tokenpool never configures logging: your application owns it.  Its events go
to :func:`library_logger` (or the ``logger=`` you pass to
:class:`~tokenpool.TokenPool`), which sends each one

- to ``structlog.get_logger("tokenpool")`` once your application has called
  ``structlog.configure`` (``structlog.is_configured()``), so they join your
  structlog chain with their fields intact;
- otherwise to the standard library's ``logging.getLogger("tokenpool")``, as
  ``"token.refresh.success provider=acme duration=0.012 ..."`` at the matching
  level, with the fields also on the record as ``record.tokenpool``.  Then
  ``logging.basicConfig(level=...)``, ``dictConfig`` and your handlers govern
  them.  With no logging configured at all, Python's last-resort handler shows
  warnings and errors on standard error, and nothing else: tokenpool is quiet
  by default and never writes to standard output.

The choice is made per event, so configuring structlog after the pool was
built still takes effect.

Events (flat key-value fields; ``provider`` on every one):

- ``token.refresh.start`` (debug): ``attempt``.
- ``token.refresh.success`` (info): ``duration``, ``expires_in``, ``refresh_in``, ``remaining``.
- ``token.refresh.retry`` (warning): ``attempt``, ``duration``, ``status``, ``error_code``,
  ``reason``, ``error``, ``retry_in``, ``remaining`` — a refresh failed but the current token
  outlives the backoff.
- ``token.refresh.failed`` (error): the same fields; no usable token outlives the backoff.
- ``token.refresh.credentials_rejected`` (error): the same fields; the endpoint refused the
  client's credentials.
- ``token.invalidated`` (info): ``remaining`` — a resource call answered 401.
- ``token.downstream_unauthorized`` (warning): ``retried``.

None of them carries a token or a secret; :func:`redact_secrets` is the belt
to those braces, for everything else your application logs beside them.

Recommended configuration (JSON lines in production, a readable console
when standard error is a terminal, tracebacks without local variables)::

    import tokenpool.logging

    tokenpool.logging.configure_recommended()

which is the same as::

    import sys
    import structlog
    import tokenpool.logging

    structlog.configure(
        processors=tokenpool.logging.recommended_processors(),
        wrapper_class=structlog.make_filtering_bound_logger("info"),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
    )

To keep your own chain, insert :data:`redact_secrets` after the exception
renderer and before the final renderer, and make sure that exception
renderer does not render local variables: ``structlog.processors.dict_tracebacks``
*does* by default; use ``ExceptionRenderer(ExceptionDictTransformer(show_locals=False))``
(as :func:`recommended_processors` does) or ``format_exc_info``.  Local
variables of a frame that built a token request hold the client secret.
"""

from __future__ import annotations

import sys
from typing import TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

from ._library import LibraryLogger, library_logger
from ._redact import REDACTED, Redactor, redact_secrets

__all__ = [
    "REDACTED",
    "LibraryLogger",
    "Redactor",
    "configure_recommended",
    "library_logger",
    "recommended_processors",
    "redact_secrets",
]


def recommended_processors(json: bool | None = None) -> list[Processor]:
    """The processor chain tokenpool recommends, ending with a renderer.

    Context variables, log level, an ISO-8601 UTC timestamp, exception
    rendering *without local variables*, :data:`redact_secrets`, then a
    renderer.

    Args:
        json: ``True`` for one JSON object per line (``exception`` becomes a
            structured traceback), ``False`` for structlog's console renderer
            (plain traceback text, never Rich's locals panel).  ``None``
            (default) picks the console when standard error is a terminal,
            JSON otherwise.
    """
    if json is None:
        json = not _isatty(sys.stderr)
    common: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if json:
        return [
            *common,
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ]
    return [
        *common,
        # Renders exc_info to plain text here, so that the traceback passes
        # through the redactor and the console renderer never formats it
        # itself (with Rich installed it would show every frame's locals).
        structlog.processors.format_exc_info,
        redact_secrets,
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]


def configure_recommended(
    *, json: bool | None = None, level: int | str = "info", file: TextIO | None = None
) -> None:
    """Configure structlog globally with :func:`recommended_processors`.

    For applications and scripts: tokenpool itself never calls this.

    Args:
        json: As for :func:`recommended_processors`; ``None`` decides by
            whether *file* is a terminal.
        level: Lowest level logged (``"debug"`` shows every token request).
        file: Where lines go (default: standard error).
    """
    stream = file if file is not None else sys.stderr
    if json is None:
        json = not _isatty(stream)
    structlog.configure(
        processors=recommended_processors(json=json),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # closed or detached streams
        return False
