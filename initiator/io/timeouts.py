"""Command timeouts in asyncio: the driver of `protocol.escalation`'s ladder for one session.

`CommandWatch` owns the clock: it sleeps until the escalation's next deadline (or until a TMF answer moved
things), hands it the commands on the wire, each stamped by the session with its send time
(``Task.sent_at``), and carries out what it decides:
- `Abort` and `ResetLun`: an ABORT TASK on the command's connection, a LOGICAL UNIT RESET on any; their
  answers go back to the escalation, which may decide the next step at once;
- `Retry`: the commands go back to the front of the session's queue under new ITTs;
- `Reinstate`: every connection is aborted, so io.recovery reinstates the session and resends everything;
- `Fail`: that command alone is given up (the target is asked to abort it) and its caller gets
  CommandTimeout, which the NBD bridge turns into EIO for that one request.
Each step is logged once, at WARNING (the EIO at ERROR), naming the target and the command: opcode,
LBA and length, ITT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from ..errors import CommandTimeout, ConnectionLost
from ..protocol import pdu
from ..protocol.escalation import (
    Abort,
    Action,
    Counts,
    Escalation,
    Fail,
    Reinstate,
    ResetLun,
    Retry,
    Timeouts,
)
from ..protocol.session import SessionCore, Task
from ..protocol.session_state import SessionState
from ..scsi.describe import describe
from ..scsi.lun import lun_from_wire
from .link import Link
from .params import SessionParams

log = logging.getLogger("initiator.timeouts")


class WatchHost(Protocol):
    """What `CommandWatch` needs from its session (`io.session.Session`)."""

    params: SessionParams
    core: SessionCore | None
    links: dict[int, Link]

    @property
    def state(self) -> SessionState: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task: ...
    def send_again(self, tasks: list[Task]) -> None: ...
    def fail_one(self, task: Task, error: CommandTimeout) -> None: ...


def timeouts_of(p: SessionParams) -> Timeouts:
    return Timeouts(p.command_timeout, p.abort_timeout, p.lu_reset_timeout, p.replacement_timeout)


class CommandWatch:
    """Command timeouts and their escalation for one session; `start` it once the session is logged in."""

    def __init__(self, host: WatchHost, counts: Counts | None = None) -> None:
        self.host = host
        self.escalation = Escalation(timeouts_of(host.params), counts)
        self.where = f"target {host.params.target_name} at {host.params.portal}"
        self._kick = asyncio.Event()
        self._aborts: dict[Task, Task] = {}        # command -> its ABORT TASK request, while unanswered
        self._resets: dict[int, Task] = {}         # wire LUN -> its LOGICAL UNIT RESET, while unanswered

    @property
    def counts(self) -> Counts:
        return self.escalation.counts

    def start(self) -> None:
        self.host.spawn(self._run())

    # ------------------------------------------------------------------ the clock
    def _in_flight(self) -> dict[Task, tuple[int, float]]:
        core = self.host.core
        if core is None or self.host.state is not SessionState.LOGGED_IN:
            return {}
        return {t: (t.lun, t.sent_at) for t in core.tasks.values() if t.kind == "scsi" and t.conn is not None}

    def _alive(self, t: Task) -> bool:
        core = self.host.core
        return core is not None and core.tasks.get(t.itt) is t

    async def _run(self) -> None:
        esc, idle = self.escalation, self.escalation.t.command
        while True:
            now = time.monotonic()
            in_flight = self._in_flight()
            self._do(esc.handle_timer(now, in_flight, self._alive), now)
            deadline = esc.next_deadline(self._in_flight())
            # A command sent from now on is due at now + command timeout at the earliest, so an idle wait of
            # that long misses nothing; TMF answers that set a nearer deadline kick the loop.
            self._kick.clear()
            wait = idle if deadline is None else max(0.0, deadline - now) + 0.001
            try:
                async with asyncio.timeout(wait):
                    await self._kick.wait()
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ hooks from the session
    def reinstating(self) -> None:
        """The session drops its connections to log in again: pending TMFs die with them."""
        self._aborts.clear()
        self._resets.clear()
        self.escalation.reinstating(time.monotonic())

    def reinstated(self) -> None:
        self.escalation.reinstated()
        self._kick.set()

    # ------------------------------------------------------------------ actions
    def _do(self, actions: list[Action], now: float) -> None:
        for a in actions:
            if isinstance(a, Abort):
                self._abort(a.key, a.waited)
            elif isinstance(a, ResetLun):
                self._reset(a, now)
            elif isinstance(a, Retry):
                self._retry(a)
            elif isinstance(a, Reinstate):
                self._reinstate(a)
            elif isinstance(a, Fail):
                self._fail(a)
        if actions:
            self._kick.set()

    def _name(self, t: Task) -> str:
        return f"{describe(t.cdb)} (LUN {lun_from_wire(t.lun)}, ITT 0x{t.itt:08x})"

    def _tmf(self, function: int, lun: int, conn, rtt: int = pdu.RESERVED_TAG, refcmdsn: int = 0) -> Task | None:
        core = self.host.core
        link = self.host.links.get(conn.cid) if conn is not None else None
        if core is None or link is None:
            return None
        t = core.request("tmf", pdu.TaskMgmtRequest(function=function, lun=lun, rtt=rtt, refcmdsn=refcmdsn))
        t.waiter = asyncio.get_running_loop().create_future()
        link.send(core.issue_request(t, conn))
        return t

    def _abort(self, t: Task, waited: float) -> None:
        log.warning("%s: %s unanswered for %.1f s: ABORT TASK", self.where, self._name(t), waited)
        tmf = self._tmf(pdu.TMF.ABORT_TASK, t.lun, t.conn, rtt=t.itt, refcmdsn=t.cmdsn)
        if tmf is None:
            self._do(self.escalation.abort_answered(t, None, time.monotonic()), time.monotonic())
            return
        self._aborts[t] = tmf
        tmf.waiter.add_done_callback(lambda _: self._abort_answered(t, tmf))

    def _abort_answered(self, t: Task, tmf: Task) -> None:
        if self._aborts.get(t) is not tmf:
            return                  # given up on (a reinstatement, or the escalation moved on)
        del self._aborts[t]
        now = time.monotonic()
        if not self._alive(t):      # it completed after all: its answer was on its way
            return
        self._do(self.escalation.abort_answered(t, _response(tmf), now), now)

    def _forget_abort(self, t: Task) -> None:
        tmf = self._aborts.pop(t, None)
        if tmf is not None and self.host.core is not None:
            self.host.core.forget(tmf)

    def _reset(self, a: ResetLun, now: float) -> None:
        t = a.key
        self._forget_abort(t)
        lun = lun_from_wire(a.lun)
        log.warning("%s: %s: %s: LOGICAL UNIT RESET of LUN %d", self.where, self._name(t), a.why, lun)
        core = self.host.core
        conn = core.pick_connection() if core is not None else None
        tmf = self._tmf(pdu.TMF.LOGICAL_UNIT_RESET, a.lun, conn)
        if tmf is None:
            self._do(self.escalation.reset_answered(a.lun, None, now, self._in_flight()), now)
            return
        self._resets[a.lun] = tmf
        tmf.waiter.add_done_callback(lambda _: self._reset_answered(a.lun, tmf))

    def _reset_answered(self, lun: int, tmf: Task) -> None:
        if self._resets.get(lun) is not tmf:
            return
        del self._resets[lun]
        now = time.monotonic()
        self._do(self.escalation.reset_answered(lun, _response(tmf), now, self._in_flight()), now)

    def _retry(self, a: Retry) -> None:
        tasks = [t for t in a.keys if self._alive(t)]
        if not tasks:
            return
        for t in tasks:             # an abort still out for one of them is moot: the target ended it
            self._forget_abort(t)
        if a.after == "abort":
            log.warning("%s: %s aborted (\"Function complete\"): sending it again under a new ITT", self.where,
                        self._name(tasks[0]))
        else:
            lun = lun_from_wire(tasks[0].lun)
            log.warning("%s: LUN %d reset (\"Function complete\"): sending its %d command(s) again under new "
                        "ITTs: %s",
                        self.where, lun, len(tasks), ", ".join(self._name(t) for t in tasks[:4])
                        + (" ..." if len(tasks) > 4 else ""))
        self.host.send_again(tasks)

    def _reinstate(self, a: Reinstate) -> None:
        t = a.key
        self._forget_abort(t)
        if self.host.state is not SessionState.LOGGED_IN:
            log.warning("%s: %s: %s: the reinstatement under way serves it", self.where, self._name(t), a.why)
            return
        # io.recovery logs the reinstatement once, with this reason
        error = ConnectionLost(f"{self._name(t)}: {a.why}: reinstating the session")
        for link in list(self.host.links.values()):
            link.error = link.error or error        # set first: Link.abort logs only a reason of its own
            link.abort(error)

    def _fail(self, a: Fail) -> None:
        t = a.key
        if not self._alive(t):
            return
        self._forget_abort(t)
        bound = self.escalation.t.replacement
        log.error("%s: %s still unanswered %.0f s after the session was reinstated for it: failing it alone "
                  "(EIO); the session goes on", self.where, self._name(t), a.waited)
        self.host.fail_one(t, CommandTimeout(
            f"{describe(t.cdb)}: no answer after ABORT TASK, LOGICAL UNIT RESET and a session reinstatement "
            f"(replacement_timeout {bound:g} s)"))


def _response(tmf: Task) -> int | None:
    """A TMF request's response code; None when the request failed (its connection was lost)."""
    if tmf.error is not None or tmf.result is None:
        return None
    return tmf.result.response
