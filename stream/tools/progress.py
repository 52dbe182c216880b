"""A one-line progress display on stderr for long commands (no dependency needed)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws ``label: done/total (pct) rate/s`` at most every ``interval`` seconds.

    On a terminal the line is redrawn in place; otherwise a line is printed each interval,
    so logs of a CI run stay readable.
    """

    def __init__(
        self, label: str, total: int | None = None, interval: float = 0.5,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.interval = interval
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.perf_counter()
        self._last = 0.0
        self._tty = self.stream.isatty()
        if not self._tty:
            self.interval = max(interval, 5.0)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(now)

    def close(self) -> None:
        self._draw(time.perf_counter())
        if self._tty:
            self.stream.write("\n")
        self.stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        text = f"{self.label}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} ({100 * self.done / self.total:.0f}%)"
        text += f" {self.done / elapsed:,.0f}/s"
        self.stream.write(("\r" + text + " " * 4) if self._tty else text + "\n")
        self.stream.flush()
