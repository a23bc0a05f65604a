"""Parsers of the data SCSI commands return: standard INQUIRY, READ CAPACITY (10/16), REPORT LUNS. Pure.

SPC-4 / SBC-3 byte layouts; VPD pages are in `vpd`. A reply that cannot be what it claims to be raises
`TargetProtocolError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import TargetProtocolError
from .lun import lun_from_wire

DEVICE_TYPES = {0x00: "disk", 0x01: "tape", 0x05: "cd/dvd", 0x07: "optical", 0x0C: "storage array",
                0x0D: "enclosure", 0x0E: "simplified disk", 0x1F: "unknown/no device"}
DISK, SIMPLIFIED_DISK = 0x00, 0x0E

_I = struct.Struct(">I")


@dataclass(frozen=True)
class Inquiry:
    """Standard INQUIRY data (SPC-4 6.6.2)."""

    qualifier: int
    device_type: int
    removable: bool
    version: int
    response_format: int
    hisup: bool
    tpgs: int
    protect: bool
    three_pc: bool
    cmdque: bool
    vendor: str
    product: str
    revision: str

    @property
    def device_type_name(self) -> str:
        return DEVICE_TYPES.get(self.device_type, f"type 0x{self.device_type:02x}")

    @property
    def connected(self) -> bool:
        """Qualifier 0: a device is connected at this LUN (3: no device can be here)."""
        return self.qualifier == 0


def _ascii(b: bytes) -> str:
    return b.decode("ascii", "replace").strip(" \0")


def parse_inquiry(data: bytes | bytearray | memoryview) -> Inquiry:
    """Standard INQUIRY response; at least the 36 mandatory bytes are required."""
    b = bytes(data)
    if len(b) < 36:
        raise TargetProtocolError(f"standard INQUIRY data is {len(b)} bytes, at least 36 are required")
    return Inquiry(qualifier=b[0] >> 5, device_type=b[0] & 0x1F, removable=bool(b[1] & 0x80), version=b[2],
                   response_format=b[3] & 0xF, hisup=bool(b[3] & 0x10), tpgs=(b[5] >> 4) & 3,
                   protect=bool(b[5] & 1), three_pc=bool(b[5] & 8), cmdque=bool(b[7] & 2),
                   vendor=_ascii(b[8:16]), product=_ascii(b[16:32]), revision=_ascii(b[32:36]))


@dataclass(frozen=True)
class Capacity:
    """READ CAPACITY result. ``blocks`` is the count (last LBA + 1). lbpme/lbprz are False from RC(10)."""

    block_size: int
    blocks: int
    lbpme: bool = False
    lbprz: bool = False
    physical_exponent: int = 0
    lowest_aligned: int = 0
    protection: bool = False

    @property
    def size(self) -> int:
        return self.block_size * self.blocks


def parse_read_capacity10(data: bytes | bytearray | memoryview) -> Capacity:
    """READ CAPACITY(10): last LBA 0xFFFFFFFF means "too big, ask with (16)" (callers check)."""
    b = bytes(data)
    if len(b) < 8:
        raise TargetProtocolError(f"READ CAPACITY(10) returned {len(b)} bytes, 8 are required")
    last, size = struct.unpack_from(">II", b)
    return Capacity(block_size=size, blocks=last + 1)


def parse_read_capacity16(data: bytes | bytearray | memoryview) -> Capacity:
    b = bytes(data)
    if len(b) < 12:
        raise TargetProtocolError(f"READ CAPACITY(16) returned {len(b)} bytes, at least 12 are required")
    last, size = struct.unpack_from(">QI", b)
    b = b.ljust(32, b"\0")
    return Capacity(block_size=size, blocks=last + 1, protection=bool(b[12] & 1),
                    physical_exponent=b[13] & 0xF, lbpme=bool(b[14] & 0x80), lbprz=bool(b[14] & 0x40),
                    lowest_aligned=((b[14] & 0x3F) << 8) | b[15])


def parse_report_luns(data: bytes | bytearray | memoryview) -> list[int]:
    """REPORT LUNS: the LUN numbers listed (as much of the list as arrived)."""
    b = bytes(data)
    if len(b) < 8:
        raise TargetProtocolError(f"REPORT LUNS returned {len(b)} bytes, at least 8 are required")
    length = _I.unpack_from(b)[0]
    if length % 8:
        raise TargetProtocolError(f"REPORT LUNS list length {length} is not a multiple of 8")
    body = b[8:8 + length]
    return [lun_from_wire(body[i:i + 8]) for i in range(0, len(body) - 7, 8)]
