"""iSCSI PDU codec (RFC 7143 section 11): every opcode, both directions, sans-IO.

A PDU is five segments: the 48-byte BHS, optional AHS, header digest, data (padded to 4 bytes) and
data digest. `encode()` returns them as a list of buffers ready for ``socket.sendmsg`` (no
concatenation of the data); `Decoder` takes bytes in and gives PDU objects out, validating every
length against the negotiated limit *before* it buffers the segment.

The file is long on purpose: it is the table of all 18 opcodes, one small class each, and reads best whole.
Each PDU class knows only its own BHS fields. Sequence-number rules, windows and state live in
`session.py` / `connection.py`, never here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

import crc32c as _crc32c

from ..errors import DigestError, LocalProtocolError, TargetProtocolError

BHS_LEN = 48
DIGEST_LEN = 4
RESERVED_TAG = 0xFFFFFFFF
# RFC 7143 11.12.? / 13.12: login PDUs carry at most 8192 bytes of data before MaxRecvDSL is known.
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


def _u24(b: bytes | memoryview, off: int) -> int:
    return (b[off] << 16) | (b[off + 1] << 8) | b[off + 2]


_I = struct.Struct(">I")
_H = struct.Struct(">H")
_Q = struct.Struct(">Q")


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
        _I.pack_into(b, 16, self.itt)
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


# --------------------------------------------------------------------------- initiator -> target


@dataclass(slots=True)
class NopOut(PDU):
    opcode: ClassVar[int] = Op.NOP_OUT
    lun: int = 0
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.ttt)
        _I.pack_into(b, 24, self.cmdsn)
        _I.pack_into(b, 28, self.expstatsn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_I.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   lun=_Q.unpack_from(b, 8)[0], ttt=_I.unpack_from(b, 20)[0],
                   cmdsn=_I.unpack_from(b, 24)[0], expstatsn=_I.unpack_from(b, 28)[0])


@dataclass(slots=True)
class ScsiCommand(PDU):
    opcode: ClassVar[int] = Op.SCSI_CMD
    final: bool = True
    read: bool = False
    write: bool = False
    attr: int = 1  # SIMPLE task attribute
    lun: int = 0
    edtl: int = 0  # Expected Data Transfer Length
    cmdsn: int = 0
    expstatsn: int = 0
    cdb: bytes = b""

    def _pack(self, b: bytearray) -> None:
        cdb = self.cdb
        if len(cdb) > 16:
            raise LocalProtocolError("CDBs over 16 bytes need an extended-CDB AHS; build it in ahs")
        b[1] = (0x80 if self.final else 0) | (0x40 if self.read else 0) | (0x20 if self.write else 0) | (
            self.attr & 7)
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.edtl)
        _I.pack_into(b, 24, self.cmdsn)
        _I.pack_into(b, 28, self.expstatsn)
        b[32:32 + len(cdb)] = cdb

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(itt=_I.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   final=bool(f & 0x80), read=bool(f & 0x40), write=bool(f & 0x20), attr=f & 7,
                   lun=_Q.unpack_from(b, 8)[0], edtl=_I.unpack_from(b, 20)[0],
                   cmdsn=_I.unpack_from(b, 24)[0], expstatsn=_I.unpack_from(b, 28)[0],
                   cdb=bytes(b[32:48]))


class TMF:
    """Task management function codes (RFC 7143 11.5.1)."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8


@dataclass(slots=True)
class TaskMgmtRequest(PDU):
    opcode: ClassVar[int] = Op.TASK_MGMT_REQ
    function: int = TMF.ABORT_TASK
    lun: int = 0
    rtt: int = RESERVED_TAG  # Referenced Task Tag
    cmdsn: int = 0
    expstatsn: int = 0
    refcmdsn: int = 0
    expdatasn: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80 | (self.function & 0x7F)
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.rtt)
        _I.pack_into(b, 24, self.cmdsn)
        _I.pack_into(b, 28, self.expstatsn)
        _I.pack_into(b, 32, self.refcmdsn)
        _I.pack_into(b, 36, self.expdatasn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_I.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   function=b[1] & 0x7F, lun=_Q.unpack_from(b, 8)[0], rtt=_I.unpack_from(b, 20)[0],
                   cmdsn=_I.unpack_from(b, 24)[0], expstatsn=_I.unpack_from(b, 28)[0],
                   refcmdsn=_I.unpack_from(b, 32)[0], expdatasn=_I.unpack_from(b, 36)[0])


@dataclass(slots=True)
class LoginRequest(PDU):
    opcode: ClassVar[int] = Op.LOGIN_REQ
    transit: bool = False
    cont: bool = False
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_min: int = 0
    isid: bytes = b"\0" * 6
    tsih: int = 0
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0

    def _pack(self, b: bytearray) -> None:
        b[0] |= 0x40  # login requests are always immediate
        b[1] = (0x80 if self.transit else 0) | (0x40 if self.cont else 0) | ((self.csg & 3) << 2) | (self.nsg & 3)
        b[2] = self.version_max
        b[3] = self.version_min
        if len(self.isid) != 6:
            raise LocalProtocolError("ISID must be 6 bytes")
        b[8:14] = self.isid
        _H.pack_into(b, 14, self.tsih)
        _H.pack_into(b, 20, self.cid)
        _I.pack_into(b, 24, self.cmdsn)
        _I.pack_into(b, 28, self.expstatsn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(itt=_I.unpack_from(b, 16)[0], immediate=True, ahs=ahs, data=data,
                   transit=bool(f & 0x80), cont=bool(f & 0x40), csg=(f >> 2) & 3, nsg=f & 3,
                   version_max=b[2], version_min=b[3], isid=bytes(b[8:14]), tsih=_H.unpack_from(b, 14)[0],
                   cid=_H.unpack_from(b, 20)[0], cmdsn=_I.unpack_from(b, 24)[0],
                   expstatsn=_I.unpack_from(b, 28)[0])


@dataclass(slots=True)
class TextRequest(PDU):
    opcode: ClassVar[int] = Op.TEXT_REQ
    final: bool = True
    cont: bool = False
    lun: int = 0
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = (0x80 if self.final else 0) | (0x40 if self.cont else 0)
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.ttt)
        _I.pack_into(b, 24, self.cmdsn)
        _I.pack_into(b, 28, self.expstatsn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_I.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   final=bool(b[1] & 0x80), cont=bool(b[1] & 0x40), lun=_Q.unpack_from(b, 8)[0],
                   ttt=_I.unpack_from(b, 20)[0], cmdsn=_I.unpack_from(b, 24)[0],
                   expstatsn=_I.unpack_from(b, 28)[0])


@dataclass(slots=True)
class DataOut(PDU):
    opcode: ClassVar[int] = Op.DATA_OUT
    final: bool = False
    lun: int = 0
    ttt: int = RESERVED_TAG
    expstatsn: int = 0
    datasn: int = 0
    offset: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80 if self.final else 0
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.ttt)
        _I.pack_into(b, 28, self.expstatsn)
        _I.pack_into(b, 36, self.datasn)
        _I.pack_into(b, 40, self.offset)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_I.unpack_from(b, 16)[0], ahs=ahs, data=data, final=bool(b[1] & 0x80),
                   lun=_Q.unpack_from(b, 8)[0], ttt=_I.unpack_from(b, 20)[0],
                   expstatsn=_I.unpack_from(b, 28)[0], datasn=_I.unpack_from(b, 36)[0],
                   offset=_I.unpack_from(b, 40)[0])


class LogoutReason:
    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_FOR_RECOVERY = 2


@dataclass(slots=True)
class LogoutRequest(PDU):
    opcode: ClassVar[int] = Op.LOGOUT_REQ
    reason: int = LogoutReason.CLOSE_SESSION
    cid: int = 0
    cmdsn: int = 0
    expstatsn: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80 | (self.reason & 0x7F)
        _H.pack_into(b, 20, self.cid)
        _I.pack_into(b, 24, self.cmdsn)
        _I.pack_into(b, 28, self.expstatsn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_I.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   reason=b[1] & 0x7F, cid=_H.unpack_from(b, 20)[0], cmdsn=_I.unpack_from(b, 24)[0],
                   expstatsn=_I.unpack_from(b, 28)[0])


@dataclass(slots=True)
class SnackRequest(PDU):
    opcode: ClassVar[int] = Op.SNACK_REQ
    type: int = 0
    lun: int = 0
    ttt: int = RESERVED_TAG
    expstatsn: int = 0
    begrun: int = 0
    runlength: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80 | (self.type & 0x0F)
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.ttt)
        _I.pack_into(b, 28, self.expstatsn)
        _I.pack_into(b, 40, self.begrun)
        _I.pack_into(b, 44, self.runlength)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_I.unpack_from(b, 16)[0], ahs=ahs, data=data, type=b[1] & 0x0F,
                   lun=_Q.unpack_from(b, 8)[0], ttt=_I.unpack_from(b, 20)[0],
                   expstatsn=_I.unpack_from(b, 28)[0], begrun=_I.unpack_from(b, 40)[0],
                   runlength=_I.unpack_from(b, 44)[0])


# --------------------------------------------------------------------------- target -> initiator


@dataclass(slots=True)
class _TargetPDU(PDU):
    """Target PDUs all carry StatSN, ExpCmdSN and MaxCmdSN at 24/28/32."""

    from_target: ClassVar[bool] = True
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0

    def _pack_sn(self, b: bytearray) -> None:
        _I.pack_into(b, 24, self.statsn)
        _I.pack_into(b, 28, self.expcmdsn)
        _I.pack_into(b, 32, self.maxcmdsn)

    @staticmethod
    def _sn(b) -> dict:
        return {"itt": _I.unpack_from(b, 16)[0], "statsn": _I.unpack_from(b, 24)[0],
                "expcmdsn": _I.unpack_from(b, 28)[0], "maxcmdsn": _I.unpack_from(b, 32)[0]}


@dataclass(slots=True)
class NopIn(_TargetPDU):
    opcode: ClassVar[int] = Op.NOP_IN
    lun: int = 0
    ttt: int = RESERVED_TAG

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.ttt)
        self._pack_sn(b)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, lun=_Q.unpack_from(b, 8)[0], ttt=_I.unpack_from(b, 20)[0], **cls._sn(b))


@dataclass(slots=True)
class ScsiResponse(_TargetPDU):
    opcode: ClassVar[int] = Op.SCSI_RSP
    bidi_overflow: bool = False
    bidi_underflow: bool = False
    overflow: bool = False
    underflow: bool = False
    response: int = 0
    status: int = 0
    snack_tag: int = 0
    expdatasn: int = 0
    bidi_residual: int = 0
    residual: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80 | (0x10 if self.bidi_overflow else 0) | (0x08 if self.bidi_underflow else 0) | (
            0x04 if self.overflow else 0) | (0x02 if self.underflow else 0)
        b[2] = self.response
        b[3] = self.status
        _I.pack_into(b, 20, self.snack_tag)
        self._pack_sn(b)
        _I.pack_into(b, 36, self.expdatasn)
        _I.pack_into(b, 40, self.bidi_residual)
        _I.pack_into(b, 44, self.residual)

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(ahs=ahs, data=data, bidi_overflow=bool(f & 0x10), bidi_underflow=bool(f & 0x08),
                   overflow=bool(f & 0x04), underflow=bool(f & 0x02), response=b[2], status=b[3],
                   snack_tag=_I.unpack_from(b, 20)[0], expdatasn=_I.unpack_from(b, 36)[0],
                   bidi_residual=_I.unpack_from(b, 40)[0], residual=_I.unpack_from(b, 44)[0], **cls._sn(b))

    @property
    def sense(self) -> bytes:
        """Sense data from the data segment (2-byte SenseLength prefix), or b''."""
        d = self.data
        if len(d) < 2:
            return b""
        n = (d[0] << 8) | d[1]
        return bytes(d[2:2 + n])


@dataclass(slots=True)
class TaskMgmtResponse(_TargetPDU):
    opcode: ClassVar[int] = Op.TASK_MGMT_RSP
    response: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80
        b[2] = self.response
        self._pack_sn(b)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, response=b[2], **cls._sn(b))


@dataclass(slots=True)
class LoginResponse(_TargetPDU):
    opcode: ClassVar[int] = Op.LOGIN_RSP
    transit: bool = False
    cont: bool = False
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_active: int = 0
    isid: bytes = b"\0" * 6
    tsih: int = 0
    status_class: int = 0
    status_detail: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = (0x80 if self.transit else 0) | (0x40 if self.cont else 0) | ((self.csg & 3) << 2) | (self.nsg & 3)
        b[2] = self.version_max
        b[3] = self.version_active
        b[8:14] = self.isid
        _H.pack_into(b, 14, self.tsih)
        self._pack_sn(b)
        b[36] = self.status_class
        b[37] = self.status_detail

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(ahs=ahs, data=data, transit=bool(f & 0x80), cont=bool(f & 0x40), csg=(f >> 2) & 3,
                   nsg=f & 3, version_max=b[2], version_active=b[3], isid=bytes(b[8:14]),
                   tsih=_H.unpack_from(b, 14)[0], status_class=b[36], status_detail=b[37], **cls._sn(b))


@dataclass(slots=True)
class TextResponse(_TargetPDU):
    opcode: ClassVar[int] = Op.TEXT_RSP
    final: bool = True
    cont: bool = False
    lun: int = 0
    ttt: int = RESERVED_TAG

    def _pack(self, b: bytearray) -> None:
        b[1] = (0x80 if self.final else 0) | (0x40 if self.cont else 0)
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.ttt)
        self._pack_sn(b)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, final=bool(b[1] & 0x80), cont=bool(b[1] & 0x40),
                   lun=_Q.unpack_from(b, 8)[0], ttt=_I.unpack_from(b, 20)[0], **cls._sn(b))


@dataclass(slots=True)
class DataIn(_TargetPDU):
    opcode: ClassVar[int] = Op.DATA_IN
    final: bool = False
    ack: bool = False
    overflow: bool = False
    underflow: bool = False
    has_status: bool = False
    status: int = 0
    lun: int = 0
    ttt: int = RESERVED_TAG
    datasn: int = 0
    offset: int = 0
    residual: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = (0x80 if self.final else 0) | (0x40 if self.ack else 0) | (0x04 if self.overflow else 0) | (
            0x02 if self.underflow else 0) | (0x01 if self.has_status else 0)
        b[3] = self.status
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.ttt)
        self._pack_sn(b)
        _I.pack_into(b, 36, self.datasn)
        _I.pack_into(b, 40, self.offset)
        _I.pack_into(b, 44, self.residual)

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(ahs=ahs, data=data, final=bool(f & 0x80), ack=bool(f & 0x40), overflow=bool(f & 0x04),
                   underflow=bool(f & 0x02), has_status=bool(f & 0x01), status=b[3],
                   lun=_Q.unpack_from(b, 8)[0], ttt=_I.unpack_from(b, 20)[0],
                   datasn=_I.unpack_from(b, 36)[0], offset=_I.unpack_from(b, 40)[0],
                   residual=_I.unpack_from(b, 44)[0], **cls._sn(b))


@dataclass(slots=True)
class LogoutResponse(_TargetPDU):
    opcode: ClassVar[int] = Op.LOGOUT_RSP
    response: int = 0
    time2wait: int = 0
    time2retain: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80
        b[2] = self.response
        self._pack_sn(b)
        _H.pack_into(b, 40, self.time2wait)
        _H.pack_into(b, 42, self.time2retain)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, response=b[2], time2wait=_H.unpack_from(b, 40)[0],
                   time2retain=_H.unpack_from(b, 42)[0], **cls._sn(b))


@dataclass(slots=True)
class R2T(_TargetPDU):
    opcode: ClassVar[int] = Op.R2T
    lun: int = 0
    ttt: int = RESERVED_TAG
    r2tsn: int = 0
    offset: int = 0
    length: int = 0  # Desired Data Transfer Length

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80
        _Q.pack_into(b, 8, self.lun)
        _I.pack_into(b, 20, self.ttt)
        self._pack_sn(b)
        _I.pack_into(b, 36, self.r2tsn)
        _I.pack_into(b, 40, self.offset)
        _I.pack_into(b, 44, self.length)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, lun=_Q.unpack_from(b, 8)[0], ttt=_I.unpack_from(b, 20)[0],
                   r2tsn=_I.unpack_from(b, 36)[0], offset=_I.unpack_from(b, 40)[0],
                   length=_I.unpack_from(b, 44)[0], **cls._sn(b))


class AsyncEvent:
    """AsyncEvent codes (RFC 7143 11.9.1)."""

    SCSI_EVENT = 0
    LOGOUT_REQUEST = 1
    CONNECTION_DROP = 2
    SESSION_DROP = 3
    NEGOTIATION_REQUEST = 4
    TASK_TERMINATION = 5
    VENDOR = 255


@dataclass(slots=True)
class AsyncMessage(_TargetPDU):
    opcode: ClassVar[int] = Op.ASYNC_MSG
    lun: int = 0
    event: int = 0
    vcode: int = 0
    param1: int = 0
    param2: int = 0
    param3: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80
        _Q.pack_into(b, 8, self.lun)
        self._pack_sn(b)
        b[36] = self.event
        b[37] = self.vcode
        _H.pack_into(b, 38, self.param1)
        _H.pack_into(b, 40, self.param2)
        _H.pack_into(b, 42, self.param3)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, lun=_Q.unpack_from(b, 8)[0], event=b[36], vcode=b[37],
                   param1=_H.unpack_from(b, 38)[0], param2=_H.unpack_from(b, 40)[0],
                   param3=_H.unpack_from(b, 42)[0], **cls._sn(b))


REJECT_REASONS = {
    0x02: "data (payload) digest error",
    0x03: "SNACK reject",
    0x04: "protocol error",
    0x05: "command not supported",
    0x06: "immediate command reject",
    0x07: "task in progress",
    0x08: "invalid data ACK",
    0x09: "invalid PDU field",
    0x0A: "long operation reject",
    0x0B: "deprecated (negotiation reset)",
    0x0C: "waiting for logout",
}


@dataclass(slots=True)
class Reject(_TargetPDU):
    opcode: ClassVar[int] = Op.REJECT
    reason: int = 0
    datasn: int = 0  # DataSN/R2TSN

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80
        b[2] = self.reason
        self._pack_sn(b)
        _I.pack_into(b, 36, self.datasn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, reason=b[2], datasn=_I.unpack_from(b, 36)[0], **cls._sn(b))

    @property
    def rejected_header(self) -> bytes:
        """The BHS of the PDU the target rejected (carried as data)."""
        return bytes(self.data[:BHS_LEN])

    def describe(self) -> str:
        return REJECT_REASONS.get(self.reason, f"reason 0x{self.reason:02x}")


PDU_CLASSES: dict[int, type[PDU]] = {
    cls.opcode: cls
    for cls in (NopOut, ScsiCommand, TaskMgmtRequest, LoginRequest, TextRequest, DataOut, LogoutRequest,
                SnackRequest, NopIn, ScsiResponse, TaskMgmtResponse, LoginResponse, TextResponse, DataIn,
                LogoutResponse, R2T, AsyncMessage, Reject)
}


def peek_header(bhs: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(opcode, AHS bytes, DataSegmentLength) of a 48-byte BHS, without building an object."""
    return bhs[0] & 0x3F, bhs[4] * 4, _u24(bhs, 5)


def decode_pdu(bhs: bytes | bytearray | memoryview, ahs: bytes = b"",
               data: bytes | bytearray | memoryview = b"", from_target: bool = True) -> PDU:
    """Build the PDU object for an already-framed BHS/AHS/data (digests already checked)."""
    opcode = bhs[0] & 0x3F
    cls = PDU_CLASSES.get(opcode)
    if cls is None or cls.from_target != from_target:
        side = "target" if from_target else "initiator"
        raise TargetProtocolError(f"unknown or misdirected opcode 0x{opcode:02x} from the {side}")
    return cls._unpack(memoryview(bytes(bhs)), ahs, data)


@dataclass
class Decoder:
    """Frames PDUs out of a byte stream: ``feed(bytes)``, then ``next_pdu()`` until it returns None.

    ``max_data`` is the MaxRecvDataSegmentLength we declared (8192 during login): a PDU that
    announces more is refused before any of its data is buffered. ``header_digest`` and
    ``data_digest`` switch on CRC32C checks once the login negotiated them.
    """

    max_data: int = LOGIN_MAX_DATA
    header_digest: bool = False
    data_digest: bool = False
    from_target: bool = True
    _buf: bytearray = field(default_factory=bytearray)
    _pos: int = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos > len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_pdu(self) -> PDU | None:
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < BHS_LEN:
            return None
        opcode, ahs_len, dsl = peek_header(memoryview(buf)[pos:pos + BHS_LEN])
        cls = PDU_CLASSES.get(opcode)
        if cls is None or cls.from_target != self.from_target:
            raise TargetProtocolError(f"unknown or misdirected opcode 0x{opcode:02x} in a received PDU")
        if dsl > self.max_data:
            raise TargetProtocolError(
                f"{cls.__name__} announces a {dsl}-byte data segment; our MaxRecvDataSegmentLength is "
                f"{self.max_data}")
        hd = DIGEST_LEN if self.header_digest else 0
        dd = DIGEST_LEN if (self.data_digest and dsl) else 0
        head_end = BHS_LEN + ahs_len
        total = head_end + hd + dsl + pad_len(dsl) + dd
        if avail < total:
            return None
        mv = memoryview(buf)
        try:
            head = mv[pos:pos + head_end]
            if hd:
                got = int.from_bytes(mv[pos + head_end:pos + head_end + 4], "little")
                if got != crc32c(head):
                    raise DigestError(f"header digest mismatch on a {cls.__name__}")
            dstart = pos + head_end + hd
            padded = dsl + pad_len(dsl)
            data = bytes(mv[dstart:dstart + dsl])
            if dd:
                got = int.from_bytes(mv[dstart + padded:dstart + padded + 4], "little")
                if got != crc32c(mv[dstart:dstart + padded]):
                    raise DigestError(f"data digest mismatch on a {cls.__name__}")
            bhs = bytes(mv[pos:pos + BHS_LEN])
            ahs = bytes(mv[pos + BHS_LEN:pos + head_end])
        finally:
            mv.release()
        self._pos = pos + total
        return cls._unpack(memoryview(bhs), ahs, data)
