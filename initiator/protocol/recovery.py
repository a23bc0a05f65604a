"""ERL 0 recovery decisions, sans-IO: when to give up, when to try a login again, how fast to resume.

After a lost connection the session is reinstated (every connection dropped, a new leading login with the
same ISID and TSIH 0, unfinished commands sent again). What is decided here, with time passed in:
- `RecoveryPolicy.connection_lost`: reinstate, or give up on a target that keeps breaking the protocol
  (`MAX_VIOLATIONS` losses caused by protocol errors with no command completed in between);
- `Reinstatement`: the login attempts' schedule, backing off from 0.1 s to 8 s, until the replacement
  timeout runs out;
- `ramp`: after a reinstatement the commands in flight start at one and double with each batch of
  completions: sending everything at once lets a target interleave them so evenly that none finishes
  before the next reset;
- `Backoff`: the daemon's own schedule for logging in afresh after a session failed (1, 2, 4 ... 128 s, as
  OpenBSD's iscsid).
The asyncio driver is io.recovery.
"""

from __future__ import annotations

MAX_VIOLATIONS = 3
RAMP_START, RAMP_LIMIT = 1, 256


def ramp(in_flight_limit: int) -> int | None:
    """The next limit after a batch of completions; None once the ramp is over (no limit)."""
    return None if in_flight_limit >= RAMP_LIMIT else in_flight_limit * 2


class RecoveryPolicy:
    """What to do when one of the session's connections is lost."""

    __slots__ = ("violations",)

    def __init__(self) -> None:
        self.violations = 0  # losses caused by a protocol violation since a command last completed

    def connection_lost(self, violation: bool) -> bool:
        """True: reinstate the session; False: give up (relogging in cannot fix a target that breaks rules)."""
        if violation:
            self.violations += 1
        return self.violations <= MAX_VIOLATIONS

    def completed(self) -> None:
        """A command completed: the target works again."""
        self.violations = 0


class Reinstatement:
    """The login attempts after a loss: wait `delay`, log in by `login_deadline`, and on failure ask `failed`."""

    FIRST_DELAY, MAX_DELAY, MIN_DELAY = 0.1, 8.0, 0.05

    def __init__(self, now: float, replacement_timeout: float, login_timeout: float) -> None:
        self.deadline = now + replacement_timeout
        self.login_timeout = login_timeout
        self.delay = self.FIRST_DELAY

    def login_deadline(self, now: float) -> float:
        return min(self.deadline, now + self.login_timeout)

    def failed(self, now: float) -> bool:
        """A login attempt failed at ``now``. True: the replacement timeout leaves no room for another."""
        if now + self.delay >= self.deadline:
            return True
        self.delay = min(self.delay * 2, self.MAX_DELAY, max(self.MIN_DELAY, self.deadline - now))
        return False


class Backoff:
    """Exponential backoff: `delay` starts at ``first`` and doubles on each failure, up to ``limit``."""

    __slots__ = ("delay", "first", "limit")

    def __init__(self, first: float, limit: float) -> None:
        self.first, self.limit = first, limit
        self.delay = first

    def failed(self) -> None:
        self.delay = min(self.delay * 2, self.limit)

    def reset(self) -> None:
        self.delay = self.first
