"""Name a CDB for people: the opcode's name, and the LBA and length of a block command. Pure.

Used where a command must be named in a log line or a report ("WRITE(16) LBA 2048 len 8"): the daemon's
command-timeout escalation, and the test proxy that stalls chosen commands.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMES = {
    0x00: "TEST UNIT READY", 0x03: "REQUEST SENSE", 0x12: "INQUIRY", 0x1A: "MODE SENSE(6)",
    0x25: "READ CAPACITY(10)", 0x28: "READ(10)", 0x2A: "WRITE(10)", 0x35: "SYNCHRONIZE CACHE(10)",
    0x42: "UNMAP", 0x5A: "MODE SENSE(10)", 0x88: "READ(16)", 0x8A: "WRITE(16)", 0x91: "SYNCHRONIZE CACHE(16)",
    0x9E: "SERVICE ACTION IN(16)", 0xA0: "REPORT LUNS",
}
_RW10 = (0x28, 0x2A, 0x35)
_RW16 = (0x88, 0x8A, 0x91)
WRITES = frozenset((0x2A, 0x8A))
READS = frozenset((0x28, 0x88))


@dataclass(frozen=True)
class CommandInfo:
    """What a CDB asks for: ``lba`` and ``blocks`` are None for a command that addresses no blocks."""

    opcode: int
    name: str
    lba: int | None = None
    blocks: int | None = None

    def __str__(self) -> str:
        if self.lba is None:
            return self.name
        return f"{self.name} LBA {self.lba} len {self.blocks}"

    def overlaps(self, first: int, last: int) -> bool:
        """The command touches a block in first..last (inclusive)."""
        if self.lba is None or self.blocks is None:
            return False
        return self.lba <= last and self.lba + max(self.blocks, 1) - 1 >= first


def describe(cdb: bytes | bytearray | memoryview) -> CommandInfo:
    """Decode ``cdb`` far enough to name it; never raises (a short CDB is named by its opcode alone)."""
    cdb = bytes(cdb)
    if not cdb:
        return CommandInfo(-1, "empty CDB")
    op = cdb[0]
    name = NAMES.get(op, f"opcode 0x{op:02x}")
    if op in _RW10 and len(cdb) >= 10:
        return CommandInfo(op, name, int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[7:9], "big"))
    if op in _RW16 and len(cdb) >= 16:
        return CommandInfo(op, name, int.from_bytes(cdb[2:10], "big"), int.from_bytes(cdb[10:14], "big"))
    return CommandInfo(op, name)
