"""The task record and the serial-number arithmetic the session core builds on.

`Task` is one outstanding request (a SCSI command, or a NOP/TMF/Text/Logout awaiting its response), with
``__slots__`` because one is created per command on the data path. Sequence numbers compare with
serial-number arithmetic (RFC 1982, 32 bits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..errors import ISCSIError
    from . import pdu
    from .connection import Connection

MASK = 0xFFFFFFFF


def sn_lt(a: int, b: int) -> bool:
    """a < b in 32-bit serial-number arithmetic (RFC 1982)."""
    return a != b and ((b - a) & MASK) < 0x80000000


def sn_le(a: int, b: int) -> bool:
    return a == b or sn_lt(a, b)


class Task:
    """One outstanding request: a SCSI command, or a NOP/TMF/Text/Logout waiting for its response."""

    __slots__ = ("buf", "cdb", "cmdsn", "conn", "data_out", "edtl", "error", "expdatasn", "got", "immediate",
                 "itt", "kind", "lun", "overflow", "pdu", "read", "residual", "response", "result",
                 "retries", "sense", "sent_at", "status", "underflow", "waiter", "write")

    def __init__(self, itt: int, kind: str) -> None:
        self.itt = itt
        self.kind = kind
        self.lun = 0
        self.cdb = b""
        self.edtl = 0
        self.read = self.write = False
        self.data_out: memoryview | None = None
        self.buf: memoryview | None = None
        self.got = self.expdatasn = 0
        self.cmdsn = 0
        self.conn: Connection | None = None
        self.status = -1
        self.sense = b""
        self.residual = 0
        self.underflow = self.overflow = False
        self.response = 0
        self.result: pdu.PDU | None = None  # the response PDU of a non-SCSI request
        self.error: ISCSIError | None = None
        self.waiter = None  # opaque slot for the I/O layer (an asyncio future)
        self.retries = 0
        self.sent_at = 0.0  # when the I/O layer last put it on the wire (its clock): command timeouts
        self.immediate = False
        self.pdu: pdu.PDU | None = None  # a non-SCSI request, kept to re-encode on the chosen connection

    @property
    def data_len(self) -> int:
        """Bytes of read data actually delivered."""
        if self.underflow:
            return max(0, self.edtl - self.residual)
        return self.got
