"""The PDUs a target sends (RFC 7143 11.2-11.17): one small class each, which knows only its own BHS fields.

Every one carries StatSN, ExpCmdSN and MaxCmdSN at the same offsets (`_TargetPDU`). The hot ones (Data-In,
SCSI Response, R2T) are never built on the data path: `session` reads their fields with `struct` directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from .bhs import BHS_LEN, PDU, RESERVED_TAG, Op

# Each PDU module keeps its own Struct objects: CPython 3.11 compiles ``NAME.method()`` without its fast
# method call when NAME was imported, which made encoding a quarter slower when these came from `bhs`.
_U16, _U32, _U64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


@dataclass(slots=True)
class _TargetPDU(PDU):
    """Target PDUs all carry StatSN, ExpCmdSN and MaxCmdSN at 24/28/32."""

    from_target: ClassVar[bool] = True
    statsn: int = 0
    expcmdsn: int = 0
    maxcmdsn: int = 0

    def _pack_sn(self, b: bytearray) -> None:
        _U32.pack_into(b, 24, self.statsn)
        _U32.pack_into(b, 28, self.expcmdsn)
        _U32.pack_into(b, 32, self.maxcmdsn)

    @staticmethod
    def _sn(b) -> dict:
        return {"itt": _U32.unpack_from(b, 16)[0], "statsn": _U32.unpack_from(b, 24)[0],
                "expcmdsn": _U32.unpack_from(b, 28)[0], "maxcmdsn": _U32.unpack_from(b, 32)[0]}


@dataclass(slots=True)
class NopIn(_TargetPDU):
    opcode: ClassVar[int] = Op.NOP_IN
    lun: int = 0
    ttt: int = RESERVED_TAG

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.ttt)
        self._pack_sn(b)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, lun=_U64.unpack_from(b, 8)[0], ttt=_U32.unpack_from(b, 20)[0], **cls._sn(b))


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
        _U32.pack_into(b, 20, self.snack_tag)
        self._pack_sn(b)
        _U32.pack_into(b, 36, self.expdatasn)
        _U32.pack_into(b, 40, self.bidi_residual)
        _U32.pack_into(b, 44, self.residual)

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(ahs=ahs, data=data, bidi_overflow=bool(f & 0x10), bidi_underflow=bool(f & 0x08),
                   overflow=bool(f & 0x04), underflow=bool(f & 0x02), response=b[2], status=b[3],
                   snack_tag=_U32.unpack_from(b, 20)[0], expdatasn=_U32.unpack_from(b, 36)[0],
                   bidi_residual=_U32.unpack_from(b, 40)[0], residual=_U32.unpack_from(b, 44)[0], **cls._sn(b))

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
        _U16.pack_into(b, 14, self.tsih)
        self._pack_sn(b)
        b[36] = self.status_class
        b[37] = self.status_detail

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(ahs=ahs, data=data, transit=bool(f & 0x80), cont=bool(f & 0x40), csg=(f >> 2) & 3,
                   nsg=f & 3, version_max=b[2], version_active=b[3], isid=bytes(b[8:14]),
                   tsih=_U16.unpack_from(b, 14)[0], status_class=b[36], status_detail=b[37], **cls._sn(b))


@dataclass(slots=True)
class TextResponse(_TargetPDU):
    opcode: ClassVar[int] = Op.TEXT_RSP
    final: bool = True
    cont: bool = False
    lun: int = 0
    ttt: int = RESERVED_TAG

    def _pack(self, b: bytearray) -> None:
        b[1] = (0x80 if self.final else 0) | (0x40 if self.cont else 0)
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.ttt)
        self._pack_sn(b)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, final=bool(b[1] & 0x80), cont=bool(b[1] & 0x40),
                   lun=_U64.unpack_from(b, 8)[0], ttt=_U32.unpack_from(b, 20)[0], **cls._sn(b))


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
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.ttt)
        self._pack_sn(b)
        _U32.pack_into(b, 36, self.datasn)
        _U32.pack_into(b, 40, self.offset)
        _U32.pack_into(b, 44, self.residual)

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(ahs=ahs, data=data, final=bool(f & 0x80), ack=bool(f & 0x40), overflow=bool(f & 0x04),
                   underflow=bool(f & 0x02), has_status=bool(f & 0x01), status=b[3],
                   lun=_U64.unpack_from(b, 8)[0], ttt=_U32.unpack_from(b, 20)[0],
                   datasn=_U32.unpack_from(b, 36)[0], offset=_U32.unpack_from(b, 40)[0],
                   residual=_U32.unpack_from(b, 44)[0], **cls._sn(b))


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
        _U16.pack_into(b, 40, self.time2wait)
        _U16.pack_into(b, 42, self.time2retain)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, response=b[2], time2wait=_U16.unpack_from(b, 40)[0],
                   time2retain=_U16.unpack_from(b, 42)[0], **cls._sn(b))


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
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.ttt)
        self._pack_sn(b)
        _U32.pack_into(b, 36, self.r2tsn)
        _U32.pack_into(b, 40, self.offset)
        _U32.pack_into(b, 44, self.length)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, lun=_U64.unpack_from(b, 8)[0], ttt=_U32.unpack_from(b, 20)[0],
                   r2tsn=_U32.unpack_from(b, 36)[0], offset=_U32.unpack_from(b, 40)[0],
                   length=_U32.unpack_from(b, 44)[0], **cls._sn(b))


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
        _U64.pack_into(b, 8, self.lun)
        self._pack_sn(b)
        b[36] = self.event
        b[37] = self.vcode
        _U16.pack_into(b, 38, self.param1)
        _U16.pack_into(b, 40, self.param2)
        _U16.pack_into(b, 42, self.param3)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, lun=_U64.unpack_from(b, 8)[0], event=b[36], vcode=b[37],
                   param1=_U16.unpack_from(b, 38)[0], param2=_U16.unpack_from(b, 40)[0],
                   param3=_U16.unpack_from(b, 42)[0], **cls._sn(b))


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
        _U32.pack_into(b, 36, self.datasn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(ahs=ahs, data=data, reason=b[2], datasn=_U32.unpack_from(b, 36)[0], **cls._sn(b))

    @property
    def rejected_header(self) -> bytes:
        """The BHS of the PDU the target rejected (carried as data)."""
        return bytes(self.data[:BHS_LEN])

    def describe(self) -> str:
        return REJECT_REASONS.get(self.reason, f"reason 0x{self.reason:02x}")
