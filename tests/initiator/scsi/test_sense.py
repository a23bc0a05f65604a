"""Status and sense data decoded into sentences; UNIT ATTENTION recognised; any bytes decode."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from initiator.errors import ISCSIError
from initiator.scsi import commands as scsi
from initiator.scsi import sense


def _fixed(key, asc, ascq, info=None):
    b = bytearray(18)
    b[0] = 0x70 | (0x80 if info is not None else 0)
    b[2] = key
    if info is not None:
        b[3:7] = info.to_bytes(4, "big")
    b[7] = 10
    b[12], b[13] = asc, ascq
    return bytes(b)


def test_fixed_sense_lba_out_of_range_reads_as_a_sentence():
    s = sense.parse_sense(_fixed(5, 0x21, 0x00))
    assert (s.key, s.asc, s.ascq) == (5, 0x21, 0)
    assert s.description == "ILLEGAL REQUEST: logical block address out of range"


def test_fixed_sense_medium_error_carries_the_failing_lba():
    s = sense.parse_sense(_fixed(3, 0x11, 0x00, info=0x1234))
    assert s.information == 0x1234 and "unrecovered read error" in s.description and "0x1234" in s.description


def test_descriptor_sense_is_decoded_with_its_information_descriptor():
    info = bytes([0x00, 0x0A, 0x80, 0]) + (0x99).to_bytes(8, "big")
    data = bytes([0x72, 0x03, 0x11, 0x00, 0, 0, 0, len(info)]) + info
    s = sense.parse_sense(data)
    assert s.key == 3 and s.information == 0x99 and s.key_name == "MEDIUM ERROR"


def test_unit_attention_after_reset_is_recognised():
    err = scsi.SCSIError(2, _fixed(6, 0x29, 0x00), "READ at LBA 0")
    assert sense.is_unit_attention(err.status, err.sense_data)
    assert str(err) == ("READ at LBA 0: CHECK CONDITION, UNIT ATTENTION: "
                        "power on, reset, or bus device reset occurred")
    assert isinstance(err, ISCSIError)


def test_unknown_ascq_falls_back_to_its_family():
    assert sense.asc_text(0x04, 0x77) == "logical unit not ready (ASCQ 0x77)"
    assert sense.asc_text(0x70, 0x01) == "ASC 0x70, ASCQ 0x01"
    assert "vendor specific" in sense.asc_text(0x80, 0x00)


def test_busy_without_sense_names_the_status():
    assert str(scsi.SCSIError(0x08)) == "BUSY"
    assert str(scsi.SCSIError(0x02)) == "CHECK CONDITION without sense data"
    assert sense.status_name(0x99) == "status 0x99"


def test_unsupported_sense_format_is_described_not_raised():
    assert "unsupported sense response code" in sense.parse_sense(b"\x01\x02").description
    assert "truncated" in sense.parse_sense(b"\x70\x00").description


@given(st.binary(max_size=64))
def test_any_sense_bytes_decode_without_raising(data):
    s = sense.parse_sense(data)
    assert isinstance(s.description, str) and 0 <= s.key < 16


def test_sense_key_reads_fixed_and_descriptor_formats():
    fixed = bytes([0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x01])
    s = sense.parse_sense(fixed)
    assert (s.key, s.asc, s.ascq) == (6, 0x29, 1)
    s = sense.parse_sense(bytes([0x72, 5, 0x24, 0]))
    assert (s.key, s.asc, s.ascq) == (5, 0x24, 0)
