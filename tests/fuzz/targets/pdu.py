"""PDU path: bytes from the target through the production receive path of the full-feature phase.

Input: byte 0 chooses the connection (bit 0 header digest, bit 1 data digest, bits 2-3 our
MaxRecvDataSegmentLength, bit 4 the differential mode, bits 5-7 how the stream is cut into reads); the
rest is what the target sends. The production wiring is `Framer(core.receive, core.data_in_sink, ...)`
over a `SessionCore` with commands in flight (a 16 KiB read, a 16 KiB write, an INQUIRY, a NOP, an ABORT
TASK of a command the caller gave up on, a SendTargets text, a logout), as initiator/link.py sets it
up; after every read the core's output is drained and UNIT ATTENTION retries reissued as the transport
does. The differential mode frames the same stream with `Framer` and with `pdu.Decoder`: the two must
deliver the same PDUs. Clean errors: TargetProtocolError (DigestError, NegotiationError are kinds of it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from .. import project as p
from . import OracleFailure, Target, pieces

LUN = 1
READ_LEN = 16384
WRITE_LEN = 16384
INQUIRY_LEN = 96
MAX_RECV = (512, 8192, 65536, 262144)
_WRITE_DATA = bytes(range(256)) * (WRITE_LEN // 256)


def flags_byte(header_digest: bool, data_digest: bool, max_recv_dsl: int, differential: bool = False,
               cut: int = 0) -> int:
    return (int(header_digest) | int(data_digest) << 1 | MAX_RECV.index(max_recv_dsl) << 2
            | int(differential) << 4 | (cut & 7) << 5)


def negotiated(flags: int) -> p.Negotiated:
    return p.Negotiated(header_digest=bool(flags & 1), data_digest=bool(flags & 2),
                        max_recv_dsl=MAX_RECV[(flags >> 2) & 3], max_xmit_dsl=8192)


def new_session(neg: p.Negotiated, cmdsn: int = 1, expcmdsn: int = 1, maxcmdsn: int = 64,
                expstatsn: int = 1) -> tuple[p.SessionCore, p.Connection]:
    """A session core with one connection in the full-feature phase, as the transport builds them."""
    core = p.SessionCore(neg, cmdsn, expcmdsn, maxcmdsn)
    conn = p.Connection(0)
    conn.fire(p.ConnEvent.CONNECT)
    conn.fire(p.ConnEvent.CONNECTED)
    conn.logged_in(neg, expstatsn)
    core.attach(conn)
    return core, conn


def session_framer(core: p.SessionCore, conn: p.Connection) -> p.Framer:
    """The receive side of a logged-in connection, wired as Link.enter_ffp wires it."""
    return p.Framer(lambda b, a, d: core.receive(conn, b, a, d), core.data_in_sink, conn.max_recv_dsl,
                    conn.header_digest, conn.data_digest)


def start_session(neg: p.Negotiated, cmdsn: int = 1, expcmdsn: int = 1, maxcmdsn: int = 64,
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


def after_read(core: p.SessionCore, conn: p.Connection) -> list:
    """What the transport does after each read: take the output, wake callers, reissue UA retries."""
    out = [b for _, bufs in core.out for b in bufs]
    core.out.clear()
    core.done.clear()
    core.events.clear()
    while core.retry and core.window_open() and conn.usable:  # the rest waits for the window, as queued
        out += core.issue(core.retry.pop(0), conn)
    return out


def _production(flags: int, stream: bytes) -> None:
    neg = negotiated(flags)
    core, conn, _ = start_session(neg)
    framer = session_framer(core, conn)
    for piece in pieces(stream, flags >> 5):
        framer.feed(piece)
        after_read(core, conn)


def _framed(flags: int, stream: bytes) -> tuple[list, BaseException | None, bool]:
    """PDUs as Framer delivers them (Data-In payloads taken from the sink), the error, and a clean end."""
    got: list = []
    sunk: list[memoryview] = []

    def sink(bhs: bytes, dsl: int) -> memoryview:
        sunk.append(memoryview(bytearray(dsl)))
        return sunk[-1]

    def handler(bhs: bytes, ahs: bytes, data) -> None:
        got.append(p.pdu.decode_pdu(bhs, ahs, bytes(sunk.pop()) if data is None else data))

    framer = p.Framer(handler, sink, MAX_RECV[(flags >> 2) & 3], bool(flags & 1), bool(flags & 2))
    try:
        for piece in pieces(stream, flags >> 5):
            framer.feed(piece)
    except p.TargetProtocolError as e:
        return got, e, False
    return got, None, not framer.take_rest() and not sunk


def _decoded(flags: int, stream: bytes) -> tuple[list, BaseException | None, bool]:
    dec = p.pdu.Decoder(max_data=MAX_RECV[(flags >> 2) & 3], header_digest=bool(flags & 1),
                        data_digest=bool(flags & 2))
    got: list = []
    try:
        for piece in pieces(stream, flags >> 5):
            dec.feed(piece)
            while (one := dec.next_pdu()) is not None:
                got.append(one)
    except p.TargetProtocolError as e:
        return got, e, False
    return got, None, dec.buffered == 0


def _differential(flags: int, stream: bytes) -> None:
    fr, fr_err, fr_end = _framed(flags, stream)
    de, de_err, de_end = _decoded(flags, stream)
    for i, (a, b) in enumerate(zip(fr, de)):
        if a != b:
            check = "framer-decoder:ahs" if a.ahs != b.ahs and dataclasses.replace(a, ahs=b.ahs) == b else \
                "framer-decoder"
            raise OracleFailure(check, f"PDU {i} differs: Framer {a!r} / Decoder {b!r}")
    # One may stop earlier than the other (Framer checks a header digest before the payload is in), but
    # a stream that one consumed completely and cleanly, the other must frame whole too.
    if (fr_end or de_end) and (fr_err is not None or de_err is not None or len(fr) != len(de)):
        raise OracleFailure("framer-decoder", f"Framer: {len(fr)} PDUs, error {fr_err!r}, clean end {fr_end}; "
                                              f"Decoder: {len(de)} PDUs, error {de_err!r}, clean end {de_end}")


def one_input(data: bytes) -> None:
    if not data:
        return
    flags, stream = data[0], data[1:]
    if flags & 0x10:
        _differential(flags, stream)
    else:
        _production(flags, stream)


def answers() -> Iterator[tuple[str, bytes]]:
    """A cooperative target's answer to every command of `start_session`, PDU by PDU, with our encoder."""
    pdu = p.pdu
    sn = {"expcmdsn": 8, "maxcmdsn": 72}
    block = bytes(range(256)) * 2
    for i in range(0, READ_LEN, 8192):
        last = i + 8192 >= READ_LEN
        yield "data-in", pdu.DataIn(itt=1, final=last, has_status=last, datasn=i // 8192, offset=i,
                                    data=block * 16, statsn=1 if last else 0, **sn)
    yield "r2t", pdu.R2T(itt=2, ttt=0x1234, offset=8192, length=8192, statsn=2, **sn)
    yield "scsi-rsp", pdu.ScsiResponse(itt=2, statsn=2, **sn)
    sense = bytes([0, 18, 0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0])
    yield "scsi-rsp-ua", pdu.ScsiResponse(itt=3, status=2, data=sense, statsn=3, **sn)
    inq = bytes([0, 0, 5, 2, 91, 0, 0, 2]) + b"IET     VIRTUAL-DISK    0001" + bytes(61)
    yield "data-in-short", pdu.DataIn(itt=3, final=True, has_status=True, underflow=True, residual=0,
                                      data=inq[:INQUIRY_LEN], statsn=3, **sn)
    yield "nop-in", pdu.NopIn(itt=4, data=b"bootkit!", statsn=4, **sn)
    yield "tmf-rsp", pdu.TaskMgmtResponse(itt=6, response=1, statsn=5, **sn)
    text = p.encode_text([("TargetName", "iqn.2026-11.test.bootkit:disk"), ("TargetAddress", "127.0.0.1:3261,1")])
    yield "text-rsp", pdu.TextResponse(itt=7, final=True, data=text, statsn=6, **sn)
    yield "data-in-forgotten", pdu.DataIn(itt=5, final=True, has_status=True, data=bytes(4096), statsn=7, **sn)
    yield "logout-rsp", pdu.LogoutResponse(itt=8, statsn=8, **sn)
    yield "nop-in-ping", pdu.NopIn(ttt=77, lun=1 << 48, data=b"ping", statsn=9, **sn)
    yield "async-logout", pdu.AsyncMessage(event=1, param3=2, data=b"\0\0", statsn=11, **sn)
    yield "async-drop", pdu.AsyncMessage(event=2, param2=2, statsn=11, **sn)
    yield "async-scsi", pdu.AsyncMessage(event=0, data=b"\0\x04sens", statsn=11, **sn)
    rejected = pdu.encode_bytes(pdu.NopOut(itt=4))[:48]
    yield "reject", pdu.Reject(reason=9, data=rejected, statsn=12, **sn)
    yield "ahs", pdu.NopIn(ttt=78, ahs=bytes([0, 4, 1, 0, 0, 0, 0, 0]), statsn=13, **sn)
    yield "odd-length", pdu.NopIn(ttt=79, data=b"abcde", statsn=14, **sn)


def seeds() -> Iterator[tuple[str, bytes]]:
    for hd in (False, True):
        for dd in (False, True):
            stream = b""
            for i, (name, one) in enumerate(answers()):
                raw = p.pdu.encode_bytes(one, hd, dd)
                stream += raw
                yield f"{i:02d}-{name}-hd{int(hd)}-dd{int(dd)}", bytes([flags_byte(hd, dd, 262144)]) + raw
            yield f"session-hd{int(hd)}-dd{int(dd)}", bytes([flags_byte(hd, dd, 262144, cut=7)]) + stream
            yield f"differential-hd{int(hd)}-dd{int(dd)}", bytes([flags_byte(hd, dd, 8192, True, 3)]) + stream
    oversize = p.pdu.NopIn(itt=4, data=bytes(9000))
    yield "oversize", bytes([flags_byte(False, False, 8192)]) + p.pdu.encode_bytes(oversize)


TARGET = Target(name="pdu", doc="Framer + SessionCore receive path (and Framer vs Decoder)",
                clean=(p.TargetProtocolError,), one_input=one_input, seeds=seeds, max_len=40960)
