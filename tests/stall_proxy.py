"""A PDU-aware TCP proxy on loopback that stalls chosen iSCSI commands while everything else flows.

``StallProxy(host, port)`` forwards each accepted connection to the target and reads the iSCSI stream in
both directions (BHS, AHS, digests as the login negotiated them). Rules pick SCSI commands by opcode and
block range (`Match`); what happens to a picked command, per connection and ITT:

- ``lose``: the command never reaches the target, as if lost on the way: its Command PDU and every
  Data-Out with its ITT are dropped. The target then sees a hole in the CmdSN sequence and queues what
  follows. An ABORT TASK naming the lost ITT is answered as RFC 7143 11.5.1 (b) asks of a target
  ("consider the CmdSN received" and "Function complete"), which tgtd does not do by itself: the proxy
  sends a TEST UNIT READY with the lost command's CmdSN and ITT in its place (its answer is dropped),
  then turns tgtd's "Task does not exist" for that abort into "Function complete".
- ``hang``: the target gets the command but its answers for that ITT (R2T, Data-In, SCSI Response) never
  come back, as from a target whose backend hung. tgtd answers an ABORT TASK for it "Task does not exist".
- ``freeze``: the connection goes half-open from that command on: nothing more is forwarded either way and
  the proxy stops reading, but both sockets stay open.

``events`` also records every TMF request and every completed login (a reinstatement shows as one).
``drop_opcode(op)`` drops every initiator PDU with that opcode (``0x06``: a logout the target never
answers). NOP-Outs, logins and all unpicked commands pass. ``heal()`` forgets the rules (what was stalled
stays stalled). ``events`` records what the proxy did, with monotonic times, for timelines. Threads only.
"""

from __future__ import annotations

import re
import selectors
import socket
import struct
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from initiator.protocol.bhs import crc32c
from initiator.scsi.describe import CommandInfo, describe
from tests.proxy import LoopbackProxy

SCSI_CMD, TMF_REQ, DATA_OUT, LOGOUT_REQ = 0x01, 0x02, 0x05, 0x06
SCSI_RSP, TMF_RSP, LOGIN_RSP, DATA_IN, R2T = 0x21, 0x22, 0x23, 0x25, 0x31
ABORT_TASK = 1
TMF_NAMES = {1: "ABORT TASK", 2: "ABORT TASK SET", 4: "CLEAR TASK SET", 5: "LOGICAL UNIT RESET",
             6: "TARGET WARM RESET", 7: "TARGET COLD RESET"}
TMF_COMPLETE, TMF_NO_TASK = 0, 1
_DIGEST_KEY = re.compile(rb"(HeaderDigest|DataDigest)=([A-Za-z0-9]+)")


@dataclass(frozen=True)
class Match:
    """Which SCSI commands a rule picks: opcodes (None: any) and, optionally, blocks first..last touched."""

    ops: Collection[int] | None = None
    lba: tuple[int, int] | None = None

    def __call__(self, info: CommandInfo) -> bool:
        if self.ops is not None and info.opcode not in self.ops:
            return False
        return self.lba is None or info.overlaps(*self.lba)


@dataclass
class Rule:
    match: Match
    mode: str                   # lose | hang | freeze
    count: int | None = None    # how many more commands it picks (None: every one)
    picked: int = 0


@dataclass(frozen=True)
class Event:
    t: float                    # time.monotonic()
    kind: str                   # lose, hang, freeze, abort, tmf, login, hole-filled, tmf-rewritten, drop
    conn: int
    itt: int | None
    what: str


@dataclass
class _Conn:
    index: int
    ffp: bool = False
    header_digest: bool = False
    data_digest: bool = False
    negotiated: dict[bytes, bool] = field(default_factory=dict)
    lost: dict[int, tuple[bytes, bytes, bytes]] = field(default_factory=dict)  # ITT -> LUN, CmdSN, ExpStatSN
    mute: set[int] = field(default_factory=set)         # ITTs whose answers from the target are dropped
    rewrite: set[int] = field(default_factory=set)      # TMF ITTs whose "no task" becomes "complete"
    frozen: bool = False


class StallProxy(LoopbackProxy):
    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.rules: list[Rule] = []
        self.dropped_ops: set[int] = set()
        self.events: list[Event] = []
        self.start()

    # ------------------------------------------------------------------ rules
    def stall(self, match: Match, mode: str = "lose", count: int | None = None) -> Rule:
        if mode not in ("lose", "hang", "freeze"):
            raise ValueError(f"unknown stall mode {mode!r}")
        rule = Rule(match, mode, count)
        with self._lock:
            self.rules.append(rule)
        return rule

    def drop_opcode(self, op: int) -> None:
        with self._lock:
            self.dropped_ops.add(op)

    def heal(self) -> None:
        with self._lock:
            self.rules.clear()
            self.dropped_ops.clear()

    def seen(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def _note(self, kind: str, conn: _Conn, itt: int | None, what: str) -> None:
        with self._lock:
            self.events.append(Event(time.monotonic(), kind, conn.index, itt, what))

    def _pick(self, info: CommandInfo) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if (rule.count is None or rule.count > 0) and rule.match(info):
                    if rule.count is not None:
                        rule.count -= 1
                    rule.picked += 1
                    return rule
        return None

    # ------------------------------------------------------------------ plumbing
    def _serve(self, client: socket.socket, upstream: socket.socket, index: int) -> None:
        conn = _Conn(index)
        bufs = {client: bytearray(), upstream: bytearray()}
        sel = selectors.DefaultSelector()
        for s in (client, upstream):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                if conn.frozen:             # half-open: read nothing, send nothing, close nothing
                    time.sleep(0.1)
                    continue
                for key, _ in sel.select(0.2):
                    src = key.fileobj
                    try:
                        data = src.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not data:
                        return
                    buf = bufs[src]
                    buf += data
                    up = src is client
                    out = self._split(buf, conn, up)
                    if out:
                        dst = upstream if up else client
                        dst.setblocking(True)
                        dst.sendall(b"".join(out))
                        dst.setblocking(False)
        except OSError:
            return
        finally:
            sel.close()
            client.close()
            upstream.close()

    def _split(self, buf: bytearray, conn: _Conn, up: bool) -> list[bytes]:
        """Cut whole PDUs off ``buf``; return what to send on (a PDU may be dropped, changed or added)."""
        out: list[bytes] = []
        while len(buf) >= 48 and not conn.frozen:
            ahs = buf[4] * 4
            dsl = int.from_bytes(buf[5:8], "big")
            hd = 4 if conn.ffp and conn.header_digest else 0
            dd = 4 if conn.ffp and conn.data_digest and dsl else 0
            total = 48 + ahs + hd + dsl + (-dsl & 3) + dd
            if len(buf) < total:
                break
            pdu = bytes(buf[:total])
            del buf[:total]
            out += self._up(pdu, conn) if up else self._down(pdu, conn)
        return out

    # ------------------------------------------------------------------ the rules at work
    def _up(self, pdu: bytes, conn: _Conn) -> list[bytes]:
        op, itt = pdu[0] & 0x3F, int.from_bytes(pdu[16:20], "big")
        if not conn.ffp:
            return [pdu]
        if op in self.dropped_ops:
            self._note("drop", conn, itt, f"opcode 0x{op:02x}")
            return []
        if op == SCSI_CMD:
            info = describe(pdu[32:48])
            rule = self._pick(info)
            if rule is None:
                return [pdu]
            self._note(rule.mode, conn, itt, str(info))
            if rule.mode == "hang":
                conn.mute.add(itt)
                return [pdu]
            if rule.mode == "freeze":
                conn.frozen = True
                return []
            conn.lost[itt] = (pdu[8:16], pdu[24:28], pdu[28:32])
            return []
        if op == DATA_OUT and itt in conn.lost:
            return []
        if op == TMF_REQ and pdu[1] & 0x7F != ABORT_TASK:
            self._note("tmf", conn, itt, TMF_NAMES.get(pdu[1] & 0x7F, f"TMF {pdu[1] & 0x7F}"))
        if op == TMF_REQ and pdu[1] & 0x7F == ABORT_TASK:
            rtt = int.from_bytes(pdu[20:24], "big")
            self._note("abort", conn, rtt, f"ABORT TASK (TMF ITT 0x{itt:08x})")
            held = conn.lost.pop(rtt, None)
            if held is not None:        # RFC 7143 11.5.1 (b): the CmdSN counts as received; Function complete
                lun, cmdsn, expstatsn = held
                conn.mute.add(rtt)
                conn.rewrite.add(itt)
                self._note("hole-filled", conn, rtt, "TEST UNIT READY in the lost command's place")
                return [self._tur(lun, rtt, cmdsn, expstatsn, conn), pdu]
        return [pdu]

    def _down(self, pdu: bytes, conn: _Conn) -> list[bytes]:
        op, itt = pdu[0] & 0x3F, int.from_bytes(pdu[16:20], "big")
        if op == LOGIN_RSP:
            for key, value in _DIGEST_KEY.findall(pdu[48:]):
                conn.negotiated[key] = value.upper() == b"CRC32C"
            if pdu[1] & 0x80 and pdu[1] & 0x03 == 3 and pdu[36] == 0:   # final answer, status class 0: FFP
                self._note("login", conn, None, "logged in")
                conn.ffp = True
                conn.header_digest = conn.negotiated.get(b"HeaderDigest", False)
                conn.data_digest = conn.negotiated.get(b"DataDigest", False)
            return [pdu]
        if op in (SCSI_RSP, DATA_IN, R2T) and itt in conn.mute:
            return []
        if op == TMF_RSP and itt in conn.rewrite:
            conn.rewrite.discard(itt)
            if pdu[2] == TMF_NO_TASK:
                self._note("tmf-rewritten", conn, itt, "Task does not exist -> Function complete")
                return [self._with_response(pdu, TMF_COMPLETE, conn)]
        return [pdu]

    def _tur(self, lun: bytes, itt: int, cmdsn: bytes, expstatsn: bytes, conn: _Conn) -> bytes:
        bhs = (bytes([SCSI_CMD, 0x81, 0, 0, 0, 0, 0, 0]) + lun + itt.to_bytes(4, "big") + bytes(4) + cmdsn
               + expstatsn + bytes(16))
        return bhs + (struct.pack("<I", crc32c(bhs)) if conn.header_digest else b"")

    @staticmethod
    def _with_response(pdu: bytes, response: int, conn: _Conn) -> bytes:
        bhs = pdu[:2] + bytes([response]) + pdu[3:48]
        rest = pdu[48:]
        if conn.header_digest:
            rest = struct.pack("<I", crc32c(bhs)) + rest[4:]
        return bhs + rest
