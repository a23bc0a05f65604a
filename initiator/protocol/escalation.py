"""Command timeouts and their escalation, sans-IO: time in; aborts, resets, retries and failures out.

A SCSI command the target leaves unanswered for ``command`` seconds (while the connection is alive: NOPs
answered, other commands done) climbs a ladder, as the Linux SCSI error handler does over open-iscsi.
Each rung is tried once per command and the ladder never goes down:

1. ABORT TASK for it, answered within ``abort`` s. "Function complete": the target dropped the task, so
   the command is sent again under a new ITT and gets ``command`` s more. Any other answer, no answer,
   or a second timeout: rung 2. ("Task does not exist" while we hold no response is no proof the task is
   gone: tgtd gives it for a command stuck behind a CmdSN hole or waiting for its data, and open-iscsi
   escalates on it too.)
2. LOGICAL UNIT RESET of its LUN (one reset serves every command of that LUN that needs one), answered
   within ``lu_reset`` s. "Function complete": the reset ended every task of the LUN at the target, so
   every command of that LUN on the wire is sent again under a new ITT; this one gets ``command`` s more.
   Any other answer, no answer, or another timeout: rung 3.
3. Session reinstatement: every connection dropped, a new login (same ISID), every unfinished command
   sent again, as after any lost connection (io.recovery).
4. ``replacement`` s after rung 3 began, a command still unanswered fails alone: the kernel gets EIO for
   that one request; the session and the other commands go on.

From the first send to EIO a command waits at most `Timeouts.bound` = 3 x command + abort + lu_reset +
replacement seconds (255 s with the defaults, which are Linux's and open-iscsi's).

The driver (io.timeouts) stamps each command's send time, calls `handle_timer(now, in_flight, alive)`
when `next_deadline(in_flight)` comes, reports TMF answers (`abort_answered`, `reset_answered`) and
reinstatements (`reinstating`, `reinstated`), and carries out the actions: `Abort`, `ResetLun`, `Retry`,
`Reinstate`, `Fail`. ``in_flight`` maps each command on the wire to (LUN, when it was sent); ``alive``
says whether a command is still unfinished. `counts` holds one counter per kind of event.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, fields

TMF_COMPLETE = 0


@dataclass(frozen=True)
class Timeouts:
    """Seconds; ``command`` 0 turns command timeouts off."""

    command: float = 30.0
    abort: float = 15.0
    lu_reset: float = 30.0
    replacement: float = 120.0

    @property
    def enabled(self) -> bool:
        return self.command > 0

    @property
    def bound(self) -> float:
        """The longest a command can wait, from its first send to its EIO."""
        return 3 * self.command + self.abort + self.lu_reset + self.replacement


class Rung(enum.Enum):
    ABORTING = "abort"          # ABORT TASK out
    ABORTED = "retried after abort"
    RESETTING = "lu-reset"      # LOGICAL UNIT RESET of its LUN out
    RESET = "retried after lu-reset"
    REINSTATING = "reinstated"  # the session was reinstated for it; EIO at its deadline


@dataclass(frozen=True)
class Abort:
    """Send ABORT TASK for ``key``; it has waited ``waited`` s."""

    key: Hashable
    waited: float


@dataclass(frozen=True)
class ResetLun:
    """Send LOGICAL UNIT RESET for ``lun``, on behalf of ``key``; ``why`` says what failed before it."""

    lun: int
    key: Hashable
    why: str


@dataclass(frozen=True)
class Retry:
    """The target dropped these commands (``after`` "abort" or "lu-reset"): send each again, new ITT."""

    keys: tuple
    after: str


@dataclass(frozen=True)
class Reinstate:
    """Reinstate the session (drop every connection; recovery logs in again and resends everything)."""

    key: Hashable
    why: str


@dataclass(frozen=True)
class Fail:
    """Fail ``key`` alone (EIO): unanswered ``waited`` s after the reinstatement made for it began."""

    key: Hashable
    waited: float


Action = Abort | ResetLun | Retry | Reinstate | Fail


@dataclass
class Counts:
    """One counter per kind of event, as ``uiscsictl show --json`` prints them."""

    command_timeouts: int = 0   # a command unanswered for the command timeout (each rung's timeout counts)
    aborts: int = 0             # ABORT TASK sent
    aborts_complete: int = 0    # ... answered "Function complete"
    lu_resets: int = 0          # LOGICAL UNIT RESET sent
    lu_resets_complete: int = 0
    reinstatements: int = 0     # session reinstatements this escalation asked for
    retries: int = 0            # commands sent again after an abort or a LU reset
    failed: int = 0             # commands failed alone (EIO) after the reinstatement

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class _Climb:
    lun: int
    rung: Rung
    deadline: float = 0.0      # ABORTING: the abort's answer; REINSTATING: the EIO


class Escalation:
    """The ladder for every command of one session."""

    def __init__(self, timeouts: Timeouts, counts: Counts | None = None) -> None:
        self.t = timeouts
        self.counts = counts if counts is not None else Counts()
        self._climbs: dict[Hashable, _Climb] = {}
        self._resets: dict[int, float] = {}          # LUN -> when its reset's answer is overdue
        self._reinstating_since: float | None = None

    def rung(self, key: Hashable) -> Rung | None:
        c = self._climbs.get(key)
        return c.rung if c else None

    # ------------------------------------------------------------------ time
    def handle_timer(self, now: float, in_flight: Mapping[Hashable, tuple[int, float]],
                     alive: Callable[[Hashable], bool]) -> list[Action]:
        """What is due at ``now``."""
        for key in [k for k in self._climbs if not alive(k)]:
            del self._climbs[key]
        actions: list[Action] = []
        for lun, due in list(self._resets.items()):
            if now >= due:
                del self._resets[lun]
                keys = [k for k, c in self._climbs.items() if c.lun == lun and c.rung is Rung.RESETTING]
                actions += self._reinstate(keys, now, f"no answer to the LU reset within {self.t.lu_reset:g} s")
        command = self.t.command
        failed: set[Hashable] = set()      # failed now: the driver forgets them; no new climb meanwhile
        for key, c in list(self._climbs.items()):
            if c.rung is Rung.ABORTING and now >= c.deadline:
                actions += self._reset(key, c, now, f"no answer to the ABORT TASK within {self.t.abort:g} s")
            elif c.rung is Rung.REINSTATING and now >= c.deadline:
                del self._climbs[key]
                failed.add(key)
                self.counts.failed += 1
                actions.append(Fail(key, now - c.deadline + self.t.replacement))
            elif c.rung in (Rung.ABORTED, Rung.RESET) and key in in_flight and now - in_flight[key][1] >= command:
                self.counts.command_timeouts += 1
                if c.rung is Rung.ABORTED:
                    actions += self._reset(key, c, now, f"unanswered {command:g} s after the abort")
                else:
                    actions += self._reinstate([key], now, f"unanswered {command:g} s after the LU reset")
        for key, (lun, sent) in in_flight.items():
            if key not in self._climbs and key not in failed and now - sent >= command:
                self.counts.command_timeouts += 1
                self.counts.aborts += 1
                self._climbs[key] = _Climb(lun, Rung.ABORTING, now + self.t.abort)
                actions.append(Abort(key, now - sent))
        return actions

    def next_deadline(self, in_flight: Mapping[Hashable, tuple[int, float]]) -> float | None:
        """When `handle_timer` next has something to do (None: nothing is on the wire or climbing)."""
        climbs, command = self._climbs, self.t.command
        times = [sent + command for key, (_, sent) in in_flight.items()
                 if key not in climbs or climbs[key].rung in (Rung.ABORTED, Rung.RESET)]
        times += [c.deadline for c in climbs.values() if c.rung in (Rung.ABORTING, Rung.REINSTATING)]
        times += self._resets.values()
        return min(times, default=None)

    # ------------------------------------------------------------------ answers
    def abort_answered(self, key: Hashable, response: int | None, now: float) -> list[Action]:
        """The ABORT TASK for ``key`` got ``response`` (None: the request itself failed)."""
        c = self._climbs.get(key)
        if c is None or c.rung is not Rung.ABORTING:
            return []
        if response == TMF_COMPLETE:
            c.rung = Rung.ABORTED
            self.counts.aborts_complete += 1
            self.counts.retries += 1
            return [Retry((key,), "abort")]
        why = "the ABORT TASK failed" if response is None else f"the ABORT TASK was answered {tmf_answer(response)}"
        return self._reset(key, c, now, why)

    def reset_answered(self, lun: int, response: int | None, now: float,
                       in_flight: Mapping[Hashable, tuple[int, float]]) -> list[Action]:
        """The LOGICAL UNIT RESET of ``lun`` got ``response`` (None: the request itself failed)."""
        if self._resets.pop(lun, None) is None:
            return []
        waiting = [k for k, c in self._climbs.items() if c.lun == lun and c.rung is Rung.RESETTING]
        if response != TMF_COMPLETE:
            why = "the LU reset failed" if response is None else f"the LU reset was answered {tmf_answer(response)}"
            return self._reinstate(waiting, now, why)
        self.counts.lu_resets_complete += 1
        for c in self._climbs.values():
            if c.lun == lun and c.rung in (Rung.RESETTING, Rung.ABORTING):
                c.rung = Rung.RESET if c.rung is Rung.RESETTING else Rung.ABORTED
        again = tuple(k for k, (klun, _) in in_flight.items() if klun == lun)
        self.counts.retries += len(again)
        return [Retry(again, "lu-reset")] if again else []

    # ------------------------------------------------------------------ reinstatements
    def reinstating(self, now: float) -> None:
        """The session drops its connections to log in again (for whatever cause): TMFs in flight are
        lost with them; what waited on one moves up as if it had been answered, and is resent anyway."""
        self._resets.clear()
        for c in self._climbs.values():
            if c.rung is Rung.ABORTING:
                c.rung = Rung.ABORTED
            elif c.rung is Rung.RESETTING:
                c.rung = Rung.RESET
        if self._reinstating_since is None:
            self._reinstating_since = now

    def reinstated(self) -> None:
        """The new login succeeded."""
        self._reinstating_since = None

    def _reset(self, key: Hashable, c: _Climb, now: float, why: str) -> list[Action]:
        c.rung = Rung.RESETTING
        if c.lun in self._resets:
            return []           # a reset of that LUN is out already: it serves this command too
        self._resets[c.lun] = now + self.t.lu_reset
        self.counts.lu_resets += 1
        return [ResetLun(c.lun, key, why)]

    def _reinstate(self, keys: list[Hashable], now: float, why: str) -> list[Action]:
        if not keys:
            return []
        since = self._reinstating_since if self._reinstating_since is not None else now
        for key in keys:
            c = self._climbs[key]
            c.rung, c.deadline = Rung.REINSTATING, since + self.t.replacement
        if self._reinstating_since is not None:
            return []           # a reinstatement is under way: it serves these commands too
        self._reinstating_since = now
        self.counts.reinstatements += 1
        return [Reinstate(keys[0], why)]


TMF_ANSWERS = {0: "Function complete", 1: "Task does not exist", 2: "LUN does not exist",
               3: "Task still allegiant", 4: "Task allegiance reassignment not supported",
               5: "Task management function not supported", 6: "Function authorization failed",
               255: "Function rejected"}


def tmf_answer(response: int) -> str:
    """RFC 7143 11.6.1's name for a Task Management response code, quoted."""
    return f'"{TMF_ANSWERS.get(response, f"code {response}")}"'
