"""SCSI CDB builders (SPC-4, SBC-3). Pure: bytes out, no state.

Names follow the commands: ``inquiry()``, ``vpd(page)``, ``read_capacity16()``, ``read10(lba, n)``...
``read_cdb``/``write_cdb`` pick the 10-byte form when it fits and the 16-byte form otherwise.
"""

from __future__ import annotations

import struct

from ..errors import LocalProtocolError

_Q = struct.Struct(">Q")
_I = struct.Struct(">I")


def test_unit_ready() -> bytes:
    return bytes(6)


def inquiry(alloc: int = 96) -> bytes:
    """Standard INQUIRY."""
    return bytes([0x12, 0, 0]) + alloc.to_bytes(2, "big") + b"\0"


def vpd(page: int, alloc: int = 255) -> bytes:
    """INQUIRY with EVPD=1 for VPD page ``page``."""
    return bytes([0x12, 1, page & 0xFF]) + alloc.to_bytes(2, "big") + b"\0"


def read_capacity10() -> bytes:
    return bytes([0x25]) + bytes(9)


def read_capacity16(alloc: int = 32) -> bytes:
    return bytes([0x9E, 0x10]) + bytes(8) + _I.pack(alloc) + bytes(2)


def report_luns(alloc: int = 16 + 8 * 256, select: int = 0) -> bytes:
    return bytes([0xA0, 0, select]) + bytes(3) + _I.pack(alloc) + bytes(2)


def _rw(op10: int, op16: int, lba: int, blocks: int, fua: bool) -> bytes:
    if lba < 0 or blocks < 0:
        raise LocalProtocolError("LBA and block count must be non-negative")
    flags = 0x08 if fua else 0
    if lba < (1 << 32) and blocks < (1 << 16):
        return bytes([op10, flags]) + _I.pack(lba) + b"\0" + blocks.to_bytes(2, "big") + b"\0"
    if lba >= (1 << 64) or blocks >= (1 << 32):
        raise LocalProtocolError(f"LBA {lba} / {blocks} blocks do not fit a 16-byte CDB")
    return bytes([op16, flags]) + _Q.pack(lba) + _I.pack(blocks) + b"\0\0"


def read10(lba: int, blocks: int, fua: bool = False) -> bytes:
    if lba >= 1 << 32 or blocks >= 1 << 16:
        raise LocalProtocolError("READ(10) holds a 32-bit LBA and a 16-bit length")
    return _rw(0x28, 0x88, lba, blocks, fua)


def read16(lba: int, blocks: int, fua: bool = False) -> bytes:
    return bytes([0x88, 0x08 if fua else 0]) + _Q.pack(lba) + _I.pack(blocks) + b"\0\0"


def write10(lba: int, blocks: int, fua: bool = False) -> bytes:
    if lba >= 1 << 32 or blocks >= 1 << 16:
        raise LocalProtocolError("WRITE(10) holds a 32-bit LBA and a 16-bit length")
    return _rw(0x2A, 0x8A, lba, blocks, fua)


def write16(lba: int, blocks: int, fua: bool = False) -> bytes:
    return bytes([0x8A, 0x08 if fua else 0]) + _Q.pack(lba) + _I.pack(blocks) + b"\0\0"


def read_cdb(lba: int, blocks: int, fua: bool = False) -> bytes:
    """READ(10) when it fits, else READ(16)."""
    return _rw(0x28, 0x88, lba, blocks, fua)


def write_cdb(lba: int, blocks: int, fua: bool = False) -> bytes:
    """WRITE(10) when it fits, else WRITE(16)."""
    return _rw(0x2A, 0x8A, lba, blocks, fua)


def synchronize_cache16(lba: int = 0, blocks: int = 0, immed: bool = False) -> bytes:
    """SYNCHRONIZE CACHE(16); blocks=0 means "to the end of the medium"."""
    return bytes([0x91, 0x02 if immed else 0]) + _Q.pack(lba) + _I.pack(blocks) + b"\0\0"


def unmap(param_len: int) -> bytes:
    """UNMAP CDB for a parameter list of ``param_len`` bytes (see `unmap_parameters`)."""
    return bytes([0x42]) + bytes(6) + param_len.to_bytes(2, "big") + b"\0"


def unmap_parameters(extents: list[tuple[int, int]]) -> bytes:
    """UNMAP parameter list: 8-byte header, then one 16-byte descriptor per (lba, blocks)."""
    body = b"".join(_Q.pack(lba) + _I.pack(n) + bytes(4) for lba, n in extents)
    return (6 + len(body)).to_bytes(2, "big") + len(body).to_bytes(2, "big") + bytes(4) + body
