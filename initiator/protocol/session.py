"""Session-wide full-feature phase, sans-IO: task table, CmdSN window, SCSI data transfer, NOP, TMF, Text, Logout.

`SessionCore` takes received PDUs (as raw BHS/AHS/data from `framer.Framer`) and gives out buffers to send,
finished tasks and target events (`events`); it never touches a socket or a clock. The hot paths (SCSI
Command, Data-Out, Data-In, SCSI Response, R2T) pack and unpack BHS fields with `struct` directly instead of
building PDU objects. The task record and sequence-number helpers live in `task`.

The one UNIT ATTENTION retry lives here: a command answered with a UNIT ATTENTION was not run (the unit
reports a reset, or the I_T nexus loss a reinstatement causes), so it is queued to be sent again, up to
`UA_RETRIES` times per login. Nothing above retries a UNIT ATTENTION again.

The module is long on purpose: every opcode's handler reads and writes the same task table and CmdSN
window; the state machines (`connection`, `session_state`) and the task record (`task`) are apart already.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from ..errors import ConnectionLost, DigestError, ISCSIError, LocalProtocolError, TargetProtocolError
from ..scsi.lun import lun_to_wire
from ..scsi.sense import CHECK_CONDITION, is_unit_attention
from . import pdu
from .connection import TRANSITIONS, Connection, Event
from .events import ConnectionDropped, LogoutRequested, Rejected, ScsiEventReported, TargetEvent
from .pdu import RESERVED_TAG, Op, crc32c, pad_len
from .task import MASK, Task, sn_le, sn_lt

UA_RETRIES = 3  # per command and login: a reinstatement resets the count (each login may report its own UA)

# BHS layouts: op, flags, rsvd/response+status, AHS<<24|DSL, LUN, ITT, then opcode-specific words.
_CMD = struct.Struct(">BBHIQIIII16s")           # SCSI Command: EDTL, CmdSN, ExpStatSN, CDB
_DOUT = struct.Struct(">BBHIQIIIIIIII")         # Data-Out: TTT, rsvd, ExpStatSN, rsvd, DataSN, offset, rsvd
_DIN = struct.Struct(">BBBBIQIIIIIIII")         # Data-In / SCSI Response / R2T share this shape
_ITT = struct.Struct(">I")
_PAD = (b"", b"\0", b"\0\0", b"\0\0\0")


class SessionCore:
    """State shared by the connections of one session; feed it PDUs, drain `out`, `done`, `events`."""

    def __init__(self, negotiated, cmdsn: int, expcmdsn: int, maxcmdsn: int) -> None:
        self.neg = negotiated
        self.cmdsn = cmdsn          # the CmdSN the next non-immediate request gets
        self.expcmdsn = expcmdsn
        self.maxcmdsn = maxcmdsn
        self.tasks: dict[int, Task] = {}
        self.conns: dict[int, Connection] = {}
        self.out: list[tuple[Connection, list]] = []   # (connection, buffers) to send, in order
        self.done: list[Task] = []                     # finished tasks (result or .error set)
        self.retry: list[Task] = []                    # SCSI tasks to issue again (UNIT ATTENTION)
        self.events: list[TargetEvent] = []            # what the target asked for outside any command
        self._itt = 0
        self._discard = memoryview(bytearray(pdu.LOGIN_MAX_DATA))
        self._forgotten: dict[int, None] = {}
        self.unstamped = False  # ERL 1 (erl1.Erl1Core): SNACKs went out that the driver must time

    # ----------------------------------------------------------------- bookkeeping
    def attach(self, conn: Connection) -> None:
        self.conns[conn.cid] = conn

    def detach(self, cid: int) -> None:
        self.conns.pop(cid, None)

    def window_open(self) -> bool:
        """A new non-immediate command may be numbered and sent (CmdSN <= MaxCmdSN)."""
        return sn_le(self.cmdsn, self.maxcmdsn)

    def pick_connection(self) -> Connection | None:
        """MC/S scheduling: the usable connection with the fewest tasks in flight."""
        conns = self.conns
        if len(conns) == 1:
            (c,) = conns.values()
            return c if c.usable else None
        best = None
        for c in conns.values():
            if c.usable and (best is None or c.outstanding < best.outstanding):
                best = c
        return best

    def new_itt(self) -> int:
        """A task tag no outstanding task uses."""
        itt = self._itt
        while True:
            itt = itt + 1 if itt < 0xFFFFFFFE else 1
            if itt not in self.tasks:
                self._itt = itt
                return itt

    def _register(self, kind: str) -> Task:
        t = Task(self.new_itt(), kind)
        self.tasks[t.itt] = t
        return t

    def _finish(self, t: Task) -> None:
        if self.tasks.pop(t.itt, None) is not None and t.conn is not None and t.kind == "scsi":
            t.conn.outstanding -= 1
        self.done.append(t)

    def forget(self, t: Task) -> None:
        """Drop a task the caller gave up on; late PDUs for it are discarded, not errors."""
        if self.tasks.pop(t.itt, None) is not None and t.conn is not None and t.kind == "scsi":
            t.conn.outstanding -= 1
        self._tombstone(t.itt)

    def _tombstone(self, itt: int) -> None:
        self._forgotten[itt] = None
        while len(self._forgotten) > 1024:
            del self._forgotten[next(iter(self._forgotten))]

    def reassign(self, t: Task) -> bool:
        """Take SCSI task ``t`` off the wire to send it again under a new ITT: the target ended it (an ABORT
        TASK or a LOGICAL UNIT RESET answered "Function complete"). Late PDUs for the old tag are
        discarded. False when ``t`` is not outstanding on a connection. The caller queues it again."""
        if t.conn is None or self.tasks.get(t.itt) is not t:
            return False
        del self.tasks[t.itt]
        t.conn.outstanding -= 1
        t.conn = None
        self._tombstone(t.itt)
        t.itt = self.new_itt()
        self.tasks[t.itt] = t
        t.status, t.sense, t.got, t.expdatasn, t.response = -1, b"", 0, 0, 0
        return True

    # ----------------------------------------------------------------- SCSI commands
    def scsi_task(self, lun: int, cdb: bytes, data_out=None, read_len: int = 0,
                  read_into: memoryview | None = None) -> Task:
        """Register a SCSI command; `issue()` numbers and frames it when the window allows."""
        if len(cdb) > 16:
            raise LocalProtocolError("CDBs over 16 bytes are not supported")
        t = self._register("scsi")
        t.lun = lun_to_wire(lun)
        t.cdb = bytes(cdb)
        if read_into is not None:
            read_len = len(read_into)
        if data_out is not None and len(data_out):
            t.write = True
            t.data_out = memoryview(data_out).cast("B")
        if read_len:
            t.read = True
            t.buf = read_into if read_into is not None else memoryview(bytearray(read_len))
        t.edtl = (len(t.data_out) if t.write else 0) + (read_len if not t.write else 0)
        if t.write and t.read:
            raise LocalProtocolError("bidirectional commands are not supported")
        return t

    def issue(self, t: Task, conn: Connection) -> list:
        """Number ``t`` with the next CmdSN and frame it (plus unsolicited data) for ``conn``."""
        t.conn = conn
        conn.outstanding += 1
        conn.commands += 1
        t.cmdsn = self.cmdsn
        self.cmdsn = (self.cmdsn + 1) & MASK
        t.got = t.expdatasn = 0
        return self._frame_command(t, conn)

    def _frame_command(self, t: Task, conn: Connection) -> list:
        """The SCSI Command PDU of ``t`` (its CmdSN already given) with its immediate and unsolicited data."""
        neg = self.neg
        imm = unsol = 0
        if t.write:
            n = len(t.data_out)
            if neg.immediate_data:
                imm = min(n, neg.first_burst, conn.max_xmit_dsl)
            if not neg.initial_r2t:
                unsol = min(n, neg.first_burst) - imm
        flags = (0x80 if unsol == 0 else 0) | (0x40 if t.read else 0) | (0x20 if t.write else 0) | 1
        head = _CMD.pack(Op.SCSI_CMD, flags, 0, imm, t.lun, t.itt, t.edtl, t.cmdsn, conn.expstatsn, t.cdb)
        bufs: list = []
        self._frame(conn, head, t.data_out[:imm] if imm else None, bufs)
        if unsol:
            self._data_outs(conn, t, RESERVED_TAG, imm, imm + unsol, bufs)
        return bufs

    def _frame(self, conn: Connection, head: bytes, data, bufs: list) -> None:
        if conn.header_digest:
            head += crc32c(head).to_bytes(4, "little")
        bufs.append(head)
        if data is not None and len(data):
            bufs.append(data)
            pad = b"\0" * pad_len(len(data))
            if conn.data_digest:
                pad += crc32c(data, pad).to_bytes(4, "little")
            if pad:
                bufs.append(pad)

    def _data_outs(self, conn: Connection, t: Task, ttt: int, start: int, end: int, bufs: list) -> None:
        """Frame bytes start..end of the write as Data-Out PDUs of at most MaxXmitDataSegmentLength.

        Segments stay separate (BHS, a slice of the caller's buffer, padding): the link writes them with
        one writev, so even tgt's 8 KiB PDUs cost no join and no user-space copy of the data."""
        mx, sn, off, data = conn.max_xmit_dsl, 0, start, t.data_out
        expstatsn, lun, itt, pack = conn.expstatsn, t.lun, t.itt, _DOUT.pack
        if conn.header_digest or conn.data_digest:
            while off < end:
                n = min(mx, end - off)
                head = pack(Op.DATA_OUT, 0x80 if off + n == end else 0, 0, n, lun, itt, ttt, 0, expstatsn, 0,
                            sn, off, 0)
                self._frame(conn, head, data[off:off + n], bufs)
                off += n
                sn += 1
            return
        append = bufs.append
        while off < end:
            n = min(mx, end - off)
            append(pack(Op.DATA_OUT, 0x80 if off + n == end else 0, 0, n, lun, itt, ttt, 0, expstatsn, 0, sn, off,
                        0))
            append(data[off:off + n])
            if n & 3:
                append(_PAD[-n & 3])
            off += n
            sn += 1

    # ----------------------------------------------------------------- other requests
    def request(self, kind: str, req: pdu.PDU, immediate: bool = True, itt: int | None = None) -> Task:
        """Register a NOP-Out ping, TMF, Text or Logout request; `issue_request()` frames it.

        ``itt`` reuses a tag (the later rounds of one Text exchange keep the first round's ITT).
        """
        if itt is None:
            t = self._register(kind)
        else:
            t = Task(itt, kind)
            self.tasks[itt] = t
        t.pdu = req
        t.immediate = immediate
        return t

    def issue_request(self, t: Task, conn: Connection) -> list:
        req = t.pdu
        req.itt = t.itt
        req.immediate = t.immediate
        req.cmdsn = self.cmdsn
        if not t.immediate:
            self.cmdsn = (self.cmdsn + 1) & MASK
        if hasattr(req, "expstatsn"):
            req.expstatsn = conn.expstatsn
        if isinstance(req, pdu.TaskMgmtRequest) and req.function == pdu.TMF.ABORT_TASK:
            ref = self.tasks.get(req.rtt)
            req.refcmdsn = ref.cmdsn if ref else req.refcmdsn
        t.conn = conn
        return pdu.encode(req, conn.header_digest, conn.data_digest)

    # ----------------------------------------------------------------- receiving
    recovers_digest_errors = False  # ERL 0: a digest error drops the connection; erl1.Erl1Core recovers

    def digest_error_handler(self, conn: Connection) -> Callable[[bytes, bytes], None] | None:
        """What the framer calls with (bhs, ahs) on a data digest error on ``conn``; None: it raises."""
        return (lambda bhs, ahs: self.bad_data(conn, bhs)) if self.recovers_digest_errors else None

    def bad_data(self, conn: Connection, bhs: bytes) -> None:
        """A PDU on ``conn`` failed its data digest (only called where `recovers_digest_errors`)."""
        raise DigestError(f"data digest mismatch on a PDU with opcode 0x{bhs[0] & 0x3F:02x}")

    def data_in_sink(self, bhs: bytes, dsl: int) -> memoryview | None:
        """Where a Data-In payload of ``dsl`` bytes goes: a slice of the task's read buffer."""
        itt = _ITT.unpack_from(bhs, 16)[0]
        t = self.tasks.get(itt)
        if t is None:
            if itt in self._forgotten:
                return self._discard[:dsl] if dsl <= len(self._discard) else memoryview(bytearray(dsl))
            return None
        off = _ITT.unpack_from(bhs, 40)[0]
        if t.buf is None or off + dsl > len(t.buf):
            return None
        return t.buf[off:off + dsl]

    def _sns(self, conn: Connection, statsn: int, expcmdsn: int, maxcmdsn: int, advance: bool) -> None:
        if advance and not sn_lt(statsn, conn.expstatsn):
            conn.expstatsn = (statsn + 1) & MASK
        if sn_lt(maxcmdsn, (expcmdsn - 1) & MASK):
            return  # RFC 7143 4.2.2.1: such a pair is ignored
        if sn_lt(self.expcmdsn, expcmdsn):
            self.expcmdsn = expcmdsn
        if sn_lt(self.maxcmdsn, maxcmdsn):
            self.maxcmdsn = maxcmdsn

    def receive(self, conn: Connection, bhs: bytes, ahs: bytes, data) -> None:
        """Process one PDU that arrived on ``conn`` (``data`` None: a Data-In payload already placed)."""
        op = bhs[0] & 0x3F
        if op == Op.DATA_IN:
            self._data_in(conn, bhs, data)
        elif op == Op.SCSI_RSP:
            self._scsi_rsp(conn, bhs, data)
        elif op == Op.R2T:
            self._r2t(conn, bhs)
        else:
            self._other(conn, pdu.decode_pdu(bhs, ahs, data))

    def _data_in(self, conn: Connection, bhs: bytes, data) -> None:
        (_, flags, _, status, hl, _, itt, _, statsn, expcmdsn, maxcmdsn, datasn, _, residual) = _DIN.unpack(bhs)
        has_status = flags & 0x01
        self._sns(conn, statsn, expcmdsn, maxcmdsn, bool(has_status))
        t = self.tasks.get(itt)
        if t is None:
            if itt in self._forgotten:
                return
            raise TargetProtocolError(f"Data-In for unknown task 0x{itt:08x}")
        if t.conn is not conn:
            raise self._not_outstanding("Data-In", t, conn)
        dsl = hl & 0xFFFFFF
        if dsl and data is not None:  # only a zero-length or test-fed payload arrives here as bytes
            off = _ITT.unpack_from(bhs, 40)[0]
            t.buf[off:off + dsl] = data
        if datasn != t.expdatasn:
            raise TargetProtocolError(f"Data-In DataSN {datasn} out of order (expected {t.expdatasn})")
        t.expdatasn += 1
        t.got += dsl
        if has_status:
            t.status = status
            t.overflow = bool(flags & 0x04)
            t.underflow = bool(flags & 0x02)
            t.residual = residual
            self._complete_scsi(t)

    def _scsi_rsp(self, conn: Connection, bhs: bytes, data) -> None:
        (_, flags, response, status, _, _, itt, _, statsn, expcmdsn, maxcmdsn, _, _, residual) = _DIN.unpack(bhs)
        self._sns(conn, statsn, expcmdsn, maxcmdsn, True)
        t = self.tasks.get(itt)
        if t is None:
            if itt in self._forgotten:
                return
            raise TargetProtocolError(f"SCSI Response for unknown task 0x{itt:08x}")
        if t.conn is not conn:
            raise self._not_outstanding("SCSI Response", t, conn)
        t.response = response
        t.status = status
        t.overflow = bool(flags & 0x04)
        t.underflow = bool(flags & 0x02)
        t.residual = residual
        if data is not None and len(data) >= 2:
            n = (data[0] << 8) | data[1]
            t.sense = bytes(data[2:2 + n])
        self._complete_scsi(t)

    @staticmethod
    def _not_outstanding(what: str, t: Task, conn: Connection) -> TargetProtocolError:
        """An answer for a command that is not on the wire on ``conn``: queued to be sent again (a UNIT
        ATTENTION answered it already) or sent on another connection (RFC 7143 connection allegiance)."""
        return TargetProtocolError(f"{what} for task 0x{t.itt:08x}, which is not outstanding on connection "
                                   f"{conn.cid}")

    def _complete_scsi(self, t: Task) -> None:
        if t.status == CHECK_CONDITION and t.retries < UA_RETRIES and is_unit_attention(t.status, t.sense):
            # A UA (power on, reset, I_T nexus loss after a relogin...) says nothing about this command:
            # send it again rather than surface an error the caller cannot act on.
            t.retries += 1
            t.conn.outstanding -= 1
            t.conn = None
            t.status, t.sense, t.got, t.expdatasn = -1, b"", 0, 0
            self.retry.append(t)
            return
        self._finish(t)

    def _r2t(self, conn: Connection, bhs: bytes) -> None:
        (_, _, _, _, _, _, itt, ttt, statsn, expcmdsn, maxcmdsn, _, off, length) = _DIN.unpack(bhs)
        self._sns(conn, statsn, expcmdsn, maxcmdsn, False)
        t = self.tasks.get(itt)
        if t is None:
            if itt in self._forgotten:
                return
            raise TargetProtocolError(f"R2T for unknown task 0x{itt:08x}")
        if not t.write or t.conn is not conn:
            raise TargetProtocolError(f"R2T for task 0x{itt:08x}, which has no data to send on this connection")
        if length == 0 or off + length > len(t.data_out):
            raise TargetProtocolError(f"R2T asks for bytes {off}..{off + length} of a {len(t.data_out)}-byte write")
        if length > self.neg.max_burst:
            raise TargetProtocolError(f"R2T asks for {length} bytes, over MaxBurstLength {self.neg.max_burst}")
        bufs: list = []
        self._data_outs(conn, t, ttt, off, off + length, bufs)
        self.out.append((conn, bufs))

    def _other(self, conn: Connection, p: pdu.PDU) -> None:
        self._sns(conn, p.statsn, p.expcmdsn, p.maxcmdsn,
                  not (isinstance(p, pdu.NopIn) and p.itt == RESERVED_TAG))
        if isinstance(p, pdu.NopIn):
            if p.itt == RESERVED_TAG:
                if p.ttt != RESERVED_TAG:  # the target pings us: answer with its TTT
                    reply = pdu.NopOut(itt=RESERVED_TAG, immediate=True, lun=p.lun, ttt=p.ttt, cmdsn=self.cmdsn,
                                       expstatsn=conn.expstatsn, data=p.data)
                    self.out.append((conn, pdu.encode(reply, conn.header_digest, conn.data_digest)))
                return
            self._answer(p, "nop")
        elif isinstance(p, pdu.AsyncMessage):
            self._async(conn, p)
        elif isinstance(p, pdu.Reject):
            rejected = p.rejected_header
            itt = _ITT.unpack_from(rejected, 16)[0] if len(rejected) >= 20 else RESERVED_TAG
            t = self.tasks.get(itt)
            if t is None:
                self.events.append(Rejected(conn.cid, p.describe()))
                return
            t.error = TargetProtocolError(f"the target rejected a PDU: {p.describe()}")
            self._finish(t)
        elif isinstance(p, (pdu.TaskMgmtResponse, pdu.TextResponse, pdu.LogoutResponse)):
            kind = {pdu.TaskMgmtResponse: "tmf", pdu.TextResponse: "text", pdu.LogoutResponse: "logout"}[type(p)]
            self._answer(p, kind)
        else:
            raise TargetProtocolError(f"unexpected {type(p).__name__} in the full-feature phase")

    def _answer(self, p: pdu.PDU, kind: str) -> None:
        t = self.tasks.get(p.itt)
        if t is None or t.kind != kind:
            if p.itt in self._forgotten:
                return
            raise TargetProtocolError(f"{type(p).__name__} for unknown task 0x{p.itt:08x}")
        t.result = p
        self._finish(t)

    def _async(self, conn: Connection, p: pdu.AsyncMessage) -> None:
        ev = p.event
        if ev == pdu.AsyncEvent.LOGOUT_REQUEST:
            if conn.usable:
                conn.fire(Event.LOGOUT_REQUESTED)
                self.events.append(LogoutRequested(conn.cid, p.param3))
        elif ev in (pdu.AsyncEvent.CONNECTION_DROP, pdu.AsyncEvent.SESSION_DROP):
            if (conn.state, Event.DROPPED) in TRANSITIONS:
                conn.fire(Event.DROPPED)
            self.events.append(ConnectionDropped(conn.cid, ev, p.param2))
        elif ev == pdu.AsyncEvent.NEGOTIATION_REQUEST:
            self.events.append(LogoutRequested(conn.cid, 0))  # we never renegotiate in place
        elif ev == pdu.AsyncEvent.SCSI_EVENT:
            self.events.append(ScsiEventReported(conn.cid, bytes(p.data[2:])))
        # TASK_TERMINATION and vendor events need no action at ERL 0

    # ----------------------------------------------------------------- recovery
    def unfinished(self) -> list[Task]:
        """After a connection loss (ERL 0): fail non-SCSI requests and return SCSI tasks to reissue."""
        scsi = []
        for t in list(self.tasks.values()):
            if t.kind == "scsi":
                t.conn = None
                t.retries = 0  # every relogin may report its own UNIT ATTENTION to the oldest command
                scsi.append(t)
            else:
                del self.tasks[t.itt]
                t.error = ConnectionLost("the connection was lost before the target answered")
                self.done.append(t)
        for c in self.conns.values():
            c.outstanding = 0
        scsi.extend(self.retry)
        self.retry.clear()
        scsi.sort(key=lambda t: ((t.cmdsn - self.expcmdsn) & MASK))
        return scsi

    def renumber(self, cmdsn: int, expcmdsn: int, maxcmdsn: int) -> None:
        """Adopt the sequence numbers of a reinstated session (new login, TSIH 0, same ISID)."""
        self.cmdsn, self.expcmdsn, self.maxcmdsn = cmdsn, expcmdsn, maxcmdsn

    def fail_all(self, error: ISCSIError, tasks: Iterable[Task] = ()) -> None:
        for t in [*self.tasks.values(), *self.retry, *tasks]:
            if t.error is None:
                t.error = error
            self.done.append(t)
        self.tasks.clear()
        self.retry.clear()
