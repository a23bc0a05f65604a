"""What the I/O layer does around the sans-IO session core, without I/O: the PDU and login targets' session.

`start_session` builds a logged-in session the way io.session.Session does (the core `core_class` picks
for what login negotiated: `SessionCore`, or `Erl1Core` at ErrorRecoveryLevel 1; a `Framer` per connection
wired as io.link.Link.enter_ffp wires it) and puts the standard commands in flight. `SessionDriver` then
feeds it reads and, after each one, does what the asyncio side does between reads, with a clock of its own
that moves by a fixed step per read:

- io.session.Session.link_received: stamp ERL 1 SNACKs (`Erl1Core.stamp`), take the output, wake finished
  tasks, queue UNIT ATTENTION retries and issue what waits while the CmdSN window is open;
- io.session.Session._snack_due: an unanswered SNACK past its time drops the connection;
- io.timeouts.CommandWatch: `Escalation.handle_timer` with the commands on the wire, TMF answers to
  `abort_answered` / `reset_answered`, and each action carried out on the core as CommandWatch and the
  session carry it out (ABORT TASK, LOGICAL UNIT RESET, reassign and send again, reinstate, fail one);
- io.recovery: a dropped connection (a clean protocol error, an announced drop, a reinstatement) is a
  session reinstatement: `unfinished()`, a new connection, `renumber`, the unfinished commands sent again,
  at most `MAX_LOGINS` times per input; then the error ends the input.
Logins themselves are the login target's business: a reinstatement here is a login that succeeds at once.
"""

from __future__ import annotations

from collections import deque

from .. import project as p

LUN = 1
READ_LEN = 16384
WRITE_LEN = 16384
INQUIRY_LEN = 96
WINDOW = 64                  # MaxCmdSN - ExpCmdSN + 1 after each login
MAX_LOGINS = 2               # reinstatements per input, after the first login
TIMEOUTS = p.Timeouts()      # uiscsid's defaults: 30 s command, 15 s abort, 30 s LU reset, 120 s replacement
_WRITE_DATA = bytes(range(256)) * (WRITE_LEN // 256)
RECOVERABLE = (p.TargetProtocolError, p.ConnectionLost)  # what makes io.link drop a connection and recover


def new_session(neg: p.Negotiated, cmdsn: int = 1, expcmdsn: int = 1, maxcmdsn: int = WINDOW,
                expstatsn: int = 1) -> tuple[p.SessionCore, p.Connection]:
    """A session core for ``neg`` with one connection in the full-feature phase, as the session builds them."""
    core = p.core_class(neg)(neg, cmdsn, expcmdsn, maxcmdsn)
    return core, attach(core, 0, neg, expstatsn)


def attach(core: p.SessionCore, cid: int, neg: p.Negotiated, expstatsn: int) -> p.Connection:
    conn = p.Connection(cid)
    conn.fire(p.ConnEvent.CONNECT)
    conn.fire(p.ConnEvent.CONNECTED)
    conn.logged_in(neg, expstatsn)
    core.attach(conn)
    return conn


def session_framer(core: p.SessionCore, conn: p.Connection) -> p.Framer:
    """The receive side of a logged-in connection, wired as Link.enter_ffp wires it."""
    framer = p.Framer(lambda b, a, d: core.receive(conn, b, a, d), core.data_in_sink, conn.max_recv_dsl,
                      conn.header_digest, conn.data_digest)
    framer.on_bad_data = core.digest_error_handler(conn)
    return framer


def start_session(neg: p.Negotiated, cmdsn: int = 1, expcmdsn: int = 1, maxcmdsn: int = WINDOW,
                  expstatsn: int = 1, lun: int = LUN, logout: bool = True, text: bool = True,
                  ) -> tuple[p.SessionCore, p.Connection, list]:
    """A logged-in session with the standard commands in flight; returns (core, connection, bytes sent).

    ITTs are 1..8 in this order: a read, a write, an INQUIRY, a NOP, a read the caller forgot, an ABORT
    TASK of that read, a SendTargets text (registered but neither sent nor awaited when ``text`` is
    False: tgtd drops the connection on a Text Request in a normal session) and (``logout``) a Logout.
    Capture (tests/fuzz/capture.py) runs the same session against real targets, so recorded answers fit.
    """
    cdb = p.cdb
    core, conn = new_session(neg, cmdsn, expcmdsn, maxcmdsn, expstatsn)
    sent: list = []
    sent += core.issue(core.scsi_task(lun, cdb.read10(0, READ_LEN // 512), read_len=READ_LEN), conn)
    sent += core.issue(core.scsi_task(lun, cdb.write10(64, WRITE_LEN // 512), data_out=_WRITE_DATA), conn)
    sent += core.issue(core.scsi_task(lun, cdb.inquiry(INQUIRY_LEN), read_len=INQUIRY_LEN), conn)
    sent += core.issue_request(core.request("nop", p.pdu.NopOut(data=b"bootkit!")), conn)
    gone = core.scsi_task(lun, cdb.read10(128, 8), read_len=4096)
    sent += core.issue(gone, conn)
    core.forget(gone)
    tmf = p.pdu.TaskMgmtRequest(function=p.pdu.TMF.ABORT_TASK, lun=gone.lun, rtt=gone.itt)
    sent += core.issue_request(core.request("tmf", tmf), conn)
    text_req = p.pdu.TextRequest(data=p.encode_text([("SendTargets", "All")]))
    send_targets = core.request("text", text_req, immediate=False)  # as Session.send_targets
    if text:
        sent += core.issue_request(send_targets, conn)
    else:
        core.forget(send_targets)
    if logout:
        sent += core.issue_request(core.request("logout", p.pdu.LogoutRequest(cid=conn.cid)), conn)
    return core, conn, sent


def _response(tmf) -> int | None:
    """A TMF request's response code; None when the request failed (as io.timeouts reads it)."""
    if tmf.error is not None or tmf.result is None:
        return None
    return tmf.result.response


class SessionDriver:
    """One session fed by reads, driven between reads as the asyncio side drives it (see the module doc)."""

    def __init__(self, core: p.SessionCore, conn: p.Connection, step: float = 0.0, escalate: bool = False,
                 max_logins: int = MAX_LOGINS) -> None:
        self.core, self.conn, self.neg = core, conn, core.neg
        self.framer = session_framer(core, conn)
        self.now = 0.0
        self.step = step
        self.esc = p.Escalation(TIMEOUTS) if escalate else None
        self.pending: deque = deque()
        self.aborts: dict = {}      # command -> its ABORT TASK request
        self.resets: dict = {}      # wire LUN -> its LOGICAL UNIT RESET request
        self.logins = 0
        self.max_logins = max_logins
        self.sent: list = []        # what went to the target (the capture sends it)

    # ------------------------------------------------------------------ reads
    def feed(self, piece: bytes) -> None:
        """One read: into the framer, then what the session and its watch do after it."""
        try:
            self.framer.feed(piece)
            self.after_read()
        except RECOVERABLE as e:
            self.reinstate(e)

    def after_read(self) -> None:
        core = self.core
        if core.unstamped:
            core.stamp(self.now)
        self.flush()
        done, core.done = core.done, []
        for t in done:
            self._answered(t)
        events, core.events = core.events, []
        if any(isinstance(ev, p.ConnectionDropped) for ev in events):
            raise p.ConnectionLost("the target announced it drops the connection")
        if core.retry:
            self.pending.extendleft(reversed(core.retry))
            core.retry.clear()
        self.pump()
        self.now += self.step
        due = core.next_deadline() if isinstance(core, p.Erl1Core) else None
        if due is not None and due <= self.now and core.handle_timer(self.now):
            raise p.ConnectionLost("ERL1: a SNACK went unanswered")
        if self.esc is not None:
            self.do(self.esc.handle_timer(self.now, self.in_flight(), self.alive))
            self.flush()

    def flush(self) -> None:
        self.sent += [b for _, bufs in self.core.out for b in bufs]
        self.core.out.clear()

    def pump(self) -> None:
        """Session._pump: issue what waits while the window is open and the connection usable."""
        core, conn = self.core, self.conn
        while self.pending and core.window_open() and conn.usable:
            t = self.pending.popleft()
            if t.kind == "scsi":
                self.sent += core.issue(t, conn)
                t.sent_at = self.now
            else:
                self.sent += core.issue_request(t, conn)

    # ------------------------------------------------------------------ command timeouts (CommandWatch)
    def in_flight(self) -> dict:
        return {t: (t.lun, t.sent_at) for t in self.core.tasks.values() if t.kind == "scsi" and t.conn is not None}

    def alive(self, t) -> bool:
        return self.core.tasks.get(t.itt) is t

    def _answered(self, tmf) -> None:
        for t, req in list(self.aborts.items()):
            if req is tmf:
                del self.aborts[t]
                if self.alive(t):
                    self.do(self.esc.abort_answered(t, _response(tmf), self.now))
                return
        for lun, req in list(self.resets.items()):
            if req is tmf:
                del self.resets[lun]
                self.do(self.esc.reset_answered(lun, _response(tmf), self.now, self.in_flight()))
                return

    def _tmf(self, function: int, lun: int, conn, rtt: int = p.pdu.RESERVED_TAG, refcmdsn: int = 0):
        if conn is None or not conn.usable:
            return None
        t = self.core.request("tmf", p.pdu.TaskMgmtRequest(function=function, lun=lun, rtt=rtt, refcmdsn=refcmdsn))
        self.sent += self.core.issue_request(t, conn)
        return t

    def _forget_abort(self, t) -> None:
        tmf = self.aborts.pop(t, None)
        if tmf is not None:
            self.core.forget(tmf)

    def do(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, p.Abort):
                t = a.key
                tmf = self._tmf(p.pdu.TMF.ABORT_TASK, t.lun, t.conn, rtt=t.itt, refcmdsn=t.cmdsn)
                if tmf is None:
                    self.do(self.esc.abort_answered(t, None, self.now))
                else:
                    self.aborts[t] = tmf
            elif isinstance(a, p.ResetLun):
                self._forget_abort(a.key)
                tmf = self._tmf(p.pdu.TMF.LOGICAL_UNIT_RESET, a.lun, self.core.pick_connection())
                if tmf is None:
                    self.do(self.esc.reset_answered(a.lun, None, self.now, self.in_flight()))
                else:
                    self.resets[a.lun] = tmf
            elif isinstance(a, p.Retry):            # Session.send_again
                tasks = [t for t in a.keys if self.alive(t)]
                for t in tasks:
                    self._forget_abort(t)
                self.pending.extendleft(reversed([t for t in tasks if self.core.reassign(t)]))
                self.pump()
            elif isinstance(a, p.Reinstate):
                self._forget_abort(a.key)
                raise p.ConnectionLost(f"{a.why}: reinstating the session")
            elif isinstance(a, p.Fail) and self.alive(a.key):  # Session.fail_one
                t = a.key
                self._forget_abort(t)
                conn = t.conn
                if t in self.pending:
                    self.pending.remove(t)
                self.core.forget(t)
                self._tmf(p.pdu.TMF.ABORT_TASK, t.lun, conn, rtt=t.itt, refcmdsn=t.cmdsn)

    # ------------------------------------------------------------------ recovery (io.recovery, Session)
    def reinstate(self, error: BaseException) -> None:
        """The connection dropped: log in again (at once) and send the unfinished commands again."""
        if self.logins >= self.max_logins:
            raise error
        self.logins += 1
        core = self.core
        if self.esc is not None:                    # CommandWatch.reinstating
            self.aborts.clear()
            self.resets.clear()
            self.esc.reinstating(self.now)
        core.detach(self.conn.cid)
        queued = set(self.pending)
        again = [t for t in core.unfinished() if t not in queued]
        core.done.clear()
        core.out.clear()
        core.renumber(core.cmdsn, core.cmdsn, (core.cmdsn + WINDOW - 1) & 0xFFFFFFFF)
        self.conn = attach(core, self.logins, self.neg, 1)
        self.framer = session_framer(core, self.conn)
        if self.esc is not None:
            self.esc.reinstated()
        self.pending.extendleft(reversed([t for t in again if t.itt in core.tasks]))
        self.pump()
