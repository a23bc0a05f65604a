"""The asyncio session over the sans-IO core: login, MC/S, the data path, Text, TMF, Logout; a public state.

Usage::

    import asyncio
    from initiator.io.params import SessionParams
    from initiator.io.session import open_session

    async def main():
        s = await open_session(SessionParams("127.0.0.1", 3260, "iqn.2026-11.org.example:me",
                                             "iqn.2026-11.org.example:disk", max_connections=2))
        try:
            r = await s.execute(1, bytes.fromhex("25") + bytes(9), read_len=8)   # READ CAPACITY(10)
            buf = bytearray(1 << 20)
            await s.execute(1, bytes.fromhex("28 00 00000000 00 0800 00"), read_into=memoryview(buf))
            await s.execute(1, bytes.fromhex("2a 00 00000000 00 0800 00"), data_out=buf)
        finally:
            await s.close()
    asyncio.run(main())

Each connection is a `link.Link` (an asyncio.BufferedProtocol): a large Data-In payload is received straight
into the caller's ``read_into`` buffer (we declare a 1 MiB MaxRecvDataSegmentLength, so a 1 MiB read is one
PDU), and sends are vectored writes of the PDU segments, never joined. The session's state is
`protocol.session_state`'s table: `state` reads it and `subscribe` reports every change. Keep-alive and ERL0
recovery are a `recovery.Recovery` object, which drives the protocol's decisions. MC/S spreads commands over
up to ``max_connections`` connections (bounded by the target's answer). Commands queue (never fail) while the
CmdSN window is closed or while recovery logs in again; they fail with SessionFailed only once
``replacement_timeout`` has passed without a successful login.

The module is long on purpose: it is one class whose data path, logins, requests and teardown share the
same queue, links and core; split further, the parts would reach into each other's private state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import (
    CommandTimeout,
    ConnectionLost,
    ISCSIError,
    LocalProtocolError,
    LoginRedirect,
    SessionFailed,
    TargetProtocolError,
)
from ..protocol import pdu
from ..protocol.connection import Event, State
from ..protocol.erl1 import SNACK_TIMEOUT, Erl1Core, core_class
from ..protocol.escalation import Counts
from ..protocol.keys import Negotiated, Proposals
from ..protocol.login import LoginMachine, LoginParams
from ..protocol.recovery import RAMP_START, ramp
from ..protocol.session import SessionCore, Task
from ..protocol.session_state import OPEN, SessionEvent, SessionMachine, SessionState, StateChange
from ..protocol.text import DiscoveredTarget, TextMachine, parse_sendtargets
from ..scsi.lun import lun_to_wire
from .link import Link, dial
from .params import SessionParams, new_isid
from .recovery import Recovery
from .timeouts import CommandWatch

log = logging.getLogger("initiator.transport")
# Declared MaxRecvDataSegmentLength: a 1 MiB read arrives as one Data-In PDU (tgt honours it), so the
# payload is read straight into the caller's buffer in few large recv_into calls (measured: 485 -> 359 µs of
# CPU per 1 MiB read against 256 KiB PDUs). It also sizes each connection's receive buffer.
MAX_RECV_DSL = 1 << 20
_UP = SessionState.LOGGED_IN
_CLEANUP = (State.LOGGED_IN, State.IN_LOGOUT, State.LOGOUT_REQUESTED)


@dataclass
class ScsiResult:
    status: int
    sense: bytes
    data: bytes | memoryview
    residual: int
    underflow: bool
    overflow: bool


@dataclass
class Stats:
    commands: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    reconnects: int = 0
    ua_retries: int = 0
    # ERL 1 (protocol.erl1.COUNTS, counted by its core)
    digest_errors: int = 0
    data_snacks: int = 0
    status_snacks: int = 0
    data_acks: int = 0
    target_digest_errors: int = 0
    command_retries: int = 0


class Session:
    """A logged-in iSCSI session (one or more connections). Build it with `open_session()`."""

    def __init__(self, params: SessionParams, counts: Counts | None = None) -> None:
        self.params = params
        self.isid = params.isid or new_isid()
        self.core: SessionCore | None = None
        self.negotiated: Negotiated | None = None
        self.tsih = 0
        self.stats = Stats()
        self.links: dict[int, Link] = {}  # by CID
        self._pending: deque[Task] = deque()
        self._machine = SessionMachine()
        self._subscribers: list[Callable[[StateChange], None]] = []
        self._bg: set[asyncio.Task] = set()
        self._portal = (params.host, params.port)
        self._next_cid = 0
        self._ramp: int | None = None  # commands in flight allowed while ramping up after a reinstatement
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections_granted = 0  # connections the last login established (asked: params.max_connections)
        self.chap_algorithm: int | None = None  # the CHAP_A the target chose at the last login
        self._mcs_refusal: str | None = None  # why the target refused another connection (istgt does)
        self._noticed = False
        self._snack_handle: asyncio.TimerHandle | None = None
        self.recovery = Recovery(self)
        self._policy = self.recovery.policy
        # command timeouts and their escalation (io.timeouts); ``counts`` may outlive the session
        self.watch = (CommandWatch(self, counts) if params.command_timeout > 0 and params.target_name is not None
                      else None)

    # -------------------------------------------------------------- state
    @property
    def state(self) -> SessionState:
        return self._machine.state

    @property
    def connections(self) -> int:
        return sum(1 for c in self.links.values() if c.state.usable)

    def subscribe(self, callback: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call ``callback`` with every state change (in the loop, synchronously); returns the unsubscriber."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def fire(self, event: SessionEvent, reason: str = "") -> None:
        """Apply a state-table event and tell the subscribers (the session and its recovery call this)."""
        change = self._machine.fire(event, reason)
        for callback in list(self._subscribers):
            callback(change)

    def _check_open(self) -> None:
        state = self._machine.state
        if state in OPEN:
            return
        if state is SessionState.FAILED:
            raise SessionFailed("the session failed and was not recovered")
        raise LocalProtocolError("the session is closed")

    # -------------------------------------------------------------- login and connections
    def _login_params(self, cid: int, leading: bool) -> LoginParams:
        p = self.params
        proposals = Proposals(max_connections=max(1, p.max_connections), max_recv_dsl=MAX_RECV_DSL,
                              erl=p.erl).with_overrides(**p.proposals)
        return LoginParams(initiator_name=p.initiator_name, target_name=p.target_name, isid=self.isid,
                           tsih=0 if leading else self.tsih, cid=cid, cmdsn=self.core.cmdsn if self.core else 1,
                           chap_user=p.chap.user if p.chap else None, chap_secret=p.chap.secret if p.chap else None,
                           mutual_user=p.mutual.user if p.mutual else None,
                           mutual_secret=p.mutual.secret if p.mutual else None,
                           chap_algorithms=p.chap_algorithms, header_digest=p.header_digest,
                           data_digest=p.data_digest, leading=leading, proposals=proposals,
                           session=None if leading else self.negotiated)

    async def _open_link(self, leading: bool, deadline: float) -> tuple[Link, LoginMachine]:
        for _ in range(4):  # follow at most 3 redirects
            cid = self._next_cid
            self._next_cid = (cid + 1) & 0xFFFF
            link = await dial(self, cid, *self._portal, deadline)
            try:
                m = await link.login(self._login_params(cid, leading), deadline)
                return link, m
            except LoginRedirect as e:
                link.abort(e)
                if e.portal is None:
                    raise
                self._portal = (e.portal[0], e.portal[1])
            except BaseException as e:
                link.abort(e if isinstance(e, ISCSIError) else ConnectionLost("login abandoned"))
                raise
        raise TargetProtocolError("the target redirected the login more than 3 times")

    async def log_in(self, deadline: float) -> None:
        """Leading login (TSIH 0: a new or reinstated session), then MC/S connections up to the limit."""
        link, m = await self._open_link(True, deadline)
        self.negotiated, self.tsih = m.result, m.tsih
        self.chap_algorithm = m.chap.algorithm if m.chap is not None else None
        if self.core is None:
            self.core = self._new_core(m.result, m.expcmdsn, m.maxcmdsn)
        else:
            self.core.neg = m.result
            self.core.renumber(m.expcmdsn, m.expcmdsn, m.maxcmdsn)
        self._adopt(link)
        want = min(self.params.max_connections, m.result.max_connections)
        while len(self.links) < want:
            try:
                extra, _ = await self._open_link(False, deadline)
            except ISCSIError as e:  # a target may refuse more connections than it advertised (istgt)
                log.info("MC/S: staying at %d connection(s): %s", len(self.links), e)
                self._mcs_refusal = str(e)
                break
            self._adopt(extra)
        self._granted(len(self.links))

    def _new_core(self, negotiated: Negotiated, expcmdsn: int, maxcmdsn: int) -> SessionCore:
        """The sans-IO core for what login agreed: at ErrorRecoveryLevel 1 it recovers digest errors by SNACK."""
        cls = core_class(negotiated)
        if cls is SessionCore:
            return SessionCore(negotiated, expcmdsn, expcmdsn, maxcmdsn)
        timeout = self.params.nop_timeout if self.params.nop_timeout > 0 else SNACK_TIMEOUT
        return cls(negotiated, expcmdsn, expcmdsn, maxcmdsn, counts=self.stats, timeout=timeout)

    def _snack_timer(self) -> None:
        """ERL 1: stamp the SNACKs just sent and wake when the oldest unanswered one is due (then the
        connection is dropped: session recovery takes over)."""
        core, loop = self.core, self._loop or asyncio.get_running_loop()
        core.stamp(time.monotonic())
        if self._snack_handle is None and (deadline := core.next_deadline()) is not None:
            self._snack_handle = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._snack_due)

    def _snack_due(self) -> None:
        self._snack_handle = None
        core = self.core
        if not isinstance(core, Erl1Core):
            return
        for cid in core.handle_timer(time.monotonic()):
            link = self.links.get(cid)
            if link is not None:
                link.abort(ConnectionLost(f"ERL1: the target did not answer a SNACK within {core.timeout:g} s; "
                                          "recovering the session"))
        if self.core is core and (deadline := core.next_deadline()) is not None:
            loop = asyncio.get_running_loop()
            self._snack_handle = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._snack_due)

    def _granted(self, count: int) -> None:
        """Remember how many connections the login got; log it once per session when fewer than asked."""
        self.connections_granted = count
        notice = self.connections_notice()
        if notice and not self._noticed:
            self._noticed = True
            log.warning("%s", notice)

    def connections_notice(self) -> str | None:
        """One line when the target granted fewer connections than asked, else None."""
        asked, granted = self.params.max_connections, self.connections_granted
        if granted >= asked or self.negotiated is None:
            return None
        why = (f"its MaxConnections is {self.negotiated.max_connections}" if self.negotiated.max_connections < asked
               else f"it refused connection {granted + 1}: {self._mcs_refusal}")
        return f"{self.params.target_name}: the target granted {granted} of the {asked} connections asked ({why})"

    def _adopt(self, link: Link) -> None:
        self.links[link.state.cid] = link
        self.core.attach(link.state)
        link.enter_ffp(self.core)

    async def _start(self) -> None:
        if not self.params.initiator_name:
            raise LocalProtocolError("SessionParams.initiator_name is empty: give our iSCSI name")
        await self.log_in(time.monotonic() + self.params.login_timeout)
        self._loop = asyncio.get_running_loop()
        self.fire(SessionEvent.LOGGED_IN)
        self.recovery.start()
        if self.watch is not None:
            self.watch.start()

    def spawn(self, coro) -> asyncio.Task:
        """Run ``coro`` in the background for as long as the session lives."""
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)
        return t

    def drop_links(self, reason: str) -> None:
        """Abort every connection and forget it (recovery: the session logs in again from scratch)."""
        for link in list(self.links.values()):
            link.abort(ConnectionLost(reason))
            if link.state.state is State.CLEANUP_WAIT:
                link.state.fire(Event.CLEANED)
            self.core.detach(link.state.cid)
        self.links.clear()

    # -------------------------------------------------------------- the data path
    async def execute(self, lun: int, cdb: bytes, *, data_out=None, read_len: int = 0,
                      read_into: memoryview | None = None, timeout: float | None = None) -> ScsiResult:
        """Run one SCSI command; waits through recovery; raises ISCSIError subclasses on failure."""
        if self._machine.state is not _UP:
            self._check_open()
        t = self.core.scsi_task(lun, cdb, data_out, read_len, read_into)
        fut = t.waiter = self._loop.create_future()
        self._send(t)
        try:
            if timeout is None:
                await fut
            else:
                async with asyncio.timeout(timeout):
                    await fut
        except TimeoutError:
            self._give_up(t)
            raise CommandTimeout(f"SCSI command 0x{cdb[0]:02x} did not complete within {timeout}s") from None
        except asyncio.CancelledError:
            self._give_up(t)
            raise
        if t.error is not None:
            raise t.error
        if t.response:
            raise TargetProtocolError(f"the target failed the command (iSCSI response 0x{t.response:02x})")
        n = self._count(t)
        buf = t.buf
        if buf is None:
            data = b""
        elif read_into is None:
            data = bytes(buf[:n])
        else:
            data = buf if n == len(buf) else buf[:n]
        return ScsiResult(t.status, t.sense, data, t.residual, t.underflow, t.overflow)

    def submit(self, lun: int, cdb: bytes, on_done: Callable[[Task], None], *, data_out=None,
               read_into: memoryview | None = None) -> None:
        """Start one SCSI command without a coroutine: ``on_done(task)`` runs once, in the loop, as soon as it
        ends, with ``task.error`` set (an ISCSIError: the session failed or closed, the command timed out)
        or else ``task.response``, ``task.status``, ``task.sense`` and ``task.data_len`` (bytes read into
        ``read_into``). Like `execute` it waits through recovery; raises at once when the session is closed.

        The NBD bridge's data path: no task, future or coroutine per request, and the completion runs in the
        same loop iteration as the receive that finished it."""
        if self._machine.state is not _UP:
            self._check_open()
        t = self.core.scsi_task(lun, cdb, data_out, 0, read_into)
        t.waiter = _Completion(self, t, on_done)
        self._send(t)

    def _send(self, t: Task) -> None:
        """Put a new command on the wire (nothing queued before it, the window open), else queue it."""
        core = self.core
        if (not self._pending and self._machine.state is _UP and self._ramp is None
                and ((core.maxcmdsn - core.cmdsn) & 0xFFFFFFFF) < 0x80000000
                and (c := core.pick_connection()) is not None and not (link := self.links[c.cid]).paused):
            link.send(core.issue(t, c))
            t.sent_at = time.monotonic()
        else:
            self._pending.append(t)
            self._pump()

    def _count(self, t: Task) -> int:
        """Count a finished command in `stats`; returns the bytes it read."""
        st = self.stats
        st.commands += 1
        if t.write:
            st.bytes_written += len(t.data_out)
        n = max(0, t.edtl - t.residual) if t.underflow else t.got
        st.bytes_read += n
        return n

    def _drop(self, t: Task) -> None:
        with contextlib.suppress(ValueError):
            self._pending.remove(t)
        self.core.forget(t)

    def _give_up(self, t: Task) -> None:
        """The caller stopped waiting: forget the command and ask the target to abort it (best effort)."""
        conn = t.conn
        self._drop(t)
        if conn is not None and self._machine.state is _UP:
            req = pdu.TaskMgmtRequest(function=pdu.TMF.ABORT_TASK, lun=t.lun, rtt=t.itt, refcmdsn=t.cmdsn)
            a = self.core.request("tmf", req)
            a.waiter = None
            self.links[conn.cid].send(self.core.issue_request(a, conn))

    def _pump(self) -> None:
        """Issue queued commands while the CmdSN window is open and a connection can take them."""
        core, pending = self.core, self._pending
        if self._machine.state is not _UP:
            return
        while pending and core.window_open():
            if self._ramp is not None and sum(c.outstanding for c in core.conns.values()) >= self._ramp:
                return
            c = core.pick_connection()
            if c is None:
                return
            link = self.links[c.cid]
            if link.paused:
                return
            t = pending.popleft()
            if t.kind == "scsi":
                link.send(core.issue(t, c))
                t.sent_at = time.monotonic()
            else:
                link.send(core.issue_request(t, c))
        self._flush_out()

    def _flush_out(self) -> None:
        core = self.core
        if core.out:
            out, core.out = core.out, []
            for c, bufs in out:
                link = self.links.get(c.cid)
                if link is not None and link.transport is not None:
                    link.send(bufs)

    # -------------------------------------------------------------- what links report (link.LinkOwner)
    def link_received(self) -> None:
        """After a receive: send what the core produced, wake finished callers, reissue retries."""
        core = self.core
        if core.unstamped:
            self._snack_timer()
        if core.out:
            self._flush_out()
        if core.done:
            done, core.done = core.done, []
            for t in done:
                w = t.waiter
                if w is not None and not w.done():
                    w.set_result(None)
            if self._ramp is not None:
                self._ramp = ramp(self._ramp)
            self._policy.completed()
        if core.retry:
            self.stats.ua_retries += len(core.retry)
            self._pending.extendleft(reversed(core.retry))
            core.retry.clear()
        if core.events:
            events, core.events = core.events, []
            for ev in events:
                self.recovery.target_event(ev)
        if self._pending:
            self._pump()

    def link_lost(self, link: Link) -> None:
        c = link.state
        if c.state in _CLEANUP:
            c.fire(Event.FAIL)
        if self.links.get(c.cid) is not link:
            return  # a connection that never joined (failed login)
        if self._machine.state is _UP:
            self.recovery.connection_lost(link.error)
        elif self._machine.state is SessionState.LOGGING_OUT:
            self._logout_cut(c)

    def _logout_cut(self, c) -> None:
        """The target closed the connection instead of answering our Logout: the session is gone at its end
        too, so the logout is over (istgt does this now and then); no caller waits for an answer that
        cannot come."""
        for t in [t for t in self.core.tasks.values() if t.kind == "logout" and t.conn is c]:
            del self.core.tasks[t.itt]
            t.error = ConnectionLost("the target closed the connection instead of answering the logout")
            self.core.done.append(t)
        self._wake_finished()

    def link_writable(self) -> None:
        self._pump()

    # -------------------------------------------------------------- what recovery decides (recovery.Recovery)
    def unfinished(self) -> list[Task]:
        """Recovery starts: drop every link; the SCSI commands to send again once logged in (not yet queued)."""
        if self.watch is not None:
            self.watch.reinstating()
        self.drop_links("session recovery")
        queued = set(self._pending)
        again = [t for t in self.core.unfinished() if t not in queued]
        self._wake_finished()
        return again

    def reinstated(self, again: list[Task]) -> None:
        """A new leading login succeeded: send ``again`` (oldest first), ramping up from one in flight."""
        self.stats.reconnects += 1
        if self.watch is not None:
            self.watch.reinstated()
        self._ramp = RAMP_START
        self._pending.extendleft(reversed([t for t in again if t.itt in self.core.tasks]))
        self.fire(SessionEvent.REINSTATED)
        self._pump()

    # -------------------------------------------------------------- what command timeouts decide (timeouts.CommandWatch)
    def send_again(self, tasks: list[Task]) -> None:
        """The target ended these commands (an abort or a LU reset): send them first, each under a new ITT."""
        again = [t for t in tasks if self.core.reassign(t)]
        self._pending.extendleft(reversed(again))
        self._pump()

    def fail_one(self, t: Task, error: ISCSIError) -> None:
        """Give up on one command alone: ask the target to abort it, and fail its caller with ``error``."""
        self._give_up(t)
        t.error = error
        if t.waiter is not None and not t.waiter.done():
            t.waiter.set_result(None)

    def fail(self, error: ISCSIError, tasks: list[Task] = ()) -> None:
        """Give up: every command, queued or given (``tasks``), fails with ``error``; the session is FAILED."""
        self._teardown(SessionEvent.GAVE_UP, error, tasks)

    # -------------------------------------------------------------- non-SCSI requests
    async def request(self, kind: str, req: pdu.PDU, immediate: bool = True, timeout: float | None = None,
                      itt: int | None = None) -> Task:
        """Send a NOP-Out, TMF, Text or Logout request and wait (bounded) for its answer, in ``.result``."""
        self._check_open()
        t = self.core.request(kind, req, immediate, itt)
        t.waiter = asyncio.get_running_loop().create_future()
        if immediate and self._machine.state is _UP and (c := self.core.pick_connection()) is not None:
            self.links[c.cid].send(self.core.issue_request(t, c))
        else:
            self._pending.append(t)
            self._pump()
        try:
            async with asyncio.timeout(timeout or self.params.login_timeout):
                await t.waiter
        except TimeoutError:
            self._drop(t)
            raise CommandTimeout(f"the target did not answer a {kind} request in time") from None
        except asyncio.CancelledError:
            self._drop(t)
            raise
        if t.error is not None:
            raise t.error
        return t

    async def task_mgmt(self, function: int, lun: int, rtt: int | None = None) -> int:
        """Send a Task Management request (ABORT TASK needs ``rtt``); returns the TMF response code."""
        req = pdu.TaskMgmtRequest(function=function, lun=lun_to_wire(lun),
                                  rtt=pdu.RESERVED_TAG if rtt is None else rtt)
        t = await self.request("tmf", req)
        return t.result.response

    async def ping(self, timeout: float | None = None) -> float:
        """NOP-Out/NOP-In round trip in seconds."""
        start = time.monotonic()
        await self.request("nop", pdu.NopOut(data=b"bootkit!"), timeout=timeout or self.params.nop_timeout)
        return time.monotonic() - start

    async def send_targets(self, what: str = "All") -> list[DiscoveredTarget]:
        """SendTargets over this session (a discovery session, or a normal one for its own target)."""
        itt = self.core.new_itt()
        conn = self.core.pick_connection()
        m = TextMachine([("SendTargets", what)], itt=itt, max_send=conn.max_xmit_dsl if conn else 8192)
        req = m.start()
        while req is not None:
            t = await self.request("text", req, immediate=False, itt=itt)
            req = m.receive(t.result)
        return parse_sendtargets(m.pairs)

    async def logout(self) -> None:
        """Close the session with a Logout (reason 0) and wait for the answer (bounded)."""
        if self._machine.state is not _UP:
            return
        self.fire(SessionEvent.LOGOUT)
        with contextlib.suppress(ISCSIError):
            c = self.core.pick_connection()
            if c is not None:
                t = self.core.request("logout", pdu.LogoutRequest(reason=pdu.LogoutReason.CLOSE_SESSION,
                                                                   cid=c.cid))
                t.waiter = asyncio.get_running_loop().create_future()
                c.fire(Event.LOGOUT)
                self.links[c.cid].send(self.core.issue_request(t, c))
                async with asyncio.timeout(min(5.0, self.params.login_timeout)):
                    await t.waiter
        self._teardown(SessionEvent.CLOSED, ConnectionLost("the session was logged out"))

    async def close(self) -> None:
        """Log out if still up, then drop every connection and background task."""
        with contextlib.suppress(TimeoutError, ISCSIError):
            await self.logout()
        self._teardown(SessionEvent.CLOSED, ConnectionLost("the session was closed"))
        for t in list(self._bg):
            t.cancel()
        for t in list(self._bg):
            with contextlib.suppress(BaseException):
                await t
        for link in list(self.links.values()):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.closed), 2)

    def _teardown(self, event: SessionEvent, error: ISCSIError, tasks: list[Task] = ()) -> None:
        self.fire(event, str(error))
        if self._snack_handle is not None:
            self._snack_handle.cancel()
            self._snack_handle = None
        for link in self.links.values():
            if link.transport is not None:
                link.transport.close()
        if self.core is not None:
            self.core.fail_all(error, [*tasks, *self._pending])
            self._pending.clear()
            self._wake_finished()

    def _wake_finished(self) -> None:
        done, self.core.done = self.core.done, []
        for t in done:
            if t.waiter is not None and not t.waiter.done():
                t.waiter.set_result(None)


class _Completion:
    """The waiter of a `Session.submit` command: where a future would be set, it calls back at once."""

    __slots__ = ("_fired", "_on_done", "_session", "_task")

    def __init__(self, session: Session, task: Task, on_done: Callable[[Task], None]) -> None:
        self._session, self._task, self._on_done, self._fired = session, task, on_done, False

    def done(self) -> bool:
        return self._fired

    def set_result(self, _result: object) -> None:
        if self._fired:
            return
        self._fired = True
        t = self._task
        if t.error is None and not t.response:
            self._session._count(t)
        try:
            self._on_done(t)
        except Exception:   # a caller's bug must not break the receive path of the session
            log.exception("the completion of SCSI command 0x%02x failed", t.cdb[0])


async def open_session(params: SessionParams, counts: Counts | None = None) -> Session:
    """Connect and log in (bounded by params.login_timeout); returns a Session in the full-feature phase.

    ``counts`` collects the command-timeout escalation's events (a daemon keeps one per target)."""
    s = Session(params, counts)
    try:
        await s._start()
    except BaseException:
        s._teardown(SessionEvent.CLOSED, ConnectionLost("login failed"))
        raise
    return s
