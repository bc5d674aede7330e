"""The live progress line of a fleet run.

On a terminal it is one line rewritten in place (``\\r``), cut to the
terminal's width by dropping its less important fields first; anywhere else
(a pipe, a file) it is a plain line every few seconds, of the same width,
without ``\\r`` and without ANSI escapes.  The last line it prints carries the
final totals of the run, the same figures as the summary.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from ._text import Text

if TYPE_CHECKING:
    from ._results import FleetResult

__all__ = ["ProgressPrinter"]

#: Snapshot fields: (worker, calls, ok, 401s, replayed after a 401, failed, token requests, token wait max).
Snapshot = tuple[Any, ...]


class ProgressPrinter:
    """Renders worker snapshots as one live line (``\\r`` on a TTY, a plain line every few seconds otherwise).

    Args:
        label: The run's name, first on the line (dropped first when space is short).
        duration: Seconds of load, for ``elapsed/duration``.
        out: Where to write (standard error by default).
        every: Seconds between lines when *out* is not a terminal.
        width: Columns to fit (default: the terminal's, measured at each line).
        ascii_only: ASCII only (default: whatever *out*'s encoding cannot show is replaced).
    """

    def __init__(
        self,
        label: str,
        duration: float,
        out: TextIO | None = None,
        *,
        every: float = 5.0,
        width: int | None = None,
        ascii_only: bool | None = None,
    ) -> None:
        self.label = label
        self.duration = duration
        self.out = out if out is not None else sys.stderr
        self.text = Text(self.out, width=width, ascii_only=ascii_only)
        self.tty = self.out.isatty()
        self.every = every if not self.tty else 0.25
        self.last_print = 0.0
        self.snapshots: dict[int, Snapshot] = {}
        self.history: list[tuple[float, int]] = []
        #: Length of the line now on screen (a TTY), to blank what a shorter one leaves.
        self.width = 0
        self.finished = False

    def update(self, snapshot: Snapshot) -> None:
        self.snapshots[int(snapshot[0])] = snapshot

    def render(self, elapsed: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.finished or (not force and now - self.last_print < self.every):
            return
        self.last_print = now
        snaps = list(self.snapshots.values())
        calls = sum(s[1] for s in snaps)
        self.history.append((now, calls))
        self.history = [h for h in self.history if now - h[0] <= max(3.0, 2.5 * self.every)]
        rate = 0.0
        if len(self.history) >= 2 and self.history[-1][0] > self.history[0][0]:
            rate = (self.history[-1][1] - self.history[0][1]) / (self.history[-1][0] - self.history[0][0])
        self._show(self.line(min(elapsed, self.duration), snaps, rate))

    def line(self, elapsed: float, snaps: list[Snapshot], rate: float) -> str:
        """The progress line for *snaps*, fitted to the width."""
        wait_max = max((s[7] for s in snaps), default=0.0)
        # (priority, separator before it, text): the lowest priorities go first when it is too long.
        fields = [
            (1, "", f"{self.label}:"),
            (9, " ", f"{elapsed:5.1f}/{self.duration:g} s"),
            (8, "  ", f"calls {sum(s[1] for s in snaps):,}"),
            (2, " ", f"({rate:,.0f}/s)"),
            (7, "  ", f"401s {sum(s[3] for s in snaps):,}"),
            (6, "  ", f"failed {sum(s[5] for s in snaps):,}"),
            (5, "  ", f"replayed {sum(s[4] for s in snaps):,}"),
            (3, "  ", f"token requests {sum(s[6] for s in snaps):,}"),
            (4, "  ", f"token wait max {_ms(wait_max * 1e3)} ms"),
        ]
        room = self.text.width - 1  # the last column would wrap on some terminals
        while True:
            line = "".join(sep + text for _, sep, text in fields).lstrip()
            if len(line) <= room or len(fields) == 1:
                return line[:room]
            fields.remove(min(fields, key=lambda f: f[0]))

    def note(self, text: str) -> None:
        """A line of its own above the progress line (an event: "revoked every token")."""
        if self.finished:
            return
        lines = self.text.wrap(text, indent="    ")
        if self.tty and self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.width = 0
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()
        self.last_print = 0.0  # the progress line again at once

    def _show(self, line: str) -> None:
        line = self.text(line)
        if self.tty:
            pad = max(0, min(self.width, self.text.width - 1) - len(line))
            self.width = len(line)
            self.out.write("\r" + line + " " * pad)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def finish(self, result: FleetResult | None = None) -> None:
        """End the line; with *result*, first show its final totals (what the summary will say)."""
        if self.finished:
            return
        if result is not None:
            snaps: list[Snapshot] = []
            for worker in result.workers:
                groups = worker.groups.values()
                snaps.append(
                    (
                        worker.index,
                        sum(g.calls for g in groups),
                        sum(g.ok for g in groups),
                        sum(g.unauthorized for g in groups),
                        sum(g.recovered_401 for g in groups),
                        sum(g.failed for g in groups),
                        sum(g.token_requests for g in groups),
                        max((g.token_wait_after_warm_up.max for g in groups), default=0.0),
                    )
                )
            calls = sum(s[1] for s in snaps)
            rate = calls / result.duration if result.duration > 0 else 0.0
            self._show(self.line(result.duration, snaps, rate))
        if self.tty and self.width:
            self.out.write("\n")
            self.out.flush()
        self.finished = True


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.3f}"
