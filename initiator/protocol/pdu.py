"""iSCSI PDUs (RFC 7143 section 11): every opcode, both directions, sans-IO. Import this module, not its parts.

`bhs` holds what every PDU shares (opcodes, the base class, digests, padding, `encode`); `pdu_initiator` and
`pdu_target` hold one small class per opcode. This module gathers them under one name (``pdu.NopOut``,
``pdu.encode``...), keeps the table of all 18 opcodes and builds PDU objects from framed bytes. Framing a
byte stream into PDUs is `framer.Framer`'s job (the only framer; `framer.PduReader` gives PDU objects).
"""

from __future__ import annotations

from ..errors import TargetProtocolError
from .bhs import (
    ABSOLUTE_MAX_DATA,
    BHS_LEN,
    DIGEST_LEN,
    LOGIN_MAX_DATA,
    PDU,
    RESERVED_TAG,
    Op,
    crc32c,
    encode,
    encode_bytes,
    pad_len,
    u24,
)
from .pdu_initiator import (
    TMF,
    DataOut,
    LoginRequest,
    LogoutReason,
    LogoutRequest,
    NopOut,
    ScsiCommand,
    SnackRequest,
    TaskMgmtRequest,
    TextRequest,
)
from .pdu_target import (
    R2T,
    REJECT_REASONS,
    AsyncEvent,
    AsyncMessage,
    DataIn,
    LoginResponse,
    LogoutResponse,
    NopIn,
    Reject,
    ScsiResponse,
    TaskMgmtResponse,
    TextResponse,
)

__all__ = [
    "ABSOLUTE_MAX_DATA", "BHS_LEN", "DIGEST_LEN", "LOGIN_MAX_DATA", "PDU", "PDU_CLASSES", "R2T", "REJECT_REASONS",
    "RESERVED_TAG", "TMF", "AsyncEvent", "AsyncMessage", "DataIn", "DataOut", "LoginRequest", "LoginResponse",
    "LogoutReason", "LogoutRequest", "LogoutResponse", "NopIn", "NopOut", "Op", "Reject", "ScsiCommand",
    "ScsiResponse", "SnackRequest", "TaskMgmtRequest", "TaskMgmtResponse", "TextRequest", "TextResponse",
    "classes_from", "crc32c", "decode_pdu", "encode", "encode_bytes", "pad_len", "peek_header",
]

PDU_CLASSES: dict[int, type[PDU]] = {
    cls.opcode: cls
    for cls in (NopOut, ScsiCommand, TaskMgmtRequest, LoginRequest, TextRequest, DataOut, LogoutRequest,
                SnackRequest, NopIn, ScsiResponse, TaskMgmtResponse, LoginResponse, TextResponse, DataIn,
                LogoutResponse, R2T, AsyncMessage, Reject)
}


def classes_from(from_target: bool) -> dict[int, type[PDU]]:
    """The opcodes one side may send: a target's (``from_target``) or an initiator's."""
    return {op: cls for op, cls in PDU_CLASSES.items() if cls.from_target == from_target}


def peek_header(bhs: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(opcode, AHS bytes, DataSegmentLength) of a 48-byte BHS, without building an object."""
    return bhs[0] & 0x3F, bhs[4] * 4, u24(bhs, 5)


def decode_pdu(bhs: bytes | bytearray | memoryview, ahs: bytes = b"",
               data: bytes | bytearray | memoryview = b"", from_target: bool = True) -> PDU:
    """Build the PDU object for an already-framed BHS/AHS/data (digests already checked)."""
    opcode = bhs[0] & 0x3F
    cls = PDU_CLASSES.get(opcode)
    if cls is None or cls.from_target != from_target:
        side = "target" if from_target else "initiator"
        raise TargetProtocolError(f"unknown or misdirected opcode 0x{opcode:02x} from the {side}")
    return cls._unpack(memoryview(bytes(bhs)), ahs, data)
