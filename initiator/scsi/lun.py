"""The 8-byte LUN field (SAM-5): how a LUN number travels in a PDU and in REPORT LUNS data. Pure.

Single-level addressing only: the peripheral form below 256, the flat space form up to 16383. The iSCSI
session core encodes every command's LUN with `lun_to_wire`; REPORT LUNS answers decode with `lun_from_wire`.
"""

from __future__ import annotations

import struct

from ..errors import LocalProtocolError

MAX_LUN = 0x3FFF  # 16383, the top of the flat space form
_Q = struct.Struct(">Q")


def lun_to_wire(lun: int) -> int:
    """The 8-byte LUN field (SAM-5 4.7) for LUN ``lun``: peripheral form below 256, flat space to 16383."""
    if 0 <= lun < 256:
        return lun << 48
    if 0 <= lun <= MAX_LUN:
        return (0x4000 | lun) << 48
    raise LocalProtocolError(f"LUN {lun} is outside 0..16383 (single-level addressing)")


def lun_from_wire(field: int | bytes) -> int:
    """Inverse of `lun_to_wire`; hierarchical or other forms come back as the raw 64-bit field."""
    b = field if isinstance(field, bytes | bytearray) else _Q.pack(field)
    if not any(b[2:8]):
        if b[0] == 0:
            return b[1]
        if b[0] >> 6 == 1:
            return ((b[0] & 0x3F) << 8) | b[1]
    return int.from_bytes(b, "big")
