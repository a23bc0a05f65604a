"""Progress of a long proof run on a terminal: cycle N/M, the step the guest is at, and an ETA.

One status line on stderr, redrawn in place (``\\r`` and erase-line) when the step changes and at most
`REDRAW` times a second as console output arrives; the run's own messages (`say`) print above it. The
ETA is the mean of the finished cycles times those left, minus the time the current one has run; before
the first cycle ends it uses the caller's estimate, if any. Off (every call a no-op but `say`) when
stderr is not a terminal or under ``--json``, so logs and pipes get plain lines only.

`ConsoleSteps` is the text stream the harness writes the guest console to (``stream=``): it cuts the
output into lines, hands each to a classifier (console line -> step name or None) and, when asked, passes
the text on (``--console``).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import TextIO

from vm.console import LineAssembler

REDRAW = 2.0  # redraws a second at most, between step changes
_ERASE = "\r\x1b[K"


def clock_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else \
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """The status line of a run of ``total`` cycles (or boots: ``unit`` names them)."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool | None = None,
                 estimate: float | None = None, unit: str = "cycle",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.unit, self.estimate, self.clock = total, unit, estimate, clock
        self.current = 0
        self.step_name = "starting"
        self.durations: list[float] = []
        self.started = self.clock()
        self.cycle_started = self.started
        self._drawn_at = float("-inf")
        self._shown = False

    # ------------------------------------------------------------------------------------------ events
    def begin(self, n: int | None = None) -> None:
        """Cycle N (default: the next one) starts."""
        self.current = n if n is not None else self.current + 1
        self.cycle_started, self.step_name = self.clock(), "boot"
        self.draw(force=True)

    def step(self, name: str) -> None:
        if name != self.step_name:
            self.step_name = name
            self.draw(force=True)
        else:
            self.draw()

    def end(self, n: int | None = None) -> None:
        """Cycle N (default: the current one) is over; the host checks the LUN next."""
        self.durations.append(self.clock() - self.cycle_started)
        self.step_name = "checking the LUN"
        self.draw(force=True)

    def say(self, text: str) -> None:
        """A message of the run, on its own line above the status line."""
        if self._shown:
            self.stream.write(_ERASE)
        self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = False
        self.draw(force=True)

    def close(self) -> None:
        if self._shown:
            self.stream.write(_ERASE)
            self.stream.flush()
            self._shown = False
        self.enabled = False

    # ------------------------------------------------------------------------------------------ drawing
    def eta(self, now: float) -> float | None:
        per = sum(self.durations) / len(self.durations) if self.durations else self.estimate
        if per is None or self.current == 0:
            return None
        running = now - self.cycle_started if len(self.durations) < self.current else 0.0
        left = self.total - len(self.durations)
        return max(0.0, left * per - running)

    def line(self, now: float) -> str:
        n = max(self.current, 1)
        eta = self.eta(now)
        where = f"{self.unit} {n}/{self.total}" if n <= self.total else f"extra boot {n - self.total}"
        parts = [where, self.step_name,
                 f"{clock_text(now - self.cycle_started)} in this {self.unit}",
                 f"ETA {clock_text(eta)}" if eta is not None else f"ETA after {self.unit} 1"]
        return " · ".join(parts)

    def draw(self, force: bool = False) -> None:
        if not self.enabled or self.current == 0:
            return
        now = self.clock()
        if not force and now - self._drawn_at < 1.0 / REDRAW:
            return
        self._drawn_at = now
        self.stream.write(_ERASE + self.line(now))
        self.stream.flush()
        self._shown = True


# What a guest's console says about where its boot is, for the status line only (the verdicts read the
# timeline): the busybox rc's step markers and systemd's journal lines alike.
STEPS = (
    (re.compile(r"step uiscsid begin|Starting .*uiscsid"), "starting uiscsid"),
    (re.compile(r"step reload begin|Starting .*uiscsi-reload|log in to the iSCSI targets"), "logging in"),
    (re.compile(r"step fsck-net begin|Starting .*systemd-fsck@|File System Check on"), "fsck"),
    (re.compile(r"step mount-net begin|Mounting /|systemd\[1\]: Mounting "), "mount"),
    (re.compile(r"writer: \d+\.\d+ start|proof writer"), "services running"),
    (re.compile(r"rc: \S+ shutdown begin|shutdown-begin|Stopping .*proof writer"), "shutting down"),
    (re.compile(r"step umount-net begin|Unmounting /"), "unmounting"),
    (re.compile(r"step uiscsid-stop begin|uiscsi-logout|log out of the iSCSI"), "logging out"),
    (re.compile(r"systemd-shutdown\[1\]"), "final kill and unmount"),
    (re.compile(r"reboot: (?:Power down|Restarting)|bootkit-vm\[\w+\] \S+ poweroff"), "powering off"),
)


def console_step(line: str) -> str | None:
    """The step a console line shows the guest at, or None."""
    return next((name for pattern, name in STEPS if pattern.search(line)), None)


class ConsoleSteps:
    """A write-only text stream for the guest console: each line goes to ``classify``; a step it names
    becomes the progress's current step. ``echo``: where to copy the console text (``--console``)."""

    def __init__(self, progress: Progress, classify: Callable[[str], str | None] = console_step,
                 echo: TextIO | None = None) -> None:
        self.progress, self.classify, self.echo = progress, classify, echo
        self._lines = LineAssembler()

    def write(self, text: str) -> int:
        if self.echo is not None:
            if self.progress._shown:
                self.echo.write(_ERASE)
                self.progress._shown = False
            self.echo.write(text)
        for line in self._lines.feed(text.encode()):
            name = self.classify(line)
            if name:
                self.progress.step(name)
            else:
                self.progress.draw()
        return len(text)

    def flush(self) -> None:
        if self.echo is not None:
            self.echo.flush()

    def isatty(self) -> bool:
        return False
