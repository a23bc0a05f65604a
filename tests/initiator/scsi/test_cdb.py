"""SCSI CDB builders: the byte layouts SPC-4 and SBC-3 define."""

from __future__ import annotations

import struct

import pytest

from initiator.errors import LocalProtocolError
from initiator.scsi import cdb


def test_standard_inquiry_cdb_asks_for_the_allocation_length():
    assert cdb.inquiry(96) == bytes([0x12, 0, 0, 0, 96, 0])


def test_vpd_inquiry_sets_evpd_and_the_page_code():
    assert cdb.vpd(0x83, 0x1234) == bytes([0x12, 1, 0x83, 0x12, 0x34, 0])


def test_read_capacity16_is_a_service_action_in_with_alloc_length():
    c = cdb.read_capacity16(32)
    assert len(c) == 16 and c[0] == 0x9E and c[1] == 0x10 and c[10:14] == b"\0\0\0\x20"


def test_read_capacity10_is_ten_zeroed_bytes_after_the_opcode():
    assert cdb.read_capacity10() == b"\x25" + bytes(9)


def test_report_luns_carries_select_report_and_alloc_length():
    c = cdb.report_luns(4096, select=2)
    assert len(c) == 12 and c[0] == 0xA0 and c[2] == 2 and c[6:10] == (4096).to_bytes(4, "big")


def test_small_reads_use_read10_and_large_ones_read16():
    assert cdb.read_cdb(5, 8) == bytes([0x28, 0, 0, 0, 0, 5, 0, 0, 8, 0])
    big = cdb.read_cdb(1 << 33, 8)
    assert big[0] == 0x88 and struct.unpack(">QI", big[2:14]) == (1 << 33, 8)
    long = cdb.read_cdb(0, 1 << 16)
    assert long[0] == 0x88 and len(long) == 16


def test_fua_sets_bit_3_of_byte_1_in_both_write_forms():
    assert cdb.write10(1, 1, fua=True)[1] == 0x08
    assert cdb.write16(1, 1, fua=True)[1] == 0x08
    assert cdb.write_cdb(1, 1)[0] == 0x2A and cdb.write_cdb(1 << 40, 1)[0] == 0x8A


def test_read10_refuses_what_it_cannot_express():
    with pytest.raises(LocalProtocolError):
        cdb.read10(1 << 32, 1)
    with pytest.raises(LocalProtocolError):
        cdb.write10(0, 1 << 16)


def test_synchronize_cache16_whole_medium_is_all_zero_range():
    c = cdb.synchronize_cache16()
    assert c == b"\x91" + bytes(15)
    assert cdb.synchronize_cache16(immed=True)[1] == 0x02


def test_unmap_cdb_and_parameter_list_layout():
    params = cdb.unmap_parameters([(0x10, 8), (0x100, 2)])
    assert len(params) == 8 + 32
    assert struct.unpack(">HH", params[:4]) == (6 + 32, 32)
    assert struct.unpack(">QI", params[8:20]) == (0x10, 8)
    assert struct.unpack(">QI", params[24:36]) == (0x100, 2)
    c = cdb.unmap(len(params))
    assert len(c) == 10 and c[0] == 0x42 and c[7:9] == (40).to_bytes(2, "big")
