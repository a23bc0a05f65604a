"""Parsers for the Vital Product Data pages we use (SPC-4 7.8, SBC-3 6.6). Pure.

Pages: 0x00 supported pages, 0x80 unit serial number, 0x83 device identification, 0xB0 block limits,
0xB2 logical block provisioning. Every parser takes the raw page (as returned by INQUIRY EVPD=1,
possibly truncated by the allocation length) and raises `TargetProtocolError` for a page that cannot be
what it claims to be; fields past a short page's end read as 0 (SBC: "not reported").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TargetProtocolError

SUPPORTED_PAGES, UNIT_SERIAL, DEVICE_ID, BLOCK_LIMITS, BLOCK_DEVICE_CHARS, LB_PROVISIONING = (
    0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2)

DESIGNATOR_TYPES = {
    0: "vendor specific", 1: "T10 vendor ID", 2: "EUI-64", 3: "NAA", 4: "relative target port",
    5: "target port group", 6: "logical unit group", 7: "MD5 logical unit", 8: "SCSI name string",
    9: "protocol specific port", 10: "UUID",
}
ASSOCIATIONS = ("logical unit", "target port", "target device", "reserved")
CODE_SETS = {1: "binary", 2: "ascii", 3: "utf-8"}
PROVISIONING_TYPES = {0: "full", 1: "resource provisioned", 2: "thin"}


def _page(data: bytes | bytearray | memoryview, code: int) -> bytes:
    """Check the page header and return the page body (bytes 4..), clipped to what arrived."""
    b = bytes(data)
    if len(b) < 4:
        raise TargetProtocolError(f"VPD page 0x{code:02x}: {len(b)} bytes is shorter than its 4-byte header")
    if b[1] != code:
        raise TargetProtocolError(f"asked for VPD page 0x{code:02x}, the target returned page 0x{b[1]:02x}")
    length = int.from_bytes(b[2:4], "big")
    return b[4:4 + length]


def _u(b: bytes, off: int, n: int) -> int:
    """Big-endian field at ``off``; 0 if the page ends before it."""
    if off + n > len(b):
        return 0
    return int.from_bytes(b[off:off + n], "big")


def parse_supported_pages(data: bytes | bytearray | memoryview) -> list[int]:
    """VPD 0x00: the page codes the device supports."""
    return list(_page(data, SUPPORTED_PAGES))


def parse_unit_serial(data: bytes | bytearray | memoryview) -> str:
    """VPD 0x80: the unit serial number, ASCII with padding stripped."""
    return _page(data, UNIT_SERIAL).decode("ascii", "replace").strip(" \0")


@dataclass(frozen=True)
class Designator:
    """One designation descriptor of VPD 0x83."""

    type: int
    association: int
    code_set: int
    protocol: int | None
    value: bytes

    @property
    def type_name(self) -> str:
        return DESIGNATOR_TYPES.get(self.type, f"type {self.type}")

    @property
    def association_name(self) -> str:
        return ASSOCIATIONS[self.association & 3]

    def text(self) -> str:
        """Printable form: text designators as text, binary ones as hex (NAA with its 0x prefix)."""
        if self.code_set in (2, 3):
            return self.value.decode("utf-8", "replace").rstrip("\0 ")
        if self.type == 3:
            return "0x" + self.value.hex()
        return self.value.hex()

    def as_dict(self) -> dict:
        return {"type": self.type_name, "association": self.association_name,
                "code_set": CODE_SETS.get(self.code_set, str(self.code_set)), "value": self.text()}


def parse_device_id(data: bytes | bytearray | memoryview) -> list[Designator]:
    """VPD 0x83: the designation descriptors; a descriptor running past the page is an error."""
    body = _page(data, DEVICE_ID)
    out: list[Designator] = []
    off = 0
    while off + 4 <= len(body):
        b0, b1, dlen = body[off], body[off + 1], body[off + 3]
        if off + 4 + dlen > len(body):
            raise TargetProtocolError(f"VPD 0x83: designator at offset {off + 4} runs past the page end")
        piv = bool(b1 & 0x80)
        out.append(Designator(type=b1 & 0xF, association=(b1 >> 4) & 3, code_set=b0 & 0xF,
                              protocol=(b0 >> 4) if piv else None, value=body[off + 4:off + 4 + dlen]))
        off += 4 + dlen
    return out


@dataclass(frozen=True)
class BlockLimits:
    """VPD 0xB0. Counts are in logical blocks; 0 means "not reported" (no limit stated)."""

    max_compare_and_write: int = 0
    optimal_transfer_granularity: int = 0
    max_transfer_length: int = 0
    optimal_transfer_length: int = 0
    max_prefetch_length: int = 0
    max_unmap_lba_count: int = 0
    max_unmap_descriptors: int = 0
    optimal_unmap_granularity: int = 0
    unmap_granularity_alignment: int | None = None
    max_write_same_length: int = 0


def parse_block_limits(data: bytes | bytearray | memoryview) -> BlockLimits:
    """VPD 0xB0: transfer and UNMAP limits (offsets are page offsets minus the 4-byte header)."""
    b = _page(data, BLOCK_LIMITS)
    uga = _u(b, 28, 4)
    return BlockLimits(
        max_compare_and_write=_u(b, 1, 1), optimal_transfer_granularity=_u(b, 2, 2),
        max_transfer_length=_u(b, 4, 4), optimal_transfer_length=_u(b, 8, 4),
        max_prefetch_length=_u(b, 12, 4), max_unmap_lba_count=_u(b, 16, 4),
        max_unmap_descriptors=_u(b, 20, 4), optimal_unmap_granularity=_u(b, 24, 4),
        unmap_granularity_alignment=(uga & 0x7FFFFFFF) if uga & 0x80000000 else None,
        max_write_same_length=_u(b, 32, 8))


@dataclass(frozen=True)
class Provisioning:
    """VPD 0xB2: which deallocation commands the unit supports and how it provisions."""

    threshold_exponent: int
    lbpu: bool  # UNMAP supported
    lbpws: bool  # WRITE SAME(16) with UNMAP bit
    lbpws10: bool  # WRITE SAME(10) with UNMAP bit
    lbprz: int  # what deallocated blocks read back as (0: unspecified, 1: zeros)
    anc_sup: bool
    dp: bool
    provisioning_type: int

    @property
    def provisioning_name(self) -> str:
        return PROVISIONING_TYPES.get(self.provisioning_type, f"type {self.provisioning_type}")


def parse_provisioning(data: bytes | bytearray | memoryview) -> Provisioning:
    """VPD 0xB2 (SBC-4 6.6.6)."""
    b = _page(data, LB_PROVISIONING)
    if len(b) < 2:
        raise TargetProtocolError(f"VPD 0xb2: page body of {len(b)} bytes is too short")
    f = b[1]
    return Provisioning(threshold_exponent=b[0], lbpu=bool(f & 0x80), lbpws=bool(f & 0x40),
                        lbpws10=bool(f & 0x20), lbprz=(f >> 2) & 7, anc_sup=bool(f & 0x02),
                        dp=bool(f & 0x01), provisioning_type=_u(b, 2, 1) & 7)
