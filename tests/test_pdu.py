"""The PDU codec: round trips for every opcode, digests, framing, bounds, and fuzzing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initiator.errors import DigestError, ISCSIError, LocalProtocolError, TargetProtocolError
from initiator.protocol import pdu

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
u8 = st.integers(0, 0xFF)
data_st = st.binary(max_size=600)

# Field strategies by (class, field name); anything not listed keeps its default.
_FIELD = {
    "itt": u32, "ttt": u32, "cmdsn": u32, "expstatsn": u32, "statsn": u32, "expcmdsn": u32, "maxcmdsn": u32,
    "lun": st.integers(0, (1 << 64) - 1), "edtl": u32, "datasn": u32, "offset": u32, "residual": u32,
    "bidi_residual": u32, "expdatasn": u32, "snack_tag": u32, "r2tsn": u32, "length": u32, "refcmdsn": u32,
    "rtt": u32, "begrun": u32, "runlength": u32, "tsih": u16, "cid": u16, "time2wait": u16, "time2retain": u16,
    "param1": u16, "param2": u16, "param3": u16, "status_class": u8, "status_detail": u8, "status": u8,
    "response": u8, "reason": st.integers(0, 0x7F), "event": u8, "vcode": u8, "version_max": u8,
    "version_min": u8, "version_active": u8, "csg": st.integers(0, 3), "nsg": st.integers(0, 3),
    "function": st.integers(0, 0x7F), "type": st.integers(0, 15), "attr": st.integers(0, 7),
    "isid": st.binary(min_size=6, max_size=6), "cdb": st.binary(min_size=16, max_size=16),
    "data": data_st, "ahs": st.binary(max_size=64).map(lambda b: b + b"\0" * (-len(b) % 4)),
}
_BOOL_FIELDS = {"final", "cont", "transit", "read", "write", "ack", "overflow", "underflow", "has_status",
                "bidi_overflow", "bidi_underflow"}


def pdu_strategy(cls: type[pdu.PDU]) -> st.SearchStrategy[pdu.PDU]:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in _FIELD:
            kwargs[f.name] = _FIELD[f.name]
        elif f.name in _BOOL_FIELDS:
            kwargs[f.name] = st.booleans()
    if cls in (pdu.LoginRequest,):
        kwargs.pop("immediate", None)
    return st.builds(cls, **kwargs)


def _normal(p: pdu.PDU) -> dict:
    d = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    d["data"] = bytes(d["data"])
    d["ahs"] = bytes(d["ahs"])
    return d


# Fields the wire cannot carry for a class (fixed bits, or derived on decode).
_FIXED = {pdu.LoginRequest: {"immediate"}, pdu.SnackRequest: {"immediate"}, pdu.DataOut: {"immediate"}}


@pytest.mark.parametrize("cls", list(pdu.PDU_CLASSES.values()), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), hd=st.booleans(), dd=st.booleans())
def test_every_pdu_round_trips_through_the_decoder(cls, data, hd, dd):
    original = data.draw(pdu_strategy(cls))
    if cls.from_target or cls in (pdu.SnackRequest, pdu.DataOut, pdu.LoginRequest):
        original.immediate = cls is pdu.LoginRequest
    wire = pdu.encode_bytes(original, hd, dd)
    assert len(wire) % 4 == 0
    dec = pdu.Decoder(max_data=1 << 16, header_digest=hd, data_digest=dd, from_target=cls.from_target)
    # Feed in awkward pieces: framing must not depend on how TCP cut the stream.
    step = max(1, len(wire) // 7)
    got = None
    for i in range(0, len(wire), step):
        dec.feed(wire[i:i + step])
        got = got or dec.next_pdu()
    got = got or dec.next_pdu()
    assert got is not None and type(got) is cls
    want, have = _normal(original), _normal(got)
    for name in _FIXED.get(cls, set()):
        want.pop(name), have.pop(name)
    if cls is pdu.ScsiCommand:
        want["cdb"] = want["cdb"].ljust(16, b"\0")
    assert have == want
    assert dec.buffered == 0


def test_two_pdus_in_one_read_come_out_in_order():
    a = pdu.NopIn(itt=1, data=b"abc")
    b = pdu.TextResponse(itt=2, data=b"K=V\0")
    dec = pdu.Decoder()
    dec.feed(pdu.encode_bytes(a) + pdu.encode_bytes(b))
    assert dec.next_pdu().itt == 1
    assert dec.next_pdu().itt == 2
    assert dec.next_pdu() is None


def test_header_digest_mismatch_is_a_digest_error():
    wire = bytearray(pdu.encode_bytes(pdu.NopIn(itt=7), header_digest=True))
    wire[20] ^= 1
    dec = pdu.Decoder(header_digest=True)
    dec.feed(wire)
    with pytest.raises(DigestError, match="header digest"):
        dec.next_pdu()


def test_data_digest_mismatch_is_a_digest_error():
    wire = bytearray(pdu.encode_bytes(pdu.NopIn(itt=7, data=b"hello"), data_digest=True))
    wire[49] ^= 0x40
    dec = pdu.Decoder(data_digest=True)
    dec.feed(wire)
    with pytest.raises(DigestError, match="data digest"):
        dec.next_pdu()


def test_crc32c_matches_the_rfc_3720_b4_vector():
    # RFC 3720 B.4: 32 bytes of zeros -> aa 36 91 8a (stored little-endian on the wire).
    assert pdu.crc32c(bytes(32)).to_bytes(4, "little") == bytes.fromhex("aa36918a")


def test_oversize_data_segment_is_refused_before_it_is_buffered():
    header = bytearray(pdu.encode_bytes(pdu.DataIn(itt=1)))
    header[5:8] = (1 << 20).to_bytes(3, "big")  # announces 1 MiB
    dec = pdu.Decoder(max_data=8192)
    dec.feed(bytes(header))  # only the 48-byte header arrived: the refusal must not wait for the data
    with pytest.raises(TargetProtocolError, match="1048576-byte data segment"):
        dec.next_pdu()


def test_initiator_opcode_from_the_target_is_refused():
    dec = pdu.Decoder()
    dec.feed(pdu.encode_bytes(pdu.NopOut(itt=1)))
    with pytest.raises(TargetProtocolError, match="opcode 0x00"):
        dec.next_pdu()


def test_encoding_a_bad_isid_or_long_cdb_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        pdu.encode(pdu.LoginRequest(isid=b"123"))
    with pytest.raises(LocalProtocolError):
        pdu.encode(pdu.ScsiCommand(cdb=bytes(17)))


def test_encode_keeps_the_data_buffer_as_its_own_segment():
    payload = memoryview(bytearray(b"x" * 4097))
    segs = pdu.encode(pdu.DataOut(data=payload), data_digest=True)
    assert segs[1] is payload and len(segs[2]) == 3 + 4  # padding + digest


@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8), hd=st.booleans(), dd=st.booleans(),
       max_data=st.sampled_from([0, 512, 8192, 1 << 16]))
def test_random_bytes_never_raise_anything_but_iscsi_errors(chunks, hd, dd, max_data):
    dec = pdu.Decoder(max_data=max_data, header_digest=hd, data_digest=dd)
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
    dec = pdu.Decoder(max_data=8192)
    dec.feed(bytes([opcode]) + body + tail)
    try:
        while dec.next_pdu() is not None:
            pass
    except ISCSIError:
        pass
