"""SCSI CDBs, response parsers and sense decoding (pure; the real-target side is in test_ctl_target.py)."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.errors import ISCSIError, LocalProtocolError, TargetProtocolError
from initiator.scsi import cdb, sense, vpd
from initiator.scsi import commands as scsi

# ------------------------------------------------------------------------------------------------ CDBs


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


@given(st.integers(0, 16383))
def test_lun_field_round_trips(lun):
    wire = cdb.lun_to_wire(lun)
    assert cdb.lun_from_wire(wire) == lun
    assert cdb.lun_from_wire(wire.to_bytes(8, "big")) == lun


def test_lun_field_uses_peripheral_form_below_256_and_flat_space_above():
    assert cdb.lun_to_wire(1) == 0x0001 << 48
    assert cdb.lun_to_wire(300) == (0x4000 | 300) << 48
    with pytest.raises(LocalProtocolError):
        cdb.lun_to_wire(16384)


# --------------------------------------------------------------------------------------- parsers


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
    inq = scsi.parse_inquiry(_inquiry_data())
    assert (inq.vendor, inq.product, inq.revision) == ("IET", "VIRTUAL-DISK", "0001")
    assert inq.device_type_name == "disk" and inq.connected and inq.cmdque and inq.hisup and inq.three_pc
    assert inq.version == 6 and inq.response_format == 2


def test_inquiry_with_qualifier_3_says_nothing_is_connected():
    inq = scsi.parse_inquiry(_inquiry_data(dtype=0x7F))
    assert not inq.connected and inq.device_type == 0x1F


def test_short_inquiry_is_the_targets_fault():
    with pytest.raises(TargetProtocolError, match="36"):
        scsi.parse_inquiry(b"\0" * 20)


def test_read_capacity16_reports_blocks_not_last_lba_and_provisioning_bits():
    data = struct.pack(">QI", 2047, 512) + bytes([0, 3, 0xC0, 0]) + bytes(16)
    cap = scsi.parse_read_capacity16(data)
    assert (cap.blocks, cap.block_size, cap.size) == (2048, 512, 1 << 20)
    assert cap.lbpme and cap.lbprz and cap.physical_exponent == 3


def test_read_capacity10_reports_blocks():
    cap = scsi.parse_read_capacity10(struct.pack(">II", 32767, 4096))
    assert (cap.blocks, cap.block_size, cap.lbpme) == (32768, 4096, False)


def test_report_luns_lists_each_lun():
    body = b"".join(cdb.lun_to_wire(n).to_bytes(8, "big") for n in (0, 1, 300))
    assert scsi.parse_report_luns(struct.pack(">II", len(body), 0) + body) == [0, 1, 300]


def test_report_luns_with_a_ragged_length_is_refused():
    with pytest.raises(TargetProtocolError):
        scsi.parse_report_luns(struct.pack(">II", 7, 0) + bytes(8))


def test_report_luns_truncated_by_allocation_length_returns_what_arrived():
    body = b"".join(cdb.lun_to_wire(n).to_bytes(8, "big") for n in range(4))
    assert scsi.parse_report_luns(struct.pack(">II", 64, 0) + body) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------------------- VPD


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


# ---------------------------------------------------------------------------------------- sense


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
    assert scsi.is_unit_attention(err)
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


# ---------------------------------------------------------------------------------------- UNMAP


@given(st.lists(st.tuples(st.integers(0, 1 << 40), st.integers(1, 1 << 14)), min_size=1, max_size=20),
       st.integers(64, 1 << 16), st.integers(1, 8))
def test_unmap_split_respects_advertised_limits_and_covers_every_block(extents, max_lba, max_desc):
    support = scsi.UnmapSupport(max_lba_count=max_lba, max_descriptors=max_desc)
    commands = scsi.split_unmap(extents, support)
    for command in commands:
        assert len(command) <= max_desc and sum(n for _, n in command) <= max_lba
    assert sum(n for c in commands for _, n in c) == sum(n for _, n in extents)


async def _no_session_needed():
    await scsi.unmap(None, 1, [(0, 8)], None)


def test_unmap_is_refused_when_the_target_does_not_advertise_it():
    import asyncio

    with pytest.raises(LocalProtocolError, match="does not advertise UNMAP"):
        asyncio.run(_no_session_needed())


# ------------------------------------------------------------------------------------ against tgtd


async def _with_session(t, body):
    from initiator.ctl.direct import default_initiator_name
    from initiator.io.session import SessionConfig, open_session

    s = await open_session(SessionConfig("127.0.0.1", t.port, default_initiator_name(), t.iqn))
    try:
        for _ in range(3):  # the first command of a new I_T nexus may report UNIT ATTENTION
            try:
                await scsi.test_unit_ready(s, 1)
                break
            except scsi.SCSIError as e:
                if not scsi.is_unit_attention(e):
                    raise
        return await body(s)
    finally:
        await s.close()


@pytest.mark.target
def test_unmap_is_used_only_where_advertised_and_frees_the_blocks(tgtd):
    import asyncio
    import os

    thick, thin = tgtd(size_mb=4), tgtd(size_mb=4)
    thin.adm("--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
             "--params", "thin_provisioning=1")

    async def on_thick(s):
        assert (await scsi.read_capacity(s, 1)).lbpme is False
        return await scsi.unmap_support(s, 1)

    async def on_thin(s):
        support = await scsi.unmap_support(s, 1)
        assert support is not None
        await scsi.write(s, 1, 0, os.urandom(1 << 20), 512)
        await scsi.sync_cache(s, 1)
        before = os.stat(thin.backing[0]).st_blocks
        await scsi.unmap(s, 1, [(0, 2048)], support)
        return before, await scsi.read(s, 1, 0, 2048, 512)

    assert asyncio.run(_with_session(thick, on_thick)) is None
    before, data = asyncio.run(_with_session(thin, on_thin))
    assert before >= 2048 and os.stat(thin.backing[0]).st_blocks < before
    assert bytes(data) == bytes(1 << 20)
    with open(thin.backing[0], "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)


@pytest.mark.target
def test_scsi_error_from_a_real_target_reads_as_a_sentence(tgtd):
    import asyncio

    t = tgtd(size_mb=1)

    async def past_the_end(s):
        with pytest.raises(scsi.SCSIError) as e:
            await scsi.read(s, 1, 4096, 8, 512)
        return e.value

    err = asyncio.run(_with_session(t, past_the_end))
    assert err.key == sense.ILLEGAL_REQUEST
    assert "logical block address out of range" in str(err)
