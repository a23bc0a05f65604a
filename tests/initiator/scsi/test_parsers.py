"""Parsers of standard INQUIRY, READ CAPACITY and REPORT LUNS data."""

from __future__ import annotations

import struct

import pytest

from initiator.errors import TargetProtocolError
from initiator.scsi import parsers
from initiator.scsi.lun import lun_to_wire


def _inquiry_data(vendor=b"IET     ", product=b"VIRTUAL-DISK    ", rev=b"0001", dtype=0, cmdque=True):
    b = bytearray(36)
    b[0] = dtype
    b[2] = 0x06
    b[3] = 0x12  # HISUP + format 2
    b[4] = 31
    b[5] = 0x08  # 3PC
    b[7] = 0x02 if cmdque else 0
    b[8:16], b[16:32], b[32:36] = vendor, product, rev
    return bytes(b)


def test_standard_inquiry_fields_are_decoded():
    inq = parsers.parse_inquiry(_inquiry_data())
    assert (inq.vendor, inq.product, inq.revision) == ("IET", "VIRTUAL-DISK", "0001")
    assert inq.device_type_name == "disk" and inq.connected and inq.cmdque and inq.hisup and inq.three_pc
    assert inq.version == 6 and inq.response_format == 2


def test_inquiry_with_qualifier_3_says_nothing_is_connected():
    inq = parsers.parse_inquiry(_inquiry_data(dtype=0x7F))
    assert not inq.connected and inq.device_type == 0x1F


def test_short_inquiry_is_the_targets_fault():
    with pytest.raises(TargetProtocolError, match="36"):
        parsers.parse_inquiry(b"\0" * 20)


def test_read_capacity16_reports_blocks_not_last_lba_and_provisioning_bits():
    data = struct.pack(">QI", 2047, 512) + bytes([0, 3, 0xC0, 0]) + bytes(16)
    cap = parsers.parse_read_capacity16(data)
    assert (cap.blocks, cap.block_size, cap.size) == (2048, 512, 1 << 20)
    assert cap.lbpme and cap.lbprz and cap.physical_exponent == 3


def test_read_capacity10_reports_blocks():
    cap = parsers.parse_read_capacity10(struct.pack(">II", 32767, 4096))
    assert (cap.blocks, cap.block_size, cap.lbpme) == (32768, 4096, False)


def test_report_luns_lists_each_lun():
    body = b"".join(lun_to_wire(n).to_bytes(8, "big") for n in (0, 1, 300))
    assert parsers.parse_report_luns(struct.pack(">II", len(body), 0) + body) == [0, 1, 300]


def test_report_luns_with_a_ragged_length_is_refused():
    with pytest.raises(TargetProtocolError):
        parsers.parse_report_luns(struct.pack(">II", 7, 0) + bytes(8))


def test_report_luns_truncated_by_allocation_length_returns_what_arrived():
    body = b"".join(lun_to_wire(n).to_bytes(8, "big") for n in range(4))
    assert parsers.parse_report_luns(struct.pack(">II", 64, 0) + body) == [0, 1, 2, 3]
