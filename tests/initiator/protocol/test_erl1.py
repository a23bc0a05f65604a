"""ErrorRecoveryLevel 1 in the sans-IO core: scripted target PDUs, some with a corrupted payload, through the framer.

A small model of a target (`Reader`) sends a READ's Data-In PDUs as LIO does at ERL 1 (the A bit at each
burst end, status in the last PDU) and answers Data SNACKs by resending from BegRun to the end. The property
test corrupts arbitrary PDUs, resent ones included: the read always completes with the right bytes, and no
Data SNACK ever names a DataSN the target has not sent (LIO counts that bound one short and panics on it).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from initiator.errors import ConnectionLost, DigestError, TargetProtocolError
from initiator.io.session import Stats
from initiator.protocol import pdu
from initiator.protocol.connection import Connection, Event
from initiator.protocol.erl1 import COUNTS, MAX_SNACKS, Erl1Core, core_class
from initiator.protocol.framer import Framer, PduReader
from initiator.protocol.keys import Negotiated
from initiator.protocol.session import SessionCore

PDU_SIZE = 1024
BURST = 4  # PDUs per burst: the A bit on every fourth
TTT = 0x77


def make(erl: int = 1, header_digest: bool = True) -> tuple[Erl1Core, Connection, Framer]:
    neg = Negotiated(max_xmit_dsl=8192, max_recv_dsl=65536, first_burst=65536, max_burst=262144, erl=erl,
                     immediate_data=True, initial_r2t=True, header_digest=header_digest, data_digest=True)
    core = Erl1Core(neg, cmdsn=1, expcmdsn=1, maxcmdsn=64, counts=Stats(), timeout=5.0)
    c = Connection(0)
    c.fire(Event.CONNECT)
    c.fire(Event.CONNECTED)
    c.logged_in(neg, expstatsn=10)
    core.attach(c)
    fr = Framer(lambda b, a, d: core.receive(c, b, a, d), core.data_in_sink, 65536, header_digest, True)
    fr.on_bad_data = core.digest_error_handler(c)
    return core, c, fr


def raw(p: pdu.PDU, corrupt: bool = False, header_digest: bool = True) -> bytes:
    """``p`` on the wire with both digests; ``corrupt`` flips a payload byte (never the header)."""
    b = bytearray(pdu.encode_bytes(p, header_digest, True))
    if corrupt:
        b[48 + (4 if header_digest else 0) + len(p.data) // 2] ^= 0xFF
    return bytes(b)


def sent(core: Erl1Core) -> list[pdu.PDU]:
    """What the core queued to send since the last call, decoded."""
    out, core.out = core.out, []
    dec = PduReader(max_data=1 << 20, header_digest=True, data_digest=True, from_target=False)
    for _, bufs in out:
        dec.feed(b"".join(bytes(b) for b in bufs))
    got = []
    while (p := dec.next_pdu()) is not None:
        got.append(p)
    return got


class Reader:
    """A READ of ``n`` PDUs and the target side of it: Data-In as LIO sends them at ERL 1."""

    def __init__(self, core: Erl1Core, conn: Connection, n: int, statsn: int = 10) -> None:
        self.core, self.conn, self.n, self.statsn = core, conn, n, statsn
        self.payload = bytes((i * 7 + 3) & 0xFF for i in range(n * PDU_SIZE))
        self.buf = bytearray(n * PDU_SIZE)
        self.task = core.scsi_task(0, b"\x28" + bytes(9), read_into=memoryview(self.buf))
        core.issue(self.task, conn)
        self.sent_max = -1  # the highest DataSN the target has sent

    def data_in(self, sn: int) -> pdu.DataIn:
        last = sn == self.n - 1
        ack = not last and sn % BURST == BURST - 1
        self.sent_max = max(self.sent_max, sn)
        return pdu.DataIn(itt=self.task.itt, datasn=sn, offset=sn * PDU_SIZE, ack=ack or last,
                          ttt=TTT if ack or last else pdu.RESERVED_TAG, lun=1 << 48,
                          data=self.payload[sn * PDU_SIZE:(sn + 1) * PDU_SIZE], final=last, has_status=last,
                          statsn=self.statsn, expcmdsn=2, maxcmdsn=70)

    def stream(self, first: int, bad: set[int] = frozenset()) -> bytes:
        return b"".join(raw(self.data_in(sn), sn in bad) for sn in range(first, self.n))


def test_a_corrupt_data_in_is_snacked_to_the_end_and_the_resend_completes_the_read():
    core, c, fr = make()
    r = Reader(core, c, 8)
    fr.feed(r.stream(0, bad={2}))
    (snack,) = sent(core)  # no DataACK: the burst end (DataSN 3) came after the hole
    assert (snack.type, snack.itt, snack.begrun, snack.runlength) == (0, r.task.itt, 2, 0)
    assert snack.expstatsn == 10
    assert core.done == [] and c.expstatsn == 10  # the status came, but it stays unacknowledged
    fr.feed(r.stream(2))  # the target resends DataSN 2..7, status again in the last
    assert core.done == [r.task] and r.task.status == 0 and bytes(r.buf) == r.payload
    assert c.expstatsn == 11 and not core.holes
    acks = [p for p in sent(core) if isinstance(p, pdu.SnackRequest)]
    assert [(p.type, p.itt, p.ttt, p.begrun, p.runlength, p.lun) for p in acks] == [
        (2, pdu.RESERVED_TAG, TTT, 4, 0, 1 << 48)]  # the burst end DataSN 3, acknowledged once in order
    assert (core.counts.digest_errors, core.counts.data_snacks, core.counts.data_acks) == (1, 1, 1)


def test_burst_ends_are_acknowledged_and_a_clean_read_sends_no_other_snack():
    core, c, fr = make()
    r = Reader(core, c, 9)
    fr.feed(r.stream(0))
    acks = sent(core)
    assert [(p.type, p.begrun) for p in acks] == [(2, 4), (2, 8)]  # not for the final PDU: its status acks it
    assert core.done == [r.task] and bytes(r.buf) == r.payload and c.expstatsn == 11


def test_a_missing_data_in_is_a_gap_and_is_snacked():
    core, c, fr = make()
    r = Reader(core, c, 6)
    fr.feed(b"".join(raw(r.data_in(sn)) for sn in (0, 1, 3)))
    (snack,) = sent(core)
    assert (snack.type, snack.begrun, snack.runlength) == (0, 2, 0)
    fr.feed(r.stream(4) + r.stream(2))
    assert core.done == [r.task] and bytes(r.buf) == r.payload


def test_recovery_data_for_a_command_queued_again_is_a_target_error_not_a_crash():
    """A command answered with UNIT ATTENTION waits (off the wire) to be sent again: a Data-In for it out of
    order, or failing its digest, or its early status, is a protocol error, not a SNACK on no connection."""
    ua = bytes([0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00])
    for late in ("gap", "digest", "status"):
        core, c, fr = make()
        r = Reader(core, c, 4)
        fr.feed(raw(pdu.ScsiResponse(itt=r.task.itt, status=2, statsn=10, expcmdsn=2, maxcmdsn=65,
                                     data=len(ua).to_bytes(2, "big") + ua)))
        assert core.retry == [r.task]
        again = {"gap": raw(r.data_in(2)), "digest": raw(r.data_in(0), corrupt=True),
                 "status": raw(pdu.ScsiResponse(itt=r.task.itt, statsn=11, expdatasn=4))}[late]
        with pytest.raises(TargetProtocolError, match="not outstanding"):
            fr.feed(again)
        assert sent(core) == [], late


def test_a_lost_status_is_asked_for_with_a_status_snack_and_expstatsn_waits_for_it():
    core, c, fr = make()
    a = core.scsi_task(0, b"\x00" * 6)
    b = core.scsi_task(0, b"\x00" * 6)
    core.issue(a, c)
    core.issue(b, c)
    fr.feed(raw(pdu.ScsiResponse(itt=b.itt, statsn=11, expcmdsn=3, maxcmdsn=70)))  # StatSN 10 never came
    (snack,) = sent(core)
    assert (snack.type, snack.itt, snack.begrun, snack.runlength) == (1, pdu.RESERVED_TAG, 10, 1)
    assert core.done == [b] and c.expstatsn == 10
    fr.feed(raw(pdu.ScsiResponse(itt=a.itt, statsn=10, expcmdsn=3, maxcmdsn=70)))
    assert core.done == [b, a] and c.expstatsn == 12


def test_a_statsn_jump_too_wide_to_be_lost_statuses_is_a_protocol_error():
    core, c, fr = make()
    t = core.scsi_task(0, b"\x00" * 6)
    core.issue(t, c)
    with pytest.raises(TargetProtocolError, match="StatSN jumped from 10 to 100010"):
        fr.feed(raw(pdu.ScsiResponse(itt=t.itt, statsn=100010, expcmdsn=2, maxcmdsn=70)))
    assert sent(core) == []


def test_sense_data_that_fails_its_digest_is_asked_for_again():
    core, c, fr = make()
    t = core.scsi_task(0, b"\x00" * 6)
    core.issue(t, c)
    sense = bytes([0, 18, 0x70, 0, 5]) + bytes(15)
    rsp = pdu.ScsiResponse(itt=t.itt, statsn=10, status=2, data=sense, expcmdsn=2, maxcmdsn=70)
    fr.feed(raw(rsp, corrupt=True))
    (snack,) = sent(core)
    assert (snack.type, snack.begrun, snack.runlength) == (1, 10, 1) and c.expstatsn == 10
    assert snack.expstatsn == 10  # not 11: that would acknowledge the status, and LIO would forget it
    fr.feed(raw(rsp))
    assert core.done == [t] and t.status == 2 and t.sense[0] == 0x70 and c.expstatsn == 11


def _reject(header: bytes, statsn: int = 10, reason: int = 0x02) -> pdu.Reject:
    return pdu.Reject(reason=reason, data=header, statsn=statsn, expcmdsn=1, maxcmdsn=70)


def test_immediate_data_hit_by_a_digest_error_is_sent_again_with_the_same_cmdsn():
    core, c, fr = make()
    data = bytes(range(256)) * 8
    t = core.scsi_task(0, b"\x2a" + bytes(9), data_out=data)
    (cmd,) = _decode(core.issue(t, c))
    fr.feed(raw(_reject(pdu.encode_bytes(cmd)[:48])))
    (again,) = sent(core)
    assert isinstance(again, pdu.ScsiCommand)
    assert (again.itt, again.cmdsn, bytes(again.data)) == (t.itt, t.cmdsn, data)
    assert core.done == [] and core.counts.command_retries == 1 and core.counts.target_digest_errors == 1


def test_a_data_out_hit_by_a_digest_error_waits_for_the_recovery_r2t_and_answers_it():
    core, c, fr = make()
    data = bytes(range(256)) * 64
    t = core.scsi_task(0, b"\x2a" + bytes(9), data_out=data)
    core.issue(t, c)
    out = pdu.DataOut(itt=t.itt, ttt=5, datasn=0, offset=8192, data=data[8192:16384])
    fr.feed(raw(_reject(pdu.encode_bytes(out)[:48])))
    assert sent(core) == [] and core.done == []
    fr.feed(raw(pdu.R2T(itt=t.itt, ttt=6, offset=8192, length=8192, r2tsn=1, statsn=11, expcmdsn=2,
                        maxcmdsn=70)))
    (dout,) = sent(core)
    assert (dout.ttt, dout.offset, bytes(dout.data), dout.final) == (6, 8192, data[8192:16384], True)


def test_a_status_that_keeps_failing_its_digest_gives_up_after_max_snacks():
    core, c, fr = make()
    t = core.scsi_task(0, b"\x00" * 6)
    core.issue(t, c)
    rsp = pdu.ScsiResponse(itt=t.itt, statsn=10, status=2, data=bytes([0, 18, 0x70]) + bytes(17), expcmdsn=2,
                           maxcmdsn=70)
    with pytest.raises(ConnectionLost, match=f"after {MAX_SNACKS} Status SNACKs"):
        for _ in range(MAX_SNACKS + 1):
            fr.feed(raw(rsp, corrupt=True))


def test_a_rejected_snack_gives_up_to_session_recovery():
    core, c, fr = make()
    r = Reader(core, c, 4)
    fr.feed(raw(r.data_in(0), corrupt=True))
    (snack,) = sent(core)
    with pytest.raises(ConnectionLost, match="rejected our SNACK"):
        fr.feed(raw(_reject(pdu.encode_bytes(snack)[:48], reason=0x09)))


def test_an_unanswered_snack_times_out_and_names_its_connection():
    core, c, fr = make()
    r = Reader(core, c, 4)
    fr.feed(raw(r.data_in(0), corrupt=True))
    assert core.unstamped
    core.stamp(100.0)
    assert not core.unstamped and core.next_deadline() == 105.0
    assert core.handle_timer(104.9) == [] and core.handle_timer(105.0) == [0]


def test_a_task_that_keeps_failing_its_digest_gives_up_after_max_snacks_without_progress():
    core, c, fr = make()
    r = Reader(core, c, 2)
    with pytest.raises(ConnectionLost, match=f"after {MAX_SNACKS} SNACKs without progress"):
        for _ in range(MAX_SNACKS + 1):
            fr.feed(raw(r.data_in(0), corrupt=True))


def test_snacks_that_make_progress_do_not_count_towards_giving_up():
    core, c, fr = make()
    r = Reader(core, c, MAX_SNACKS * 2 + 2)
    for sn in range(MAX_SNACKS * 2):  # each PDU bad once, then good: a SNACK per PDU, progress every time
        fr.feed(raw(r.data_in(sn), corrupt=True) + raw(r.data_in(sn)))
    fr.feed(r.stream(MAX_SNACKS * 2))
    assert core.done == [r.task] and bytes(r.buf) == r.payload and core.counts.data_snacks == MAX_SNACKS * 2


def test_without_header_digests_a_data_digest_error_drops_the_connection():
    core, c, fr = make(header_digest=False)
    r = Reader(core, c, 2)
    with pytest.raises(DigestError, match="cannot be trusted"):
        fr.feed(raw(r.data_in(0), corrupt=True, header_digest=False))
    assert sent(core) == []


def test_the_session_stats_have_every_count_the_core_keeps():
    assert set(COUNTS) <= set(vars(Stats()))
    assert all(getattr(Erl1Core(Negotiated(erl=1), 1, 1, 1).counts, name) == 0 for name in COUNTS)


def test_erl0_keeps_the_plain_core_and_its_digest_errors_drop_the_connection():
    assert core_class(Negotiated(erl=0)) is SessionCore and core_class(Negotiated(erl=1)) is Erl1Core
    assert SessionCore(Negotiated(), 1, 1, 1).digest_error_handler(Connection(0)) is None


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 12), bad=st.lists(st.integers(0, 40), max_size=6))
def test_any_corruption_pattern_recovers_and_never_snacks_past_what_was_sent(n, bad):
    """``bad`` numbers PDUs in sending order (resent ones too); each of those arrives with a bad payload."""
    core, c, fr = make()
    r = Reader(core, c, n)
    order = 0
    first = 0
    while True:
        for sn in range(first, n):
            fr.feed(raw(r.data_in(sn), corrupt=order in bad))
            order += 1
        snacks = [p for p in sent(core) if isinstance(p, pdu.SnackRequest) and p.type == 0]
        for p in snacks:
            assert p.runlength == 0 and p.begrun <= r.sent_max, (p.begrun, r.sent_max)
            assert p.expstatsn == 10  # the read's own status (StatSN 10) is never acknowledged before its data
        if core.done:
            break
        assert snacks, "the read is stuck without a SNACK"
        first = snacks[-1].begrun
    assert core.done == [r.task] and bytes(r.buf) == r.payload and c.expstatsn == 11 and not core.holes


def _decode(bufs: list) -> list[pdu.PDU]:
    dec = PduReader(max_data=1 << 20, header_digest=True, data_digest=True, from_target=False)
    dec.feed(b"".join(bytes(b) for b in bufs))
    got = []
    while (p := dec.next_pdu()) is not None:
        got.append(p)
    return got
