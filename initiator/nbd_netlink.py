"""NBD's generic-netlink interface (family "nbd"): connect, reconfigure, disconnect. Raw sockets, no library.

Why: with the ioctl interface a device dies with the process that serves it. Over netlink the kernel can
keep a device whose server went away for ``dead_conn_timeout`` seconds, queueing its I/O, and a new
process hands it a fresh socket with NBD_CMD_RECONFIGURE: a daemon restart without losing the disk.
Devices are found again by the backend identifier given at connect (/sys/block/nbdN/backend).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from pathlib import Path
from typing import Self

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 1 << 15
# linux/nbd-netlink.h
CMD_CONNECT, CMD_DISCONNECT, CMD_RECONFIGURE = 1, 2, 3
ATTR_INDEX, ATTR_SIZE_BYTES, ATTR_BLOCK_SIZE_BYTES, ATTR_TIMEOUT, ATTR_SERVER_FLAGS = 1, 2, 3, 4, 5
ATTR_CLIENT_FLAGS, ATTR_SOCKETS, ATTR_DEAD_CONN_TIMEOUT, ATTR_BACKEND_IDENTIFIER = 6, 7, 8, 10
SOCK_ITEM, SOCK_FD = 1, 1
CFLAG_DESTROY_ON_DISCONNECT = 1

_NLMSGHDR = struct.Struct("=IHHII")
_GENLHDR = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")


class NetlinkError(Exception):
    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) & 3)


def u32(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=I", v))


def u64(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=Q", v))


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """Top-level attributes by type (nested flag stripped); a malformed length ends the walk."""
    out: dict[int, bytes] = {}
    off = 0
    while off + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, off)
        if length < _NLATTR.size or off + length > len(data):
            break
        out[kind & ~NLA_F_NESTED] = data[off + _NLATTR.size:off + length]
        off += (length + 3) & ~3
    return out


def message(family: int, cmd: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST | NLM_F_ACK,
            version: int = 1) -> bytes:
    body = _GENLHDR.pack(cmd, version, 0) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), family, flags, seq, 0) + body


class Genl:
    """One generic netlink socket; `call` sends a request and returns the attributes of its answer."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.sock.settimeout(10)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def family(self, name: str) -> int:
        try:
            answer = self.call(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"))
        except NetlinkError as e:
            if e.errno == errno.ENOENT:
                raise NetlinkError(e.errno, f"no generic netlink family {name!r} (is the module loaded?)") from None
            raise
        return struct.unpack("=H", answer[CTRL_ATTR_FAMILY_ID][:2])[0]

    def call(self, family: int, cmd: int, attrs: bytes) -> dict[int, bytes]:
        self.seq += 1
        seq = self.seq
        self.sock.send(message(family, cmd, attrs, seq))
        result: dict[int, bytes] = {}
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, kind, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    raise NetlinkError(errno.EPROTO, "malformed netlink answer")
                body = data[off + _NLMSGHDR.size:off + length]
                off += (length + 3) & ~3
                if mseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", body)[0]
                    if err:
                        raise NetlinkError(err, os.strerror(err))
                    return result               # the ACK ends the exchange
                if kind == NLMSG_DONE:
                    return result
                result.update(parse_attrs(body[_GENLHDR.size:]))


def find_by_identifier(identifier: str) -> int | None:
    """The /dev/nbdN the kernel keeps for ``identifier`` (its backend file), if any."""
    for p in Path("/sys/block").glob("nbd*"):
        with contextlib.suppress(OSError, ValueError):
            if (p / "backend").read_text().strip() == identifier:
                return int(p.name[3:])
    return None


def connect(sock_fd: int, size: int, block_size: int, server_flags: int, identifier: str,
            dead_conn_timeout: int, timeout: int = 0) -> int:
    """NBD_CMD_CONNECT on any free device; returns its index."""
    attrs = (u64(ATTR_SIZE_BYTES, size) + u64(ATTR_BLOCK_SIZE_BYTES, block_size)
             + u64(ATTR_SERVER_FLAGS, server_flags) + u64(ATTR_CLIENT_FLAGS, 0)
             + u64(ATTR_DEAD_CONN_TIMEOUT, dead_conn_timeout)
             + attr(ATTR_BACKEND_IDENTIFIER, identifier.encode() + b"\0")
             + nested(ATTR_SOCKETS, nested(SOCK_ITEM, u32(SOCK_FD, sock_fd))))
    if timeout:
        attrs += u64(ATTR_TIMEOUT, timeout)
    with Genl() as g:
        answer = g.call(g.family("nbd"), CMD_CONNECT, attrs)
    if ATTR_INDEX not in answer:
        raise NetlinkError(errno.EPROTO, "NBD_CMD_CONNECT answered without a device index")
    return struct.unpack("=I", answer[ATTR_INDEX][:4])[0]


def reconfigure(index: int, sock_fd: int) -> None:
    """Give /dev/nbdN (whose server went away) a new socket."""
    with Genl() as g:
        g.call(g.family("nbd"), CMD_RECONFIGURE,
               u32(ATTR_INDEX, index) + nested(ATTR_SOCKETS, nested(SOCK_ITEM, u32(SOCK_FD, sock_fd))))


def disconnect(index: int) -> None:
    with Genl() as g:
        g.call(g.family("nbd"), CMD_DISCONNECT, u32(ATTR_INDEX, index))
