"""The Basic Header Segment and what every PDU shares (RFC 7143 11.2): opcodes, the PDU base class, digests,
padding, and `encode`, which turns a PDU into the five segments of the wire form. Sans-IO.

A PDU is five segments: the 48-byte BHS, optional AHS, header digest, data (padded to 4 bytes) and data
digest. `encode()` returns them as a list of buffers for a vectored write (the data is never copied).
The opcode classes live in `pdu_initiator` (what we send) and `pdu_target` (what a target sends);
`pdu` gathers them and decodes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import crc32c as _crc32c

from ..errors import LocalProtocolError

BHS_LEN = 48
DIGEST_LEN = 4
RESERVED_TAG = 0xFFFFFFFF
# RFC 7143 13.12: login PDUs carry at most 8192 bytes of data before MaxRecvDSL is known.
LOGIN_MAX_DATA = 8192
# Hard ceiling on any data segment we will ever accept (MaxRecvDataSegmentLength max is 2**24-1).
ABSOLUTE_MAX_DATA = (1 << 24) - 1


def crc32c(*parts: bytes | bytearray | memoryview) -> int:
    """CRC32C (Castagnoli) over the concatenation of ``parts``, as RFC 7143 digests use it."""
    value = 0
    for part in parts:
        value = _crc32c.crc32c(part, value)
    return value


def pad_len(n: int) -> int:
    """Bytes of zero padding that bring ``n`` to a multiple of 4."""
    return -n & 3


class Op:
    """Opcodes (RFC 7143 11.2.1.2)."""

    NOP_OUT = 0x00
    SCSI_CMD = 0x01
    TASK_MGMT_REQ = 0x02
    LOGIN_REQ = 0x03
    TEXT_REQ = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQ = 0x06
    SNACK_REQ = 0x10
    NOP_IN = 0x20
    SCSI_RSP = 0x21
    TASK_MGMT_RSP = 0x22
    LOGIN_RSP = 0x23
    TEXT_RSP = 0x24
    DATA_IN = 0x25
    LOGOUT_RSP = 0x26
    R2T = 0x31
    ASYNC_MSG = 0x32
    REJECT = 0x3F


def u24(b: bytes | memoryview, off: int) -> int:
    """The 24-bit big-endian field at ``off`` (DataSegmentLength)."""
    return (b[off] << 16) | (b[off + 1] << 8) | b[off + 2]


_U32 = struct.Struct(">I")


@dataclass(slots=True)
class PDU:
    """Common part of every PDU. Subclasses add their BHS fields."""

    opcode: ClassVar[int] = -1
    from_target: ClassVar[bool] = False

    itt: int = RESERVED_TAG
    immediate: bool = False
    ahs: bytes = b""
    data: bytes | bytearray | memoryview = b""

    def _pack(self, b: bytearray) -> None:  # fill opcode-specific fields of the 48-byte BHS
        raise NotImplementedError

    @classmethod
    def _unpack(cls, b: memoryview, ahs: bytes, data: bytes | memoryview) -> PDU:
        raise NotImplementedError

    def bhs(self) -> bytearray:
        """The 48-byte BHS with TotalAHSLength and DataSegmentLength filled in."""
        if len(self.ahs) % 4:
            raise LocalProtocolError("AHS length must be a multiple of 4")
        if len(self.ahs) > 255 * 4:
            raise LocalProtocolError("AHS longer than 1020 bytes")
        dsl = len(self.data)
        if dsl > ABSOLUTE_MAX_DATA:
            raise LocalProtocolError(f"data segment of {dsl} bytes exceeds 2**24-1")
        b = bytearray(BHS_LEN)
        b[0] = (0x40 if self.immediate else 0) | self.opcode
        b[4] = len(self.ahs) // 4
        b[5] = (dsl >> 16) & 0xFF
        b[6] = (dsl >> 8) & 0xFF
        b[7] = dsl & 0xFF
        _U32.pack_into(b, 16, self.itt)
        self._pack(b)
        return b


def encode(pdu: PDU, header_digest: bool = False, data_digest: bool = False) -> list[bytes | bytearray | memoryview]:
    """Segments for ``sendmsg``: [BHS+AHS(+HD)], then data and padding(+DD) when there is data."""
    head = pdu.bhs()
    if pdu.ahs:
        head += pdu.ahs
    if header_digest:
        head += crc32c(head).to_bytes(4, "little")
    out: list[bytes | bytearray | memoryview] = [head]
    data = pdu.data
    if data:
        out.append(data)
        pad = b"\0" * pad_len(len(data))
        tail = pad
        if data_digest:
            tail = pad + crc32c(data, pad).to_bytes(4, "little")
        if tail:
            out.append(tail)
    return out


def encode_bytes(pdu: PDU, header_digest: bool = False, data_digest: bool = False) -> bytes:
    """`encode()` joined into one bytes object (tests, login: never the data path)."""
    return b"".join(bytes(s) for s in encode(pdu, header_digest, data_digest))
