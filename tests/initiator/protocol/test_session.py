"""The sans-IO session core, driven with synthetic target PDUs through the framer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.errors import ConnectionLost, DigestError, TargetProtocolError
from initiator.protocol import pdu
from initiator.protocol.connection import Connection, Event, State
from initiator.protocol.events import LogoutRequested
from initiator.protocol.framer import Framer, PduReader
from initiator.protocol.keys import Negotiated
from initiator.protocol.session import SessionCore
from initiator.scsi.sense import parse_sense

_TARGET_OPS = [op for op, cls in pdu.PDU_CLASSES.items() if cls.from_target]


def make(neg: Negotiated | None = None, conns: int = 1, maxcmdsn: int = 64,
         digests: bool = False) -> tuple[SessionCore, list[Connection]]:
    neg = neg or Negotiated(max_xmit_dsl=8192, max_recv_dsl=65536, first_burst=65536, max_burst=262144,
                            immediate_data=True, initial_r2t=True, header_digest=digests, data_digest=digests)
    core = SessionCore(neg, cmdsn=1, expcmdsn=1, maxcmdsn=maxcmdsn)
    out = []
    for cid in range(conns):
        c = Connection(cid)
        c.fire(Event.CONNECT)
        c.fire(Event.CONNECTED)
        c.logged_in(neg, expstatsn=10)
        core.attach(c)
        out.append(c)
    return core, out


def parse_sent(bufs: list, digests: bool = False) -> list[pdu.PDU]:
    dec = PduReader(max_data=1 << 20, header_digest=digests, data_digest=digests, from_target=False)
    dec.feed(b"".join(bytes(b) for b in bufs))
    got = []
    while (p := dec.next_pdu()) is not None:
        got.append(p)
    assert dec.buffered == 0
    return got


def deliver(core: SessionCore, conn: Connection, *pdus: pdu.PDU, digests: bool = False,
            chunk: int | None = None) -> None:
    fr = Framer(lambda b, a, d: core.receive(conn, b, a, d), core.data_in_sink, max_data=65536,
                header_digest=digests, data_digest=digests)
    raw = b"".join(pdu.encode_bytes(p, digests, digests) for p in pdus)
    if chunk is None:
        fr.feed(raw)
    else:
        for i in range(0, len(raw), chunk):
            fr.feed(raw[i:i + chunk])


def test_read_assembles_data_in_into_the_callers_buffer_with_status_in_the_last_pdu():
    core, (c,) = make()
    buf = bytearray(20000)
    t = core.scsi_task(1, b"\x28" + bytes(9), read_into=memoryview(buf))
    (cmd,) = parse_sent(core.issue(t, c))
    assert isinstance(cmd, pdu.ScsiCommand) and cmd.read and cmd.edtl == 20000 and cmd.cmdsn == 1
    assert cmd.lun == 1 << 48 and cmd.expstatsn == 10
    payload = bytes(range(256)) * 79  # 20224 > 20000: take what we need
    payload = payload[:20000]
    d1 = pdu.DataIn(itt=t.itt, datasn=0, offset=0, data=payload[:12000], expcmdsn=2, maxcmdsn=70)
    d2 = pdu.DataIn(itt=t.itt, datasn=1, offset=12000, data=payload[12000:], final=True, has_status=True,
                    status=0, statsn=10, expcmdsn=2, maxcmdsn=70)
    deliver(core, c, d1, d2, chunk=777)
    assert core.done == [t] and t.status == 0 and t.data_len == 20000
    assert bytes(buf) == payload
    assert c.expstatsn == 11 and core.maxcmdsn == 70 and c.outstanding == 0


def test_short_read_reports_underflow_residual():
    core, (c,) = make()
    t = core.scsi_task(1, b"\x12" + bytes(5), read_len=96)
    core.issue(t, c)
    deliver(core, c, pdu.DataIn(itt=t.itt, data=b"x" * 36, final=True, has_status=True, underflow=True,
                                residual=60, statsn=10, expcmdsn=2, maxcmdsn=65))
    assert t.underflow and t.residual == 60 and t.data_len == 36
    assert bytes(t.buf[:36]) == b"x" * 36


def test_data_in_beyond_the_buffer_is_a_target_error():
    core, (c,) = make()
    t = core.scsi_task(1, b"\x28" + bytes(9), read_len=512)
    core.issue(t, c)
    with pytest.raises(TargetProtocolError):
        deliver(core, c, pdu.DataIn(itt=t.itt, offset=256, data=b"y" * 512, final=True))


def test_check_condition_carries_sense_and_a_unit_attention_is_retried():
    core, (c,) = make()
    t = core.scsi_task(1, bytes(6))
    core.issue(t, c)
    ua = bytes([0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00])
    rsp = pdu.ScsiResponse(itt=t.itt, status=2, statsn=10, expcmdsn=2, maxcmdsn=65,
                           data=len(ua).to_bytes(2, "big") + ua)
    deliver(core, c, rsp)
    assert core.retry == [t] and not core.done
    core.retry.clear()
    core.issue(t, c)
    nr = bytes([0x70, 0, 2, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x04, 0x00])
    deliver(core, c, pdu.ScsiResponse(itt=t.itt, status=2, statsn=11, expcmdsn=3, maxcmdsn=66,
                                      data=len(nr).to_bytes(2, "big") + nr))
    assert core.done == [t] and t.status == 2 and parse_sense(t.sense).key == 2


def test_an_answer_for_a_command_not_on_the_wire_is_a_target_error_not_a_crash():
    """Two UNIT ATTENTION responses for one command in one read: the first queued it to be sent again, so
    the second (or any Data-In) answers a command the target does not hold: a protocol error."""
    core, (c,) = make()
    t = core.scsi_task(1, b"\x28" + bytes(9), read_len=512)
    core.issue(t, c)
    ua = bytes([0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00])
    rsp = pdu.ScsiResponse(itt=t.itt, status=2, statsn=10, expcmdsn=2, maxcmdsn=65,
                           data=len(ua).to_bytes(2, "big") + ua)
    with pytest.raises(TargetProtocolError, match="not outstanding"):
        deliver(core, c, rsp, rsp)
    assert core.retry == [t] and c.outstanding == 0
    with pytest.raises(TargetProtocolError, match="not outstanding"):
        deliver(core, c, pdu.DataIn(itt=t.itt, data=b"x" * 512, final=True, has_status=True, statsn=11))
    core.retry.clear()
    other = Connection(1)          # answered on another connection than the one it went out on (MC/S)
    core.issue(t, c)
    with pytest.raises(TargetProtocolError, match="not outstanding on connection 1"):
        core.receive(other, pdu.encode_bytes(pdu.ScsiResponse(itt=t.itt, statsn=11)), b"", b"")


@pytest.mark.parametrize("immediate,initial_r2t,expect_imm,expect_unsol", [
    (True, True, 8192, 0), (True, False, 8192, 65536 - 8192), (False, False, 0, 65536), (False, True, 0, 0)])
def test_write_sends_immediate_and_unsolicited_data_per_negotiation(immediate, initial_r2t, expect_imm,
                                                                     expect_unsol):
    neg = Negotiated(max_xmit_dsl=8192, max_recv_dsl=65536, first_burst=65536, max_burst=131072,
                     immediate_data=immediate, initial_r2t=initial_r2t)
    core, (c,) = make(neg)
    data = bytes(range(256)) * 1024  # 256 KiB
    t = core.scsi_task(1, b"\x2a" + bytes(9), data_out=data)
    sent = parse_sent(core.issue(t, c))
    cmd, outs = sent[0], sent[1:]
    assert len(cmd.data) == expect_imm and cmd.final == (expect_unsol == 0) and cmd.edtl == len(data)
    assert sum(len(o.data) for o in outs) == expect_unsol
    assert all(o.ttt == pdu.RESERVED_TAG and len(o.data) <= 8192 for o in outs)
    if outs:
        assert outs[-1].final and not any(o.final for o in outs[:-1])
        assert [o.datasn for o in outs] == list(range(len(outs)))
    # the target now solicits the rest in MaxBurstLength pieces
    off = expect_imm + expect_unsol
    r2tsn = 0
    while off < len(data):
        n = min(131072, len(data) - off)
        deliver(core, c, pdu.R2T(itt=t.itt, ttt=0x100 + r2tsn, r2tsn=r2tsn, offset=off, length=n, statsn=10,
                                 expcmdsn=2, maxcmdsn=65))
        (conn, bufs), = core.out
        core.out.clear()
        outs = parse_sent(bufs)
        assert conn is c and outs[0].offset == off and outs[-1].final
        assert all(o.ttt == 0x100 + r2tsn and len(o.data) <= 8192 for o in outs)
        assert b"".join(o.data for o in outs) == data[off:off + n]
        off += n
        r2tsn += 1


def test_r2t_over_max_burst_is_refused():
    core, (c,) = make()
    t = core.scsi_task(1, b"\x2a" + bytes(9), data_out=bytes(1 << 20))
    core.issue(t, c)
    with pytest.raises(TargetProtocolError, match="MaxBurstLength"):
        deliver(core, c, pdu.R2T(itt=t.itt, ttt=1, offset=8192, length=524288))


def test_cmdsn_window_closes_at_maxcmdsn_and_opens_on_a_response():
    core, (c,) = make(maxcmdsn=2)
    tasks = [core.scsi_task(1, bytes(6)) for _ in range(3)]
    core.issue(tasks[0], c)
    core.issue(tasks[1], c)
    assert not core.window_open()
    deliver(core, c, pdu.ScsiResponse(itt=tasks[0].itt, statsn=10, expcmdsn=2, maxcmdsn=3))
    assert core.window_open()
    # a stale MaxCmdSN (less than ExpCmdSN - 1) is ignored
    deliver(core, c, pdu.NopIn(itt=pdu.RESERVED_TAG, statsn=11, expcmdsn=9, maxcmdsn=1))
    assert core.maxcmdsn == 3


def test_target_ping_is_answered_with_its_ttt_without_advancing_statsn():
    core, (c,) = make()
    deliver(core, c, pdu.NopIn(itt=pdu.RESERVED_TAG, ttt=0x77, lun=0, statsn=10, expcmdsn=1, maxcmdsn=64))
    (_, bufs), = core.out
    (reply,) = parse_sent(bufs)
    assert isinstance(reply, pdu.NopOut) and reply.ttt == 0x77 and reply.itt == pdu.RESERVED_TAG
    assert reply.immediate and c.expstatsn == 10


def test_our_ping_completes_on_the_matching_nop_in():
    core, (c,) = make()
    t = core.request("nop", pdu.NopOut(data=b"ping"))
    (sent,) = parse_sent(core.issue_request(t, c))
    assert sent.itt == t.itt and sent.immediate and sent.cmdsn == core.cmdsn
    deliver(core, c, pdu.NopIn(itt=t.itt, data=b"ping", statsn=10, expcmdsn=1, maxcmdsn=64))
    assert core.done == [t] and t.result.data == b"ping" and c.expstatsn == 11


def test_async_logout_request_asks_the_io_layer_to_log_out():
    core, (c,) = make()
    deliver(core, c, pdu.AsyncMessage(event=pdu.AsyncEvent.LOGOUT_REQUEST, param3=7, statsn=10, expcmdsn=1,
                                      maxcmdsn=64))
    assert core.events == [LogoutRequested(cid=0, seconds=7)] and c.state is State.LOGOUT_REQUESTED


def test_reject_fails_the_rejected_command():
    core, (c,) = make()
    t = core.scsi_task(1, bytes(6))
    bufs = core.issue(t, c)
    deliver(core, c, pdu.Reject(reason=0x09, statsn=10, expcmdsn=2, maxcmdsn=65, data=bytes(bufs[0][:48])))
    assert core.done == [t] and "invalid PDU field" in str(t.error)


def test_connection_loss_keeps_scsi_tasks_for_reissue_and_fails_pings():
    core, (c,) = make()
    t1 = core.scsi_task(1, bytes(6))
    t2 = core.scsi_task(1, bytes(6))
    core.issue(t1, c)
    core.issue(t2, c)
    ping = core.request("nop", pdu.NopOut())
    core.issue_request(ping, c)
    again = core.unfinished()
    assert again == [t1, t2] and isinstance(ping.error, ConnectionLost)
    core.renumber(100, 100, 200)
    (cmd,) = parse_sent(core.issue(t1, c))
    assert cmd.cmdsn == 100 and cmd.itt == t1.itt


def test_mcs_scheduling_spreads_commands_over_connections():
    core, conns = make(conns=4)
    for _ in range(8):
        t = core.scsi_task(1, bytes(6))
        core.issue(t, core.pick_connection())
    assert [c.outstanding for c in conns] == [2, 2, 2, 2]


def test_digests_are_checked_on_receive_and_added_on_send():
    core, (c,) = make(digests=True)
    buf = bytearray(4096)
    t = core.scsi_task(1, b"\x28" + bytes(9), read_into=memoryview(buf))
    (cmd,) = parse_sent(core.issue(t, c), digests=True)
    assert cmd.itt == t.itt
    d = pdu.DataIn(itt=t.itt, data=b"z" * 4096, final=True, has_status=True, statsn=10)
    deliver(core, c, d, digests=True, chunk=1000)
    assert bytes(buf) == b"z" * 4096
    raw = bytearray(pdu.encode_bytes(pdu.NopIn(itt=pdu.RESERVED_TAG, data=b"abcd"), True, True))
    raw[-1] ^= 1
    fr = Framer(lambda b, a, d: None, core.data_in_sink, 65536, True, True)
    with pytest.raises(DigestError):
        fr.feed(bytes(raw))


@given(st.binary(min_size=0, max_size=600))
def test_random_bytes_raise_only_protocol_errors(blob):
    core, (c,) = make()
    fr = Framer(lambda b, a, d: core.receive(c, b, a, d), core.data_in_sink, max_data=8192)
    try:
        fr.feed(blob)
    except TargetProtocolError:
        pass


@pytest.mark.parametrize("digests", [False, True])
def test_data_out_pdus_of_odd_size_are_padded_and_cover_the_burst_exactly(digests):
    neg = Negotiated(max_xmit_dsl=1001, max_recv_dsl=65536, first_burst=65536, max_burst=262144,
                     immediate_data=False, initial_r2t=True, header_digest=digests, data_digest=digests)
    core, (c,) = make(neg, digests=digests)
    data = bytes(range(251)) * 12  # 3012 bytes
    t = core.scsi_task(1, b"\x2a" + bytes(9), data_out=data)
    core.issue(t, c)
    deliver(core, c, pdu.R2T(itt=t.itt, ttt=9, offset=0, length=len(data), statsn=10), digests=digests)
    (_, bufs), = core.out
    outs = parse_sent(bufs, digests=digests)
    assert [len(o.data) for o in outs] == [1001, 1001, 1001, 9]
    assert [o.offset for o in outs] == [0, 1001, 2002, 3003] and outs[-1].final
    assert b"".join(bytes(o.data) for o in outs) == data


@given(st.lists(st.tuples(st.sampled_from(_TARGET_OPS), st.binary(min_size=47, max_size=47),
                          st.binary(max_size=64)), min_size=1, max_size=6))
def test_well_framed_pdus_with_random_fields_raise_only_protocol_errors(items):
    core, (c,) = make()
    t = core.scsi_task(1, b"\x28" + bytes(9), read_len=4096)
    core.issue(t, c)
    w = core.scsi_task(1, b"\x2a" + bytes(9), data_out=bytes(4096))
    core.issue(w, c)
    fr = Framer(lambda b, a, d: core.receive(c, b, a, d), core.data_in_sink, max_data=8192)
    raw = bytearray()
    for op, rest, data in items:
        bhs = bytearray(bytes([op]) + rest)
        bhs[4] = 0
        bhs[5:8] = len(data).to_bytes(3, "big")
        if bhs[16] & 1:  # aim half of them at the live tasks
            bhs[16:20] = (t.itt if bhs[17] & 1 else w.itt).to_bytes(4, "big")
        raw += bhs + data + bytes(-len(data) & 3)
    try:
        fr.feed(bytes(raw))
    except TargetProtocolError:
        pass
