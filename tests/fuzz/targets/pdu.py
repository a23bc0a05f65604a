"""PDU path: bytes from the target through the production receive path of the full-feature phase.

Input: two bytes choose the session, the rest is what the target sends.
  byte 0: bit 0 header digest, bit 1 data digest, bits 2-3 our MaxRecvDataSegmentLength, bit 4 the
          segmentation mode, bits 5-7 how the stream is cut into reads (`pieces`);
  byte 1: bit 0 ErrorRecoveryLevel 1 (the `Erl1Core` login picks then, with SNACK recovery of digest errors,
          DataSN and StatSN gaps), bits 1-3 how far the clock moves per read (`STEPS`; 0 leaves command
          timeouts out), bits 4-6 the second cut of the segmentation mode.
The session (targets/driver.py) is a logged-in `SessionCore` or `Erl1Core` with commands in flight (a
16 KiB read, a 16 KiB write, an INQUIRY, a NOP, an ABORT TASK of a command the caller gave up on, a
SendTargets text, a logout), read by a `Framer` wired as io.link wires it; between reads it is driven as
io.session and io.timeouts drive it: UNIT ATTENTION retries, SNACK timers, the command-timeout
escalation (ABORT TASK, LU reset, reinstatement, EIO for one command) and reinstatements after a drop.
The segmentation mode frames the same stream with two cuts into reads: the framer must hand the same PDUs
(BHS, AHS, data), the same data digest failures and the same error whatever the TCP segmentation.
Clean errors: TargetProtocolError (DigestError, NegotiationError are kinds of it) and ConnectionLost,
the ones io.link drops a connection for, once the driver has reinstated the session twice.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import project as p
from . import OracleFailure, Target, pieces
from .driver import INQUIRY_LEN, READ_LEN, SessionDriver, start_session

MAX_RECV = (512, 8192, 262144, 1 << 20)  # 1 MiB: what io.session declares
STEPS = (0.0, 1.0, 4.0, 10.0, 16.0, 31.0, 46.0, 121.0)  # seconds per read; timeouts are 30/15/30/120 s


def flags_byte(header_digest: bool, data_digest: bool, max_recv_dsl: int, segmentation: bool = False,
               cut: int = 0) -> int:
    return (int(header_digest) | int(data_digest) << 1 | MAX_RECV.index(max_recv_dsl) << 2
            | int(segmentation) << 4 | (cut & 7) << 5)


def mode_byte(erl: int = 0, step: int = 0, cut2: int = 0) -> int:
    return (erl & 1) | (step & 7) << 1 | (cut2 & 7) << 4


def negotiated(flags: int, mode: int = 0) -> p.Negotiated:
    return p.Negotiated(header_digest=bool(flags & 1), data_digest=bool(flags & 2),
                        max_recv_dsl=MAX_RECV[(flags >> 2) & 3], max_xmit_dsl=8192, erl=mode & 1)


def _production(flags: int, mode: int, stream: bytes) -> None:
    core, conn, _ = start_session(negotiated(flags, mode))
    step = STEPS[(mode >> 1) & 7]
    driver = SessionDriver(core, conn, step, escalate=step > 0)
    for piece in pieces(stream, flags >> 5):
        driver.feed(piece)


def _framed(flags: int, erl: bool, stream: bytes, cut: int) -> tuple[list, str | None, bool]:
    """What the framer hands over for ``stream`` cut by ``cut``: PDUs and digest failures, the error, a
    clean end (nothing buffered, no payload half placed)."""
    got: list = []
    sunk: list[memoryview] = []

    def sink(bhs: bytes, dsl: int) -> memoryview:
        sunk.append(memoryview(bytearray(dsl)))
        return sunk[-1]

    def handler(bhs: bytes, ahs: bytes, data) -> None:
        got.append(("pdu", bytes(bhs), bytes(ahs), bytes(sunk.pop()) if data is None else bytes(data)))

    def bad(bhs: bytes, ahs: bytes) -> None:
        if bhs[0] & 0x3F == p.pdu.Op.DATA_IN:
            sunk.pop()
        got.append(("bad-data", bytes(bhs), bytes(ahs)))

    framer = p.Framer(handler, sink, MAX_RECV[(flags >> 2) & 3], bool(flags & 1), bool(flags & 2))
    if erl:
        framer.on_bad_data = bad
    try:
        for piece in pieces(stream, cut):
            framer.feed(piece)
    except p.TargetProtocolError as e:
        return got, f"{type(e).__name__}: {e}", False
    return got, None, not framer.take_rest() and not sunk


def _segmentation(flags: int, mode: int, stream: bytes) -> None:
    cuts = (flags >> 5, (mode >> 4) & 7)
    (a, a_err, a_end), (b, b_err, b_end) = (_framed(flags, bool(mode & 1), stream, c) for c in cuts)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            check = "framer-segmentation:ahs" if x[0] == y[0] == "pdu" and x[2] != y[2] else "framer-segmentation"
            raise OracleFailure(check, f"item {i} differs with cuts {cuts}: {x!r} / {y!r}")
    # the same number of items, the same error at the same place, the same state at the end of the stream
    if len(a) != len(b) or a_err != b_err or a_end != b_end:
        raise OracleFailure("framer-segmentation", f"cuts {cuts}: {len(a)} / {len(b)} items, errors {a_err!r} / "
                                                   f"{b_err!r}, clean ends {a_end} / {b_end}")


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, mode, stream = data[0], data[1], data[2:]
    if flags & 0x10:
        _segmentation(flags, mode, stream)
    else:
        _production(flags, mode, stream)


# ----------------------------------------------------------------------------------------------- seeds
SN = {"expcmdsn": 8, "maxcmdsn": 72}
_BLOCK = bytes(range(256)) * 2
_SENSE_UA = bytes([0, 18, 0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0])


def answers() -> Iterator[tuple[str, p.pdu.PDU]]:
    """A cooperative target's answer to every command of `start_session`, PDU by PDU, with our encoder."""
    pdu = p.pdu
    for i in range(0, READ_LEN, 8192):
        last = i + 8192 >= READ_LEN
        yield "data-in", pdu.DataIn(itt=1, final=last, has_status=last, datasn=i // 8192, offset=i,
                                    data=_BLOCK * 16, statsn=1 if last else 0, **SN)
    yield "r2t", pdu.R2T(itt=2, ttt=0x1234, offset=8192, length=8192, statsn=2, **SN)
    yield "scsi-rsp", pdu.ScsiResponse(itt=2, statsn=2, **SN)
    yield "scsi-rsp-ua", pdu.ScsiResponse(itt=3, status=2, data=_SENSE_UA, statsn=3, **SN)
    inq = bytes([0, 0, 5, 2, 91, 0, 0, 2]) + b"IET     VIRTUAL-DISK    0001" + bytes(61)
    yield "data-in-short", pdu.DataIn(itt=3, final=True, has_status=True, underflow=True, residual=0,
                                      data=inq[:INQUIRY_LEN], statsn=3, **SN)
    yield "nop-in", pdu.NopIn(itt=4, data=b"bootkit!", statsn=4, **SN)
    yield "tmf-rsp", pdu.TaskMgmtResponse(itt=6, response=1, statsn=5, **SN)
    text = p.encode_text([("TargetName", "iqn.2026-11.test.bootkit:disk"), ("TargetAddress", "127.0.0.1:3261,1")])
    yield "text-rsp", pdu.TextResponse(itt=7, final=True, data=text, statsn=6, **SN)
    yield "data-in-forgotten", pdu.DataIn(itt=5, final=True, has_status=True, data=bytes(4096), statsn=7, **SN)
    yield "logout-rsp", pdu.LogoutResponse(itt=8, statsn=8, **SN)
    yield "nop-in-ping", pdu.NopIn(ttt=77, lun=1 << 48, data=b"ping", statsn=9, **SN)
    yield "async-logout", pdu.AsyncMessage(event=1, param3=2, data=b"\0\0", statsn=11, **SN)
    yield "async-drop", pdu.AsyncMessage(event=2, param2=2, statsn=11, **SN)
    yield "async-scsi", pdu.AsyncMessage(event=0, data=b"\0\x04sens", statsn=11, **SN)
    rejected = pdu.encode_bytes(pdu.NopOut(itt=4))[:48]
    yield "reject", pdu.Reject(reason=9, data=rejected, statsn=12, **SN)
    yield "ahs", pdu.NopIn(ttt=78, ahs=bytes([0, 4, 1, 0, 0, 0, 0, 0]), statsn=13, **SN)
    yield "odd-length", pdu.NopIn(ttt=79, data=b"abcde", statsn=14, **SN)


def _erl1_streams() -> Iterator[tuple[str, list[bytes]]]:
    """ERL 1 recoveries (header and data digests on): a data digest error, a DataSN gap, a status before its
    data, a lost status, the A bit, and the target's Reject of our immediate data; each answered as LIO does."""
    pdu = p.pdu

    def enc(one: pdu.PDU, corrupt: bool = False) -> bytes:
        raw = bytearray(pdu.encode_bytes(one, True, True))
        if corrupt:
            raw[-1] ^= 0xFF  # the data digest
        return bytes(raw)

    def din(sn: int, status: bool = False, ack: bool = False, statsn: int = 1) -> pdu.DataIn:
        return pdu.DataIn(itt=1, final=status, has_status=status, ack=ack, datasn=sn, offset=sn * 8192,
                          data=_BLOCK * 16, statsn=statsn if status else 0, **SN)

    yield "digest", [enc(din(0), corrupt=True), enc(din(1, status=True)), enc(din(0)), enc(din(1, status=True))]
    yield "gap", [enc(din(1, status=True)), enc(din(0)), enc(din(1, status=True))]
    early = pdu.ScsiResponse(itt=1, statsn=1, expdatasn=2, **SN)
    yield "status-first", [enc(early), enc(din(0)), enc(din(1))]
    yield "status-gap", [enc(pdu.NopIn(itt=4, data=b"bootkit!", statsn=3, **SN)),
                         enc(pdu.ScsiResponse(itt=2, statsn=1, **SN)), enc(pdu.ScsiResponse(itt=3, statsn=2, **SN))]
    yield "ack", [enc(din(0, ack=True)), enc(din(1, status=True))]
    sense = pdu.ScsiResponse(itt=3, status=2, data=_SENSE_UA, statsn=1, **SN)
    yield "sense-digest", [enc(sense, corrupt=True), enc(sense)]
    yield "resent-bad-again", [enc(din(0), corrupt=True), enc(din(1, status=True)), enc(din(0), corrupt=True),
                               enc(din(0)), enc(din(0), corrupt=True), enc(din(1, status=True))]
    yield "forgotten-digest", [enc(pdu.DataIn(itt=5, final=True, has_status=True, data=bytes(4096), statsn=1, **SN),
                                   corrupt=True)]
    yield "failure-before-data", [enc(pdu.ScsiResponse(itt=1, response=1, expdatasn=2, statsn=1, **SN))]
    cmd = bytearray(48)
    cmd[0], cmd[16:20] = p.pdu.Op.SCSI_CMD, (2).to_bytes(4, "big")
    yield "reject-command", [enc(pdu.Reject(reason=2, data=bytes(cmd), statsn=1, **SN)),
                             enc(pdu.R2T(itt=2, ttt=9, offset=0, length=8192, statsn=2, **SN))]


def _escalation_stream() -> list[bytes]:
    """48-byte PDUs, one per read, while the clock runs 4 s per read: after 8 reads the read, the write and the
    INQUIRY time out (ABORT TASKs get ITTs 9, 10, 11). The read's abort completes (it goes again as ITT 12),
    the write's finds no task, so its LU is reset (ITT 13), which completes: the LU's commands go again.
    Then only pings: the ladder climbs to the reinstatement, and to the EIO 120 s later."""
    pdu = p.pdu
    ping = [pdu.encode_bytes(pdu.NopIn(ttt=100 + i, statsn=1, **SN)) for i in range(53)]
    tmf = [pdu.encode_bytes(pdu.TaskMgmtResponse(itt=itt, response=r, statsn=1 + i, **SN))
           for i, (itt, r) in enumerate(((9, 0), (10, 1), (13, 0), (11, 255)))]
    return [*ping[:8], *tmf, *ping[8:]]


def seeds() -> Iterator[tuple[str, bytes]]:
    for hd in (False, True):
        for dd in (False, True):
            stream = b""
            for i, (name, one) in enumerate(answers()):
                raw = p.pdu.encode_bytes(one, hd, dd)
                stream += raw
                yield f"{i:02d}-{name}-hd{int(hd)}-dd{int(dd)}", bytes([flags_byte(hd, dd, 262144), 0]) + raw
            yield f"session-hd{int(hd)}-dd{int(dd)}", bytes([flags_byte(hd, dd, 262144, cut=7), 0]) + stream
            yield (f"segmentation-hd{int(hd)}-dd{int(dd)}",
                   bytes([flags_byte(hd, dd, 8192, True, 3), mode_byte(erl=hd & dd, cut2=0)]) + stream)
            yield (f"erl1-session-hd{int(hd)}-dd{int(dd)}",
                   bytes([flags_byte(hd, dd, 262144, cut=6), mode_byte(erl=1, step=1)]) + stream)
    for name, parts in _erl1_streams():
        yield f"erl1-{name}", bytes([flags_byte(True, True, 262144, cut=0), mode_byte(erl=1)]) + b"".join(parts)
        yield f"erl1-{name}-cut", bytes([flags_byte(True, True, 8192, cut=3), mode_byte(erl=1, step=2)]) + b"".join(
            parts)
    esc = b"".join(_escalation_stream())
    yield "escalation", bytes([flags_byte(False, False, 8192, cut=4), mode_byte(step=2)]) + esc
    yield "escalation-erl1", bytes([flags_byte(False, False, 8192, cut=4), mode_byte(erl=1, step=2)]) + esc
    oversize = p.pdu.NopIn(itt=4, data=bytes(9000))
    yield "oversize", bytes([flags_byte(False, False, 8192), 0]) + p.pdu.encode_bytes(oversize)


TARGET = Target(name="pdu", doc="Framer + SessionCore/Erl1Core receive path with escalation (and segmentation)",
                clean=(p.TargetProtocolError, p.ConnectionLost), one_input=one_input, seeds=seeds, max_len=40960)
