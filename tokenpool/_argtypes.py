"""argparse types for the command line: a bad value is refused at parse time, in one line naming it."""

from __future__ import annotations

import argparse
import math
import os

__all__ = ["non_negative_number", "positive_int", "positive_number", "writable_file"]


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A positive, finite number (``nan``, ``inf``, ``0`` and negatives refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def non_negative_number(text: str) -> float:
    """Zero or a positive, finite number (where 0 means "off")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive finite number, got {text!r}")
    return value


def writable_file(text: str) -> str:
    """A file the command can write when it finishes: checked now, so that a long run is not lost."""
    path = os.path.abspath(os.path.expanduser(text))
    parent = os.path.dirname(path)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"no such directory: {parent!r}")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text!r} (permission denied)")
    return text
