"""Text for a terminal or a pipe: its width, what its encoding can show, plurals and wrapping.

Everything the demo prints is written with a few typographic characters
(``…``, ``×``, ``≤``, ``⌈⌉``, ``—``, ``·``); a stream whose encoding cannot
show them (``PYTHONIOENCODING=latin-1``, ``ascii``) gets ASCII equivalents
instead of a ``UnicodeEncodeError``.  Nothing here writes ANSI escapes.
"""

from __future__ import annotations

import shutil
import textwrap
from typing import TextIO

__all__ = ["Text", "can_encode", "plural", "terminal_width"]

#: The characters the demo's text uses, and what an ASCII-only stream shows instead.
ASCII_EQUIVALENTS = {
    "…": "...",
    "×": "x",
    "≤": "<=",
    "≥": ">=",
    "⌈": "ceil(",
    "⌉": ")",
    "—": "-",
    "–": "-",
    "·": "*",
    "→": "->",
    "µ": "u",
    "≈": "~",
}
_TO_ASCII = str.maketrans(ASCII_EQUIVALENTS)
_SAMPLE = "".join(ASCII_EQUIVALENTS)
#: Narrower than this, nothing is laid out any more (lines are cut by the terminal).
MIN_WIDTH = 20


def can_encode(stream: TextIO, sample: str = _SAMPLE) -> bool:
    """Whether *stream*'s encoding can write every character of *sample*."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        sample.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def terminal_width(default: int = 80) -> int:
    """Columns of the terminal (``COLUMNS`` first, as :func:`shutil.get_terminal_size` reads it).

    Standard output piped to a file or a program gives *default*.
    """
    return max(MIN_WIDTH, shutil.get_terminal_size((default, 24)).columns)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 call``, ``2 calls``, ``1,234 calls`` (*many*: an irregular plural)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


class Text:
    """How to write for one stream: its width, and ASCII instead of what its encoding cannot show."""

    def __init__(self, out: TextIO, *, width: int | None = None, ascii_only: bool | None = None) -> None:
        self.out = out
        self._width = width
        self.ascii_only = (not can_encode(out)) if ascii_only is None else ascii_only
        #: What is left after the table, in the stream's encoding (ASCII when that was asked for).
        self._encoding = "ascii" if ascii_only else (getattr(out, "encoding", None) or "utf-8")

    @property
    def width(self) -> int:
        """Columns available (measured each time: a terminal can be resized)."""
        return max(MIN_WIDTH, self._width) if self._width is not None else terminal_width()

    def __call__(self, text: str) -> str:
        """*text* as this stream can show it."""
        if not self.ascii_only:
            return text
        # The table covers what the demo writes; anything else the encoding lacks becomes "?".
        try:
            return text.translate(_TO_ASCII).encode(self._encoding, "replace").decode(self._encoding)
        except LookupError:
            return text.translate(_TO_ASCII).encode("ascii", "replace").decode("ascii")

    def wrap(self, text: str, *, indent: str = "", first: str = "") -> list[str]:
        """*text* (converted) in lines of at most :attr:`width` columns; *indent* on continuation lines."""
        return textwrap.wrap(
            self(text),
            width=self.width,
            initial_indent=first,
            subsequent_indent=indent,
            break_on_hyphens=False,
        ) or [""]

    def write(self, *lines: str) -> None:
        """Each of *lines* (already laid out) on its own line, then flush."""
        for line in lines:
            self.out.write(self(line) + "\n")
        self.out.flush()

    def say(self, text: str, *, indent: str = "") -> None:
        """One paragraph, wrapped to the width."""
        self.write(*self.wrap(text, indent=indent))
