"""How ``--timeout T`` bounds a one-shot tool: the whole run, its cleanup included, whatever the target does.

- The query tools (discover, inquiry, capacity, luns) have a fixed amount of work: T bounds the whole
  process, counted from its start (``exec``), so Python's own start-up is inside it. Each wait on the
  target (connect, login, every command) gets what is left of T.
- cp and perf run as long as their data takes: each wait on the target gets T.
- After a wait timed out, the cleanup (the ABORT TASK already sent, the logout, closing the connections)
  gets at most `CLEANUP_GRACE` seconds more; after a success, the logout gets what is left of T (at most
  `LOGOUT_MAX`), then the same grace to close.
- A watchdog thread is the last resort for the query tools: if the process is still alive
  `WATCHDOG_SLACK` seconds after T (a resolver thread that never returns keeps asyncio's shutdown
  waiting, say), it prints one line and exits with status 1.

So a query tool exits within T + 1 s of its start, and cp or perf within T + 1 s of the target's last
answer, with one line on stderr and a non-zero status.
"""

from __future__ import annotations

import os
import sys
import threading
import time

CLEANUP_GRACE = 0.5    # seconds for logout + close once a wait has timed out
LOGOUT_MAX = 5.0       # a logout after a successful run waits at most this long (and never past T)
WATCHDOG_SLACK = 0.85  # the watchdog fires this long after T; CLEANUP_GRACE fits inside it


def process_age() -> float:
    """Seconds since this process started (0 when /proc cannot tell), from the kernel's own record."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        start_ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class Budget:
    """The time a tool may still spend on the target. ``whole_run``: T counts from the process start."""

    def __init__(self, seconds: float, whole_run: bool = True, started: float | None = None) -> None:
        self.seconds = seconds
        self.whole_run = whole_run
        now = time.monotonic()
        self.deadline = (now - process_age() if started is None else started) + seconds

    def wait(self) -> float:
        """How long the next wait on the target may last."""
        if not self.whole_run:
            return self.seconds
        return max(0.0, self.deadline - time.monotonic())

    def logout(self, after_timeout: bool) -> float:
        """How long the logout may wait for its answer."""
        if after_timeout:
            return CLEANUP_GRACE / 2
        return max(CLEANUP_GRACE / 2, min(LOGOUT_MAX, self.wait()))

    def describe(self) -> str:
        """The bound as the user set it, for messages."""
        return f"{self.seconds:g} s"


def start_watchdog(budget: Budget, prog: str) -> threading.Thread:
    """Exit the process (status 1, one line) if it outlives ``budget`` by WATCHDOG_SLACK seconds."""
    def guard() -> None:
        time.sleep(max(0.0, budget.deadline + WATCHDOG_SLACK - time.monotonic()))
        sys.stderr.write(f"{prog}: gave up: the run did not end within --timeout {budget.describe()}\n")
        sys.stderr.flush()
        os._exit(1)

    t = threading.Thread(target=guard, name="timeout-watchdog", daemon=True)
    t.start()
    return t
