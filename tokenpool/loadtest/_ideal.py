"""Ideal token requests: the figure every cell's token requests are compared with."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["ideal_requests"]


def ideal_requests(lifetimes: Sequence[tuple[float, float]], start: float, end: float, ratio: float) -> int:
    """``⌈∫ dt / (r·L(t))⌉`` over ``[start, end]``, ``L(t)`` the lifetime of the latest token sent before *t*.

    With a constant lifetime this is ``⌈T / (r·L)⌉``.  *lifetimes* holds
    ``(sent_at, expires_in)`` of every token the cell used, in any order.
    """
    if end <= start:
        return 1 if lifetimes else 0
    points = sorted(lifetimes)
    if not points:
        return 0
    total = 0.0
    for i, (sent_at, lifetime) in enumerate(points):
        seg_start = max(start, sent_at) if i else start
        seg_end = min(end, points[i + 1][0]) if i + 1 < len(points) else end
        if seg_end > seg_start and lifetime > 0:
            total += (seg_end - seg_start) / (ratio * lifetime)
    return max(1, math.ceil(total - 1e-9))
