"""NBD's generic-netlink interface (family "nbd"): connect, reconfigure, disconnect. Raw sockets, no library.

Why: with the ioctl interface a device dies with the process that serves it. Over netlink the kernel can
keep a device whose server went away for ``dead_conn_timeout`` seconds, queueing its I/O, and a new
process hands it a fresh socket with NBD_CMD_RECONFIGURE: a daemon restart without losing the disk.
Devices are found again by the backend identifier given at connect (/sys/block/nbdN/backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
from typing import Self

from .backends import BlockBackend
from .nbd_ioctl import NbdDevice
from .nbd_server import WINDOW
from .nbd_sysfs import find_by_identifier, is_connected, sectors
from .nbd_wire import NbdError, transmission_flags

log = logging.getLogger("uiscsid.nbd")

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


def reconfigure(index: int, sock_fd: int, identifier: str) -> None:
    """Give /dev/nbdN (whose server went away) a new socket; the kernel checks the identifier matches."""
    with Genl() as g:
        g.call(g.family("nbd"), CMD_RECONFIGURE,
               u32(ATTR_INDEX, index) + attr(ATTR_BACKEND_IDENTIFIER, identifier.encode() + b"\0")
               + nested(ATTR_SOCKETS, nested(SOCK_ITEM, u32(SOCK_FD, sock_fd))))


def disconnect(index: int) -> None:
    with Genl() as g:
        g.call(g.family("nbd"), CMD_DISCONNECT, u32(ATTR_INDEX, index))


class KeptDevice(NbdDevice):
    """/dev/nbdN attached over netlink: it outlives this process for ``dead_conn_timeout`` seconds, and
    `attach_kept` in a new process takes it over (same identifier) instead of making a new disk.

    If the kernel drops our socket while we live (a request exceeded ``timeout``: it requeues it), we
    hand it a fresh socket at once; the requeued requests come again on it.
    """

    identifier = ""
    adopted = False
    _closing = False

    @classmethod
    async def attach_kept(cls, backend: BlockBackend, identifier: str, dead_conn_timeout: int,
                          timeout: int = 30, queue_depth: int = WINDOW) -> KeptDevice:
        loop = asyncio.get_running_loop()
        existing = find_by_identifier(identifier)
        kernel_end, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if existing is not None:
                await loop.run_in_executor(None, reconfigure, existing, kernel_end.fileno(), identifier)
                index = existing
            else:
                index = await loop.run_in_executor(
                    None, connect, kernel_end.fileno(), backend.size, backend.block_size,
                    transmission_flags(backend), identifier, dead_conn_timeout, timeout)
        except NetlinkError as e:
            ours.close()
            what = f"take over /dev/nbd{existing}" if existing is not None else "attach"
            raise NbdError(f"cannot {what} for {identifier!r} over netlink: {e}") from None
        finally:
            kernel_end.close()          # the kernel holds its own reference now
        dev = cls(index, -1, backend, queue_depth)
        dev.identifier, dev.adopted = identifier, existing is not None
        await dev._serve_socket(ours)
        for _ in range(500):
            if is_connected(index) and sectors(index) == backend.size // 512:
                break
            await asyncio.sleep(0.01)
        log.info("%s %s for %s", "took over" if dev.adopted else "attached", dev.path, identifier)
        dev.tune_queue()
        return dev

    async def _serve_socket(self, ours: socket.socket) -> None:
        self._ours = ours
        self._serve_task = asyncio.create_task(self.serve_socket(ours), name=f"nbd{self.index}-serve")

    def _served_out(self) -> None:
        if self.got_disc or self._closing:
            if not self._done.done():
                self._done.set_result("disconnected")
            return
        asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """The kernel shut our socket (a request timed out): give it a new one; requeued I/O follows."""
        kernel_end, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await asyncio.get_running_loop().run_in_executor(None, reconfigure, self.index, kernel_end.fileno(),
                                                             self.identifier)
        except NetlinkError as e:
            ours.close()
            log.error("%s: lost its socket and cannot get a new one: %s", self.path, e)
            if not self._done.done():
                self._done.set_result(f"lost: {e}")
            return
        finally:
            kernel_end.close()
        log.warning("%s: the kernel dropped our socket; serving on a new one", self.path)
        await self._serve_socket(ours)

    async def park(self) -> None:
        """Stop serving without a disconnect: the kernel holds the device for the next uiscsid."""
        self._closing = True
        if self._serve_task is not None:
            self._serve_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_task
        if self._ours is not None:
            self._ours.close()

    async def disconnect(self, force: bool = False, timeout: float = 5.0) -> None:
        if self._done.done():
            return
        busy = self.users()
        if busy and not force:
            raise NbdError(f"{self.path} is in use ({', '.join(busy)}); unmount it first or force")
        self._closing = True
        try:
            await asyncio.get_running_loop().run_in_executor(None, disconnect, self.index)
        except NetlinkError as e:
            log.warning("%s: netlink disconnect: %s", self.path, e)
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except TimeoutError:
            if self._ours is not None:
                with contextlib.suppress(OSError):
                    self._ours.shutdown(socket.SHUT_RDWR)
            if not self._done.done():
                self._done.set_result("abandoned")
