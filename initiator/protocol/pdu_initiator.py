"""The PDUs an initiator sends (RFC 7143 11.1-11.16): one small class each, which knows only its own BHS fields.

Sequence numbers, windows and state live in `session` and `connection`, never here. ``_unpack`` exists for
the other side of the wire (a target, and our tests decoding what we sent).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from ..errors import LocalProtocolError
from .bhs import PDU, RESERVED_TAG, Op

# Each PDU module keeps its own Struct objects: CPython 3.11 compiles ``NAME.method()`` without its fast
# method call when NAME was imported, which made encoding a quarter slower when these came from `bhs`.
_U16, _U32, _U64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


@dataclass(slots=True)
class NopOut(PDU):
    opcode: ClassVar[int] = Op.NOP_OUT
    lun: int = 0
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    expstatsn: int = 0

    def _pack(self, b: bytearray) -> None:
        b[1] = 0x80
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.ttt)
        _U32.pack_into(b, 24, self.cmdsn)
        _U32.pack_into(b, 28, self.expstatsn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_U32.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   lun=_U64.unpack_from(b, 8)[0], ttt=_U32.unpack_from(b, 20)[0],
                   cmdsn=_U32.unpack_from(b, 24)[0], expstatsn=_U32.unpack_from(b, 28)[0])


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
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.edtl)
        _U32.pack_into(b, 24, self.cmdsn)
        _U32.pack_into(b, 28, self.expstatsn)
        b[32:32 + len(cdb)] = cdb

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(itt=_U32.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   final=bool(f & 0x80), read=bool(f & 0x40), write=bool(f & 0x20), attr=f & 7,
                   lun=_U64.unpack_from(b, 8)[0], edtl=_U32.unpack_from(b, 20)[0],
                   cmdsn=_U32.unpack_from(b, 24)[0], expstatsn=_U32.unpack_from(b, 28)[0],
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
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.rtt)
        _U32.pack_into(b, 24, self.cmdsn)
        _U32.pack_into(b, 28, self.expstatsn)
        _U32.pack_into(b, 32, self.refcmdsn)
        _U32.pack_into(b, 36, self.expdatasn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_U32.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   function=b[1] & 0x7F, lun=_U64.unpack_from(b, 8)[0], rtt=_U32.unpack_from(b, 20)[0],
                   cmdsn=_U32.unpack_from(b, 24)[0], expstatsn=_U32.unpack_from(b, 28)[0],
                   refcmdsn=_U32.unpack_from(b, 32)[0], expdatasn=_U32.unpack_from(b, 36)[0])


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
        _U16.pack_into(b, 14, self.tsih)
        _U16.pack_into(b, 20, self.cid)
        _U32.pack_into(b, 24, self.cmdsn)
        _U32.pack_into(b, 28, self.expstatsn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        f = b[1]
        return cls(itt=_U32.unpack_from(b, 16)[0], immediate=True, ahs=ahs, data=data,
                   transit=bool(f & 0x80), cont=bool(f & 0x40), csg=(f >> 2) & 3, nsg=f & 3,
                   version_max=b[2], version_min=b[3], isid=bytes(b[8:14]), tsih=_U16.unpack_from(b, 14)[0],
                   cid=_U16.unpack_from(b, 20)[0], cmdsn=_U32.unpack_from(b, 24)[0],
                   expstatsn=_U32.unpack_from(b, 28)[0])


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
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.ttt)
        _U32.pack_into(b, 24, self.cmdsn)
        _U32.pack_into(b, 28, self.expstatsn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_U32.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   final=bool(b[1] & 0x80), cont=bool(b[1] & 0x40), lun=_U64.unpack_from(b, 8)[0],
                   ttt=_U32.unpack_from(b, 20)[0], cmdsn=_U32.unpack_from(b, 24)[0],
                   expstatsn=_U32.unpack_from(b, 28)[0])


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
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.ttt)
        _U32.pack_into(b, 28, self.expstatsn)
        _U32.pack_into(b, 36, self.datasn)
        _U32.pack_into(b, 40, self.offset)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_U32.unpack_from(b, 16)[0], ahs=ahs, data=data, final=bool(b[1] & 0x80),
                   lun=_U64.unpack_from(b, 8)[0], ttt=_U32.unpack_from(b, 20)[0],
                   expstatsn=_U32.unpack_from(b, 28)[0], datasn=_U32.unpack_from(b, 36)[0],
                   offset=_U32.unpack_from(b, 40)[0])


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
        _U16.pack_into(b, 20, self.cid)
        _U32.pack_into(b, 24, self.cmdsn)
        _U32.pack_into(b, 28, self.expstatsn)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_U32.unpack_from(b, 16)[0], immediate=bool(b[0] & 0x40), ahs=ahs, data=data,
                   reason=b[1] & 0x7F, cid=_U16.unpack_from(b, 20)[0], cmdsn=_U32.unpack_from(b, 24)[0],
                   expstatsn=_U32.unpack_from(b, 28)[0])


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
        _U64.pack_into(b, 8, self.lun)
        _U32.pack_into(b, 20, self.ttt)
        _U32.pack_into(b, 28, self.expstatsn)
        _U32.pack_into(b, 40, self.begrun)
        _U32.pack_into(b, 44, self.runlength)

    @classmethod
    def _unpack(cls, b, ahs, data):
        return cls(itt=_U32.unpack_from(b, 16)[0], ahs=ahs, data=data, type=b[1] & 0x0F,
                   lun=_U64.unpack_from(b, 8)[0], ttt=_U32.unpack_from(b, 20)[0],
                   expstatsn=_U32.unpack_from(b, 28)[0], begrun=_U32.unpack_from(b, 40)[0],
                   runlength=_U32.unpack_from(b, 44)[0])
