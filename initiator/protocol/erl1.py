"""ErrorRecoveryLevel 1, sans-IO: digest errors recovered inside the command, without a new login (RFC 7143 7.x).

`Erl1Core` is the session core of a session that negotiated ErrorRecoveryLevel >= 1; `core_class` picks it.
It adds within-command and within-connection recovery to `session.SessionCore` and nothing to ERL 0 sessions,
whose data path stays the base class's. The decisions:

- a Data-In whose data digest fails (its header digest passed) is discarded and the task asks for its data
  again with a Data SNACK from the first DataSN it lacks, RunLength 0 (to the end). PDUs after a hole are
  discarded (their payload goes to a scratch buffer) until the resent ones arrive in order; a DataSN gap
  with no digest error is SNACKed the same way. BegRun is always a DataSN the target has sent, because LIO
  counts its bound one short and answers an overrun with a Reject that later panics its kernel;
- a status that arrives before all the data is kept, and the connection's ExpStatSN is held at its StatSN
  until the data is complete: LIO forgets a command once its status is acknowledged and never answers a
  SNACK for it;
- a StatSN gap (a status PDU lost), or a SCSI Response whose sense data fails its digest, gets a Status
  SNACK; ExpStatSN is held at the hole until the status comes again;
- a Data-In with the A bit (and no status) is acknowledged with a DataACK SNACK once there is no hole
  before it;
- a Reject for data digest error of our PDU: a Data-Out is left to the target's recovery R2T (answered
  like any R2T); a SCSI Command whose immediate data was hit is sent again with the same ITT and CmdSN
  (LIO drops the command and waits for the CmdSN hole to be plugged);
- no answer within the timeout (`handle_timer`), too many SNACKs for one task, a header digest error (the
  stream can no longer be framed: RFC 7143 removed markers), a digest error without header digests, or a
  Reject of a SNACK: the connection is dropped and the ERL 0 session recovery of `io.recovery` takes over.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

from ..errors import ConnectionLost, DigestError, TargetProtocolError
from . import pdu
from .connection import Connection
from .pdu import RESERVED_TAG, Op
from .session import SessionCore
from .task import MASK, Task, sn_lt

SNACK_DATA, SNACK_STATUS, SNACK_DATA_ACK = 0, 1, 2  # SNACK types (RFC 7143 11.16.1)
REJECT_DATA_DIGEST = 0x02
MAX_SNACKS = 8  # SNACKs in a row without progress before we give up on a task and recover the session
SNACK_TIMEOUT = 10.0  # seconds a SNACK may go unanswered
MAX_STATUS_GAP = 256  # lost statuses we ask for at once; a wider StatSN jump is a broken target
_DIN = struct.Struct(">BBBBIQIIIIIIII")
_RSP_EXPDATASN = struct.Struct(">I")  # SCSI Response bytes 36..39: the number of Data-In PDUs sent


# What Erl1Core counts, as attributes of the ``counts`` object it is given (io.session.Stats has them all):
# data digest errors we recovered, the SNACKs we sent, the target's Rejects for data digest errors in our
# PDUs, and the commands sent again because of them.
COUNTS = ("digest_errors", "data_snacks", "status_snacks", "data_acks", "target_digest_errors", "command_retries")


class _Hole:
    """A task missing Data-In PDUs: where we asked from, when, and its status if that came already."""

    __slots__ = ("asked_from", "last_datasn", "since", "snacks", "statsn", "status")

    def __init__(self) -> None:
        self.asked_from = -1
        self.snacks = 0
        self.since: float | None = None  # when the last SNACK was sent (stamped by the driver)
        self.status: tuple[int, int, int] | None = None  # (status, flags, residual) received early
        self.statsn: int | None = None
        self.last_datasn: int | None = None  # DataSN of the PDU that carried (or announced) the status


class _Stat:
    """One connection's StatSN bookkeeping: the next StatSN due, lost ones asked for, held ones."""

    __slots__ = ("missing", "next", "snacks")

    def __init__(self, nxt: int) -> None:
        self.next = nxt
        self.missing: dict[int, float | None] = {}  # StatSN -> when the Status SNACK was sent
        self.snacks = 0  # Status SNACKs since a lost status last came back


class Erl1Core(SessionCore):
    """`SessionCore` with ERL 1 recovery (see the module docstring). Drive its timer with `stamp`/`handle_timer`."""

    recovers_digest_errors = True

    def __init__(self, negotiated, cmdsn: int, expcmdsn: int, maxcmdsn: int, counts: Any = None,
                 timeout: float = SNACK_TIMEOUT) -> None:
        super().__init__(negotiated, cmdsn, expcmdsn, maxcmdsn)
        self.counts = counts if counts is not None else SimpleNamespace(**dict.fromkeys(COUNTS, 0))
        self.timeout = timeout
        self.holes: dict[int, _Hole] = {}  # ITT -> hole
        self._stat: dict[int, _Stat] = {}  # CID -> StatSN bookkeeping
        self.unstamped = False  # a SNACK went out that the driver has not stamped with a time yet

    # ----------------------------------------------------------------- bookkeeping
    def attach(self, conn: Connection) -> None:
        super().attach(conn)
        self._stat[conn.cid] = _Stat(conn.expstatsn)

    def detach(self, cid: int) -> None:
        super().detach(cid)
        self._stat.pop(cid, None)

    def _hold(self, conn: Connection) -> None:
        """ExpStatSN = the lowest StatSN we must not acknowledge yet (a lost status, or one whose data is
        incomplete), else the next one due."""
        st = self._stat[conn.cid]
        low = st.next
        for sn in st.missing:
            if sn_lt(sn, low):
                low = sn
        for itt, hole in self.holes.items():
            t = self.tasks.get(itt)
            if hole.statsn is not None and t is not None and t.conn is conn and sn_lt(hole.statsn, low):
                low = hole.statsn
        conn.expstatsn = low

    def _sns(self, conn: Connection, statsn: int, expcmdsn: int, maxcmdsn: int, advance: bool) -> None:
        if advance:
            st = self._stat[conn.cid]
            if statsn == st.next and not st.missing and not self.holes:
                st.next = conn.expstatsn = (statsn + 1) & MASK  # nothing wrong: as at ERL 0
            else:
                self._status_arrived(conn, st, statsn)
        super()._sns(conn, statsn, expcmdsn, maxcmdsn, False)

    def _status_arrived(self, conn: Connection, st: _Stat, statsn: int) -> None:
        if sn_lt(st.next, statsn) and self.neg.erl:  # StatSN next..statsn-1 never came: ask for them again
            count = (statsn - st.next) & MASK
            if count > MAX_STATUS_GAP:
                raise TargetProtocolError(f"StatSN jumped from {st.next} to {statsn}: {count} statuses missing")
            for sn in range(count):
                st.missing[(st.next + sn) & MASK] = None
            self._ask_status(conn, st, st.next, count)
        if statsn in st.missing:  # a status we asked for (not one repeated with resent data)
            del st.missing[statsn]
            st.snacks = 0
        if not sn_lt(statsn, st.next):
            st.next = (statsn + 1) & MASK
        self._hold(conn)

    # ----------------------------------------------------------------- sending SNACKs
    def _snack(self, conn: Connection, kind: int, itt: int, begrun: int, runlength: int, ttt: int = RESERVED_TAG,
               lun: int = 0) -> None:
        req = pdu.SnackRequest(itt=itt, type=kind, ttt=ttt, lun=lun, expstatsn=conn.expstatsn, begrun=begrun,
                               runlength=runlength)
        self.out.append((conn, pdu.encode(req, conn.header_digest, conn.data_digest)))
        if kind != SNACK_DATA_ACK:
            self.unstamped = True

    def _ask_status(self, conn: Connection, st: _Stat, begrun: int, count: int) -> None:
        st.snacks += 1
        if st.snacks > MAX_SNACKS:
            raise ConnectionLost(f"ERL1: connection {conn.cid} still lacks a status after {MAX_SNACKS} Status "
                                 "SNACKs; recovering the session")
        self._snack(conn, SNACK_STATUS, RESERVED_TAG, begrun, count)
        self.counts.status_snacks += 1

    def _ask_data(self, t: Task, hole: _Hole, again: bool = False) -> None:
        """Data SNACK for everything from the first missing DataSN (RunLength 0: LIO's bound is off by one).
        ``again``: the PDU due arrived bad (a resent one, perhaps), so ask even from the same DataSN."""
        if hole.asked_from == t.expdatasn and not again:
            return  # asked already; what arrives meanwhile is what was in flight
        # count the SNACKs in a row that made no progress (the last resend brought nothing in order)
        progress = hole.asked_from >= 0 and sn_lt(hole.asked_from, t.expdatasn)
        hole.snacks = 1 if progress else hole.snacks + 1
        if hole.snacks > MAX_SNACKS:
            raise ConnectionLost(f"ERL1: task 0x{t.itt:08x} still lacks Data-In after {MAX_SNACKS} SNACKs "
                                 "without progress; recovering the session")
        hole.asked_from = t.expdatasn
        hole.since = None
        self._snack(t.conn, SNACK_DATA, t.itt, t.expdatasn, 0)
        self.counts.data_snacks += 1

    def _hole(self, t: Task) -> _Hole:
        hole = self.holes.get(t.itt)
        if hole is None:
            hole = self.holes[t.itt] = _Hole()
        return hole

    # ----------------------------------------------------------------- receiving
    def data_in_sink(self, bhs: bytes, dsl: int) -> memoryview | None:
        if self.holes:  # after a hole, only the PDU due goes to the caller's buffer; the rest is scratch
            itt = (bhs[16] << 24) | (bhs[17] << 16) | (bhs[18] << 8) | bhs[19]
            t = self.tasks.get(itt)
            if itt in self.holes and t is not None and _DIN.unpack(bhs)[11] != t.expdatasn:
                return self._discard[:dsl] if dsl <= len(self._discard) else memoryview(bytearray(dsl))
        return super().data_in_sink(bhs, dsl)

    def _data_in(self, conn: Connection, bhs: bytes, data) -> None:
        (_, flags, _, status, _, lun, itt, ttt, statsn, expcmdsn, maxcmdsn, datasn, _, residual) = _DIN.unpack(bhs)
        t = self.tasks.get(itt)
        if t is None or t.conn is not conn or (datasn == t.expdatasn and not flags & 0x40 and not self.holes):
            super()._data_in(conn, bhs, data)  # in order and nothing to acknowledge (or no such task): as at ERL 0
            return
        if datasn != t.expdatasn:
            self._sns(conn, statsn, expcmdsn, maxcmdsn, bool(flags & 0x01))
            self._out_of_order(conn, t, datasn, flags, status, statsn, residual)
            return
        super()._data_in(conn, bhs, data)  # placed and counted; completed if the status came with it
        if flags & 0x01:
            return
        if flags & 0x40:  # the A bit: acknowledge the data so far (no hole before it, or we would not be here)
            self._snack(conn, SNACK_DATA_ACK, RESERVED_TAG, t.expdatasn, 0, ttt, lun)
            self.counts.data_acks += 1
        hole = self.holes.get(itt)
        if hole is not None and hole.status is not None and not sn_lt(t.expdatasn - 1, hole.last_datasn):
            self._set_status(t, *hole.status)  # the resent data is complete; its status came earlier
            self._complete_scsi(t)

    @staticmethod
    def _set_status(t: Task, status: int, flags: int, residual: int) -> None:
        t.status = status
        t.overflow = bool(flags & 0x04)
        t.underflow = bool(flags & 0x02)
        t.residual = residual

    def _out_of_order(self, conn: Connection, t: Task, datasn: int, flags: int, status: int, statsn: int,
                      residual: int) -> None:
        if not self.neg.erl:
            raise TargetProtocolError(f"Data-In DataSN {datasn} out of order (expected {t.expdatasn})")
        if sn_lt(datasn, t.expdatasn):
            return  # a resent PDU we have already: its payload went to scratch
        hole = self._hole(t)
        if flags & 0x01:
            self._early_status(conn, t, hole, (status, flags, residual), statsn, datasn)
        self._ask_data(t, hole)

    def _early_status(self, conn: Connection, t: Task, hole: _Hole, status: tuple[int, int, int], statsn: int,
                      last_datasn: int) -> None:
        hole.status, hole.statsn, hole.last_datasn = status, statsn, last_datasn
        self._hold(conn)

    def _scsi_rsp(self, conn: Connection, bhs: bytes, data) -> None:
        itt = _DIN.unpack(bhs)[6]
        t = self.tasks.get(itt)
        if t is not None and t.conn is conn and t.read and self.neg.erl:
            sent = _RSP_EXPDATASN.unpack_from(bhs, 36)[0]
            if sn_lt(t.expdatasn, sent):  # Data-In PDUs are missing: keep the status until they come
                (_, flags, _, status, _, _, _, _, statsn, expcmdsn, maxcmdsn, _, _, residual) = _DIN.unpack(bhs)
                self._sns(conn, statsn, expcmdsn, maxcmdsn, True)
                if bhs[2]:  # an iSCSI failure response: nothing to wait for
                    super()._scsi_rsp(conn, bhs, data)
                    return
                hole = self._hole(t)
                self._early_status(conn, t, hole, (status, flags, residual), statsn, (sent - 1) & MASK)
                if data is not None and len(data) >= 2:
                    t.sense = bytes(data[2:2 + ((data[0] << 8) | data[1])])
                self._ask_data(t, hole)
                return
        super()._scsi_rsp(conn, bhs, data)

    def bad_data(self, conn: Connection, bhs: bytes) -> None:
        """The framer found a data digest error in a PDU whose header is sound: recover, or raise to drop."""
        op = bhs[0] & 0x3F
        name = {Op.DATA_IN: "Data-In", Op.SCSI_RSP: "SCSI Response"}.get(op)
        if not self.neg.erl or not conn.header_digest or name is None:
            raise DigestError(f"data digest mismatch on a PDU with opcode 0x{op:02x}"
                              + ("" if conn.header_digest else " (without header digests it cannot be trusted)"))
        self.counts.digest_errors += 1
        (_, flags, _, status, _, _, itt, _, statsn, expcmdsn, maxcmdsn, datasn, _, residual) = _DIN.unpack(bhs)
        has_status = op == Op.SCSI_RSP or flags & 0x01
        again = op == Op.SCSI_RSP and statsn in self._stat[conn.cid].missing  # asked for, and bad again
        self._sns(conn, statsn, expcmdsn, maxcmdsn, bool(has_status) and not again)
        t = self.tasks.get(itt)
        if t is None:
            if itt in self._forgotten:
                return
            raise DigestError(f"data digest mismatch on a {name} for unknown task 0x{itt:08x}")
        if t.conn is not conn:
            raise self._not_outstanding(name, t, conn)
        if op == Op.SCSI_RSP:  # the sense data is lost: the status must come again
            self._stat[conn.cid].missing[statsn] = None
            self._hold(conn)  # first: the SNACK carries ExpStatSN, which must not acknowledge this status
            self._ask_status(conn, self._stat[conn.cid], statsn, 1)
            return
        if sn_lt(datasn, t.expdatasn):
            if t.itt in self.holes:
                return  # a resent copy of data we have: it went to scratch
            raise DigestError(f"data digest mismatch on Data-In DataSN {datasn} of task 0x{itt:08x}, "
                              "over data already placed")
        hole = self._hole(t)
        if has_status:
            self._early_status(conn, t, hole, (status, flags, residual), statsn, datasn)
        self._ask_data(t, hole, again=datasn == t.expdatasn)

    def _other(self, conn: Connection, p: pdu.PDU) -> None:
        if isinstance(p, pdu.Reject) and self.neg.erl and self._reject(conn, p):
            return
        super()._other(conn, p)

    def _reject(self, conn: Connection, p: pdu.Reject) -> bool:
        """A Reject we recover from inside the command; False leaves it to the base class."""
        rejected = p.rejected_header
        if len(rejected) < 20:
            return False
        op = rejected[0] & 0x3F
        if op == Op.SNACK_REQ:
            raise ConnectionLost(f"ERL1: the target rejected our SNACK ({p.describe()}); recovering the session")
        if p.reason != REJECT_DATA_DIGEST or op not in (Op.DATA_OUT, Op.SCSI_CMD):
            return False
        self._sns(conn, p.statsn, p.expcmdsn, p.maxcmdsn, True)
        self.counts.target_digest_errors += 1
        t = self.tasks.get(struct.unpack_from(">I", rejected, 16)[0])
        if t is None or t.conn is not conn:
            return True  # a task we gave up on
        if op == Op.SCSI_CMD:  # immediate data hit: the target dropped the command; plug its CmdSN again
            self.out.append((conn, self._frame_command(t, conn)))
            self.counts.command_retries += 1
        return True  # a Data-Out: the target asks again with a recovery R2T

    def _complete_scsi(self, t: Task) -> None:
        hole = self.holes.pop(t.itt, None)
        conn = t.conn
        super()._complete_scsi(t)
        if hole is not None:
            self._forgotten[t.itt] = None  # resent PDUs still in flight for it are discarded
            while len(self._forgotten) > 1024:
                del self._forgotten[next(iter(self._forgotten))]
            if conn is not None and conn.cid in self._stat:
                self._hold(conn)

    # ----------------------------------------------------------------- giving up, timers
    def forget(self, t: Task) -> None:
        self.holes.pop(t.itt, None)
        conn = t.conn
        super().forget(t)
        if conn is not None and conn.cid in self._stat:
            self._hold(conn)

    def unfinished(self) -> list[Task]:
        self.holes.clear()
        for st in self._stat.values():
            st.missing.clear()
        return super().unfinished()

    def fail_all(self, error, tasks=()) -> None:
        self.holes.clear()
        super().fail_all(error, tasks)

    def stamp(self, now: float) -> None:
        """The driver's clock: SNACKs sent since the last call went out at ``now``."""
        self.unstamped = False
        for hole in self.holes.values():
            if hole.since is None and hole.asked_from >= 0:
                hole.since = now
        for st in self._stat.values():
            for sn, since in st.missing.items():
                if since is None:
                    st.missing[sn] = now

    def next_deadline(self) -> float | None:
        times = [h.since for h in self.holes.values() if h.since is not None]
        times += [s for st in self._stat.values() for s in st.missing.values() if s is not None]
        return min(times) + self.timeout if times else None

    def handle_timer(self, now: float) -> list[int]:
        """CIDs whose SNACKs went unanswered for ``timeout`` s: the driver drops them (session recovery)."""
        late = set()
        for itt, hole in self.holes.items():
            t = self.tasks.get(itt)
            if hole.since is not None and now - hole.since >= self.timeout and t is not None and t.conn:
                late.add(t.conn.cid)
        for cid, st in self._stat.items():
            if any(s is not None and now - s >= self.timeout for s in st.missing.values()):
                late.add(cid)
        return sorted(late)


def core_class(negotiated) -> type[SessionCore]:
    """The session core for what login negotiated: `Erl1Core` at ErrorRecoveryLevel >= 1."""
    return Erl1Core if negotiated.erl >= 1 else SessionCore
