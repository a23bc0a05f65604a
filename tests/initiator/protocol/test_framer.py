"""The one framer: PDUs out of a byte stream in order, digests checked, lengths refused before buffering,
misdirected opcodes refused, and random bytes raise only protocol errors.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from initiator.errors import DigestError, ISCSIError, TargetProtocolError
from initiator.protocol import pdu
from initiator.protocol.framer import Framer, PduReader


def test_two_pdus_in_one_read_come_out_in_order():
    a = pdu.NopIn(itt=1, data=b"abc")
    b = pdu.TextResponse(itt=2, data=b"K=V\0")
    dec = PduReader()
    dec.feed(pdu.encode_bytes(a) + pdu.encode_bytes(b))
    assert dec.next_pdu().itt == 1
    assert dec.next_pdu().itt == 2
    assert dec.next_pdu() is None


def test_header_digest_mismatch_is_a_digest_error():
    wire = bytearray(pdu.encode_bytes(pdu.NopIn(itt=7), header_digest=True))
    wire[20] ^= 1
    dec = PduReader(header_digest=True)
    with pytest.raises(DigestError, match="header digest"):
        dec.feed(wire)
        dec.next_pdu()


def test_data_digest_mismatch_is_a_digest_error():
    wire = bytearray(pdu.encode_bytes(pdu.NopIn(itt=7, data=b"hello"), data_digest=True))
    wire[49] ^= 0x40
    dec = PduReader(data_digest=True)
    with pytest.raises(DigestError, match="data digest"):
        dec.feed(wire)
        dec.next_pdu()


def test_oversize_data_segment_is_refused_before_it_is_buffered():
    header = bytearray(pdu.encode_bytes(pdu.DataIn(itt=1)))
    header[5:8] = (1 << 20).to_bytes(3, "big")  # announces 1 MiB
    dec = PduReader(max_data=8192)
    with pytest.raises(TargetProtocolError, match="1048576-byte data segment"):
        dec.feed(bytes(header))  # only the 48-byte header arrived: the refusal must not wait for the data
        dec.next_pdu()


def test_initiator_opcode_from_the_target_is_refused():
    dec = PduReader()
    with pytest.raises(TargetProtocolError, match="opcode 0x00"):
        dec.feed(pdu.encode_bytes(pdu.NopOut(itt=1)))
        dec.next_pdu()


@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8), hd=st.booleans(), dd=st.booleans(),
       max_data=st.sampled_from([0, 512, 8192, 1 << 16]))
def test_random_bytes_never_raise_anything_but_iscsi_errors(chunks, hd, dd, max_data):
    dec = PduReader(max_data=max_data, header_digest=hd, data_digest=dd)
    try:
        for c in chunks:
            dec.feed(c)
            while dec.next_pdu() is not None:
                pass
    except ISCSIError:
        pass
    assert dec.buffered <= sum(map(len, chunks))


@settings(max_examples=300, deadline=None)
@given(opcode=st.sampled_from(sorted(k for k, c in pdu.PDU_CLASSES.items() if c.from_target)),
       body=st.binary(min_size=47, max_size=47), tail=st.binary(max_size=200))
def test_random_headers_with_valid_target_opcodes_never_crash(opcode, body, tail):
    dec = PduReader(max_data=8192)
    try:
        dec.feed(bytes([opcode]) + body + tail)
        while dec.next_pdu() is not None:
            pass
    except ISCSIError:
        pass


def test_oversize_data_segment_is_refused_before_buffering():
    fr = Framer(lambda b, a, d: None, lambda b, n: None, max_data=8192)
    head = bytearray(pdu.NopIn().bhs())
    head[5:8] = (1 << 20).to_bytes(3, "big")
    with pytest.raises(TargetProtocolError, match="MaxRecvDataSegmentLength"):
        fr.feed(bytes(head))


def _framed(wire: bytes, reads: list[int], hd: bool, dd: bool) -> list[tuple]:
    """What a framer (recovering data digest errors, as under ERL 1) hands over for ``wire`` read in pieces
    of ``reads`` bytes (then the rest at once)."""
    got: list[tuple] = []
    placed: list[memoryview] = []

    def sink(bhs: bytes, dsl: int) -> memoryview:
        placed.append(memoryview(bytearray(dsl)))
        return placed[-1]

    def handler(bhs: bytes, ahs: bytes, data) -> None:
        got.append(("pdu", bytes(bhs), bytes(ahs), bytes(placed.pop() if data is None else data)))

    def bad(bhs: bytes, ahs: bytes) -> None:
        placed.pop()
        got.append(("bad-data", bytes(bhs), bytes(ahs)))

    fr = Framer(handler, sink, 1 << 20, hd, dd)
    fr.on_bad_data = bad
    pos = 0
    for n in reads:
        fr.feed(wire[pos:pos + n])
        pos += n
    fr.feed(wire[pos:])
    assert fr.buffered == 0
    return got


@settings(max_examples=150, deadline=None)
@given(size=st.sampled_from([1, 4, 5, 8192, 16384, 16387, 70000]), hd=st.booleans(), dd=st.booleans(),
       corrupt=st.booleans(), reads=st.lists(st.sampled_from([1, 3, 47, 48, 53, 4096, 20000]), max_size=40))
def test_a_data_in_with_ahs_comes_out_the_same_however_it_is_cut_into_reads(size, hd, dd, corrupt, reads):
    """The AHS, the payload and a data digest failure reach the handler whether the PDU arrives in one read
    or streams in pieces, its payload then placed straight in the caller's buffer (found by fuzzing: the
    streamed path once handed over an empty AHS)."""
    one = pdu.DataIn(itt=1, final=True, has_status=True, data=bytes(range(256)) * (size // 256) + bytes(size % 256),
                     ahs=bytes([0, 4, 1, 0, 0, 0, 0, 0, 9, 8, 7, 6]))
    first = bytearray(pdu.encode_bytes(one, hd, dd))
    if corrupt and dd:
        first[-1] ^= 0xFF
    wire = bytes(first) + pdu.encode_bytes(one, hd, dd)
    whole = _framed(wire, [], hd, dd)
    assert [g[2] for g in whole] == [one.ahs, one.ahs]
    assert whole[0][0] == ("bad-data" if corrupt and dd else "pdu")
    assert _framed(wire, reads, hd, dd) == whole
