"""VPD page parsers: supported pages, serial, device identification, block limits, provisioning."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.errors import TargetProtocolError
from initiator.scsi import commands as scsi
from initiator.scsi import vpd


def _page(code, body):
    return bytes([0, code]) + len(body).to_bytes(2, "big") + body


def test_supported_pages_lists_codes():
    assert vpd.parse_supported_pages(_page(0, bytes([0, 0x80, 0x83, 0xB0, 0xB2]))) == [0, 0x80, 0x83, 0xB0, 0xB2]


def test_unit_serial_strips_padding():
    assert vpd.parse_unit_serial(_page(0x80, b"beaf10  ")) == "beaf10"


def test_wrong_vpd_page_code_is_refused():
    with pytest.raises(TargetProtocolError, match="0x80"):
        vpd.parse_unit_serial(_page(0x83, b"x"))


def test_device_identification_decodes_naa_and_scsi_name_designators():
    naa = bytes([0x01, 0x03, 0, 8]) + bytes.fromhex("6001405abcdef012")
    name = b"iqn.2026-11.test:x,t,0x1\0\0\0\0"
    scsiname = bytes([0x53, 0x98, 0, len(name)]) + name
    des = vpd.parse_device_id(_page(0x83, naa + scsiname))
    assert des[0].type_name == "NAA" and des[0].text() == "0x6001405abcdef012"
    assert des[0].association_name == "logical unit" and des[0].protocol is None
    assert des[1].type_name == "SCSI name string" and des[1].text() == "iqn.2026-11.test:x,t,0x1"
    assert des[1].association_name == "target port" and des[1].protocol == 5
    assert des[1].as_dict()["code_set"] == "utf-8"


def test_device_identification_with_overlong_descriptor_is_refused():
    with pytest.raises(TargetProtocolError, match="runs past"):
        vpd.parse_device_id(_page(0x83, bytes([1, 3, 0, 40]) + bytes(8)))


def test_block_limits_decodes_transfer_and_unmap_limits():
    body = bytearray(0x3C)
    struct.pack_into(">I", body, 4, 16384)      # max transfer length
    struct.pack_into(">I", body, 16, 0x400000)  # max unmap LBA count
    struct.pack_into(">I", body, 20, 16)        # max unmap descriptors
    struct.pack_into(">I", body, 28, 0x80000008)
    lim = vpd.parse_block_limits(_page(0xB0, bytes(body)))
    assert (lim.max_transfer_length, lim.max_unmap_lba_count, lim.max_unmap_descriptors) == (16384, 0x400000, 16)
    assert lim.unmap_granularity_alignment == 8


def test_short_block_limits_page_reads_missing_fields_as_not_reported():
    lim = vpd.parse_block_limits(_page(0xB0, bytes(8)))
    assert lim.max_unmap_lba_count == 0 and lim.unmap_granularity_alignment is None


def test_provisioning_page_decodes_lbpu_and_type():
    p = vpd.parse_provisioning(_page(0xB2, bytes([0, 0x84, 2, 0])))
    assert p.lbpu and not p.lbpws and p.lbprz == 1 and p.provisioning_name == "thin"


@given(st.binary(max_size=300))
def test_vpd_parsers_only_raise_protocol_errors_on_garbage(data):
    for parser in (vpd.parse_supported_pages, vpd.parse_unit_serial, vpd.parse_device_id,
                   vpd.parse_block_limits, vpd.parse_provisioning, scsi.parse_inquiry,
                   scsi.parse_read_capacity10, scsi.parse_read_capacity16, scsi.parse_report_luns):
        try:
            parser(data)
        except TargetProtocolError:
            pass
