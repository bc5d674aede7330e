"""argparse types for the command line: a bad value is refused at parse time, in one line naming it."""

from __future__ import annotations

import argparse
import math

__all__ = ["non_negative_number", "positive_int", "positive_number"]


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
