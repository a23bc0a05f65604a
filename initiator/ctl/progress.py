"""A one-line progress bar on stderr, drawn only when stderr is a terminal, and byte-size formatting."""

from __future__ import annotations

import re
import sys
import time
from typing import TextIO

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``4096``, ``4k``, ``1M``, ``1MiB`` -> bytes (binary multiples, as dd and iscsi-perf count)."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 512, 4k, 1M)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def human_bytes(n: float) -> str:
    """``67108864`` -> ``64.0 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Redraws ``label 42% 27.0/64.0 MiB 812.3 MiB/s ETA 3s`` at most ten times a second."""

    def __init__(self, total: int, label: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = f"ETA {((self.total - self.done) / rate):.0f}s" if rate > 0 and self.done < self.total else ""
        width = 24
        filled = int(width * pct / 100)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {pct:3.0f}% {human_bytes(self.done)}/"
                          f"{human_bytes(self.total)} {human_bytes(rate)}/s {eta}   ")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """Draw the final state and end the line (nothing at all when disabled)."""
        if self.enabled:
            self._draw(time.monotonic())
        self.end_line()

    def end_line(self) -> None:
        """Move off the bar's line, once, if anything was drawn."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
