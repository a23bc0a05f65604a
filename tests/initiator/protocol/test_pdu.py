"""The PDU codec: every opcode round-trips through encode and the framer (both directions, digests, any
split of the stream), the CRC32C vector, and encoding errors.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initiator.errors import LocalProtocolError
from initiator.protocol import pdu
from initiator.protocol.framer import PduReader

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
u8 = st.integers(0, 0xFF)
data_st = st.binary(max_size=600)
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
_FIXED = {pdu.LoginRequest: {"immediate"}, pdu.SnackRequest: {"immediate"}, pdu.DataOut: {"immediate"}}


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


@pytest.mark.parametrize("cls", list(pdu.PDU_CLASSES.values()), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), hd=st.booleans(), dd=st.booleans())
def test_every_pdu_round_trips_through_the_framer(cls, data, hd, dd):
    original = data.draw(pdu_strategy(cls))
    if cls.from_target or cls in (pdu.SnackRequest, pdu.DataOut, pdu.LoginRequest):
        original.immediate = cls is pdu.LoginRequest
    wire = pdu.encode_bytes(original, hd, dd)
    assert len(wire) % 4 == 0
    dec = PduReader(max_data=1 << 16, header_digest=hd, data_digest=dd, from_target=cls.from_target)
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


def test_crc32c_matches_the_rfc_3720_b4_vector():
    # RFC 3720 B.4: 32 bytes of zeros -> aa 36 91 8a (stored little-endian on the wire).
    assert pdu.crc32c(bytes(32)).to_bytes(4, "little") == bytes.fromhex("aa36918a")


def test_encoding_a_bad_isid_or_long_cdb_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        pdu.encode(pdu.LoginRequest(isid=b"123"))
    with pytest.raises(LocalProtocolError):
        pdu.encode(pdu.ScsiCommand(cdb=bytes(17)))


def test_encode_keeps_the_data_buffer_as_its_own_segment():
    payload = memoryview(bytearray(b"x" * 4097))
    segs = pdu.encode(pdu.DataOut(data=payload), data_digest=True)
    assert segs[1] is payload and len(segs[2]) == 3 + 4  # padding + digest
