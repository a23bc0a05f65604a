"""`scsi.describe`: CDBs named for log lines and the stall proxy's rules."""

from __future__ import annotations

from initiator.scsi import cdb
from initiator.scsi.describe import CommandInfo, describe


def test_block_commands_name_their_lba_and_length():
    assert str(describe(cdb.write10(2048, 8))) == "WRITE(10) LBA 2048 len 8"
    assert str(describe(cdb.read16(1 << 33, 1))) == f"READ(16) LBA {1 << 33} len 1"
    assert str(describe(cdb.synchronize_cache16())) == "SYNCHRONIZE CACHE(16) LBA 0 len 0"


def test_other_commands_are_named_by_opcode_and_nothing_raises():
    assert str(describe(cdb.inquiry())) == "INQUIRY"
    assert str(describe(bytes([0xC5]))) == "opcode 0xc5"
    assert str(describe(b"")) == "empty CDB"
    assert describe(bytes([0x2A, 0])).lba is None          # a short CDB: the opcode alone


def test_overlaps_counts_every_block_touched():
    w = describe(cdb.write10(100, 8))                        # blocks 100..107
    assert w.overlaps(107, 200) and w.overlaps(0, 100) and not w.overlaps(108, 120)
    assert not CommandInfo(0x12, "INQUIRY").overlaps(0, 10)
