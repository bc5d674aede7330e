"""The live progress line of a fleet run."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["ProgressPrinter"]


class ProgressPrinter:
    """Renders worker snapshots as one live line (``\\r`` on a TTY, a line every few seconds otherwise)."""

    def __init__(self, label: str, duration: float, out: TextIO | None = None, *, every: float = 5.0) -> None:
        self.label = label
        self.duration = duration
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty()
        self.every = every if not self.tty else 0.25
        self.last_print = 0.0
        self.snapshots: dict[int, tuple[Any, ...]] = {}
        self.history: list[tuple[float, int]] = []
        self.width = 0

    def update(self, snapshot: tuple[Any, ...]) -> None:
        self.snapshots[int(snapshot[0])] = snapshot

    def render(self, elapsed: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_print < self.every:
            return
        self.last_print = now
        snaps = list(self.snapshots.values())
        calls = sum(s[1] for s in snaps)
        self.history.append((now, calls))
        self.history = [h for h in self.history if now - h[0] <= max(3.0, 2.5 * self.every)]
        rate = 0.0
        if len(self.history) >= 2 and self.history[-1][0] > self.history[0][0]:
            rate = (self.history[-1][1] - self.history[0][1]) / (self.history[-1][0] - self.history[0][0])
        wait_max = max((s[7] for s in snaps), default=0.0)
        line = (
            f"{self.label}: {min(elapsed, self.duration):5.1f}/{self.duration:g} s  "
            f"calls {calls:,} ({rate:,.0f}/s)  401s {sum(s[3] for s in snaps)}  "
            f"recovered {sum(s[4] for s in snaps)}  failed {sum(s[5] for s in snaps)}  "
            f"token requests {sum(s[6] for s in snaps)}  max token wait {wait_max * 1e3:.1f} ms"
        )
        if self.tty:
            pad = max(0, self.width - len(line))
            self.width = len(line)
            self.out.write("\r" + line + " " * pad)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def finish(self) -> None:
        if self.tty and self.width:
            self.out.write("\n")
            self.out.flush()
