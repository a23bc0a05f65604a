"""The NBD wire form between the kernel and its server (linux/nbd.h): constants, requests, replies. Pure.

The kernel sends 28-byte requests on its end of the socket; the server answers each with a 16-byte reply
(and the data, for a read), in any order: the handle pairs them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backends import BlockBackend

# linux/nbd.h
NBD_SET_SOCK, NBD_SET_BLKSIZE, NBD_DO_IT, NBD_CLEAR_SOCK = 0xAB00, 0xAB01, 0xAB03, 0xAB04
NBD_CLEAR_QUE, NBD_SET_SIZE_BLOCKS, NBD_DISCONNECT, NBD_SET_TIMEOUT, NBD_SET_FLAGS = (
    0xAB05, 0xAB07, 0xAB08, 0xAB09, 0xAB0A)
FLAG_HAS_FLAGS, FLAG_READ_ONLY, FLAG_SEND_FLUSH, FLAG_SEND_FUA, FLAG_SEND_TRIM = 1, 2, 4, 8, 32
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES = 0, 1, 2, 3, 4, 6
CMD_FLAG_FUA = 1
CMD_NAMES = {CMD_READ: "read", CMD_WRITE: "write", CMD_DISC: "disconnect", CMD_FLUSH: "flush",
             CMD_TRIM: "trim", CMD_WRITE_ZEROES: "write-zeroes"}
REQUEST_MAGIC, REPLY_MAGIC = 0x25609513, 0x67446698
REQUEST = struct.Struct(">IHHQQI")     # magic, command flags, type, handle, offset, length (28 bytes)
REPLY = struct.Struct(">IIQ")          # magic, error, handle (16 bytes)
MAX_REQUEST = 32 << 20                 # the kernel's nbd max_hw_sectors (65536 * 512)


class NbdError(Exception):
    """The bridge cannot attach or the kernel spoke nonsense."""


@dataclass(frozen=True)
class Request:
    cmd: int
    flags: int
    handle: int
    offset: int
    length: int

    @property
    def fua(self) -> bool:
        return bool(self.flags & CMD_FLAG_FUA)


def parse_request(data: bytes) -> Request:
    """Decode one 28-byte request header; refuse a bad magic or an oversized length."""
    magic, flags, cmd, handle, offset, length = REQUEST.unpack(data)
    if magic != REQUEST_MAGIC:
        raise NbdError(f"bad NBD request magic 0x{magic:08x}")
    if cmd in (CMD_READ, CMD_WRITE) and length > MAX_REQUEST:
        raise NbdError(f"NBD {CMD_NAMES[cmd]} of {length} bytes is larger than {MAX_REQUEST}")
    return Request(cmd, flags, handle, offset, length)


def encode_request(req: Request) -> bytes:
    return REQUEST.pack(REQUEST_MAGIC, req.flags, req.cmd, req.handle, req.offset, req.length)


def encode_reply(handle: int, error: int = 0) -> bytes:
    return REPLY.pack(REPLY_MAGIC, error, handle)


def transmission_flags(backend: BlockBackend) -> int:
    flags = FLAG_HAS_FLAGS
    flags |= FLAG_READ_ONLY if backend.read_only else 0
    flags |= FLAG_SEND_FLUSH if backend.can_flush else 0
    flags |= FLAG_SEND_FUA if backend.can_fua else 0
    flags |= FLAG_SEND_TRIM if backend.can_trim else 0
    return flags
