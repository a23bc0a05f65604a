"""Block backends: what the NBD bridges serve. A local file (for tests) and an iSCSI LUN.

The bridges (nbd_ioctl, nbd_netlink) speak only this interface: byte offsets and lengths that are multiples
of ``block_size``, plus flush/FUA/trim. `IscsiLun` maps them onto SCSI: READ(16)/WRITE(16) (FUA bit for FUA
writes), SYNCHRONIZE CACHE(16) for flush, UNMAP for trim when the LUN advertises it (LBPME + VPD 0xB2 LBPU).
A failed command becomes `BlockError` with the errno the kernel is told. No retry here: the session core
sends a command answered with UNIT ATTENTION again (the one retry), and waits through recovery.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import struct
from collections.abc import Callable
from typing import Protocol

from ..errors import ISCSIError
from ..scsi import cdb, vpd
from ..scsi import commands as scsi
from ..scsi.sense import DATA_PROTECT, GOOD, ILLEGAL_REQUEST


class BlockError(Exception):
    """An I/O the backend could not do; ``errno`` goes back to the kernel."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


class BlockBackend(Protocol):
    """What the NBD bridges serve. Offsets and lengths are in bytes and multiples of ``block_size``."""

    block_size: int
    size: int
    read_only: bool
    can_flush: bool
    can_fua: bool
    can_trim: bool

    async def read(self, offset: int, length: int) -> bytes | memoryview: ...
    async def write(self, offset: int, data: bytes | memoryview, fua: bool = False) -> None: ...
    async def flush(self) -> None: ...
    async def trim(self, offset: int, length: int) -> None: ...
    async def close(self) -> None: ...


def _check(backend: BlockBackend, offset: int, length: int) -> None:
    if offset % backend.block_size or length % backend.block_size:
        raise BlockError(errno.EINVAL, f"unaligned I/O at {offset}+{length} (block size {backend.block_size})")
    if offset < 0 or offset + length > backend.size:
        raise BlockError(errno.ENOSPC, f"I/O at {offset}+{length} is past the end ({backend.size} bytes)")


class FileBackend:
    """A local file or block device: the reference backend for the bridge's own tests."""

    can_flush = True
    can_fua = True
    can_trim = False

    def __init__(self, path: str, block_size: int = 512, read_only: bool = False) -> None:
        self.path = path
        self.block_size = block_size
        self.read_only = read_only
        self.fd = os.open(path, os.O_RDONLY if read_only else os.O_RDWR)
        self.size = os.lseek(self.fd, 0, os.SEEK_END) // block_size * block_size

    async def read(self, offset: int, length: int) -> bytes:
        _check(self, offset, length)
        return await asyncio.to_thread(os.pread, self.fd, length, offset)

    async def write(self, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        _check(self, offset, len(data))
        if self.read_only:
            raise BlockError(errno.EPERM, "read-only backend")

        def work() -> None:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
            if fua:
                os.fdatasync(self.fd)

        await asyncio.to_thread(work)

    async def flush(self) -> None:
        await asyncio.to_thread(os.fsync, self.fd)

    async def trim(self, offset: int, length: int) -> None:
        raise BlockError(errno.EOPNOTSUPP, "trim is not supported on a file backend")

    async def close(self) -> None:
        os.close(self.fd)


def errno_for(exc: BaseException) -> int:
    """The errno the kernel gets for a failed SCSI/iSCSI command."""
    if isinstance(exc, scsi.SCSIError):
        if exc.key == DATA_PROTECT and exc.sense and (exc.sense.asc, exc.sense.ascq) == (0x27, 0x07):
            return errno.ENOSPC     # SPACE ALLOCATION FAILED WRITE PROTECT: a thin pool ran out
        if exc.key == DATA_PROTECT:
            return errno.EPERM
        if exc.key == ILLEGAL_REQUEST:
            return errno.EINVAL
    return errno.EIO


_READ16 = struct.Struct(">BBQIBB").pack    # READ(16)/WRITE(16): opcode, flags (FUA), LBA, blocks, group, control


def _failed(res, what: str) -> None:
    """A data command ended with a status other than GOOD: the errno the kernel gets, the sense decoded."""
    e = scsi.SCSIError(res.status, res.sense, what)
    raise BlockError(errno_for(e), str(e)) from e


def _outcome(t, what: str) -> tuple[int, str]:
    """The errno and message for a finished command (a `Session.submit` task) that did not end GOOD."""
    if t.error is not None:
        return errno.EIO, f"{what}: {t.error}"
    if t.response:
        return errno.EIO, f"{what}: the target failed the command (iSCSI response 0x{t.response:02x})"
    e = scsi.SCSIError(t.status, t.sense, what)
    return errno_for(e), str(e)


def _read_done(lba: int, length: int, on_done: Callable[[int, str], None], t) -> None:
    if t.error is not None or t.response or t.status != GOOD:
        on_done(*_outcome(t, f"READ(16) at LBA {lba}"))
    elif t.data_len != length:
        on_done(errno.EIO, f"READ(16) at LBA {lba}: got {t.data_len} of {length} bytes")
    else:
        on_done(0, "")


def _write_done(lba: int, on_done: Callable[[int, str], None], t) -> None:
    if t.error is not None or t.response or t.status != GOOD:
        on_done(*_outcome(t, f"WRITE(16) at LBA {lba}"))
    else:
        on_done(0, "")


class IscsiLun:
    """One LUN of a logged-in `io.session.Session`, as a block backend. Build it with `open`."""

    def __init__(self, session: scsi.SessionLike, lun: int, capacity: scsi.Capacity,
                 unmap: scsi.UnmapSupport | None, timeout: float | None = None) -> None:
        self.session = session
        self.lun = lun
        self.block_size = capacity.block_size
        self.size = capacity.size
        self.blocks = capacity.blocks
        self.unmap_support = unmap
        self.timeout = timeout
        self.read_only = False
        self.can_flush = True
        self.can_fua = True
        self.can_trim = unmap is not None
        self.max_transfer_blocks = 0      # Block Limits VPD (0: not stated), for the NBD queue's request size
        self.optimal_transfer_blocks = 0

    @classmethod
    async def open(cls, session: scsi.SessionLike, lun: int, timeout: float | None = None) -> IscsiLun:
        """Ask the LUN its block size and size (READ CAPACITY), whether it supports UNMAP, and how much one
        command may transfer (Block Limits VPD, when the LUN has that page)."""
        cap = await scsi.read_capacity(session, lun, timeout)
        try:
            unmap = await scsi.unmap_support(session, lun, timeout)
        except scsi.SCSIError:
            unmap = None
        lun_ = cls(session, lun, cap, unmap, timeout)
        try:
            pages = vpd.parse_supported_pages(await scsi.vpd_page(session, lun, vpd.SUPPORTED_PAGES, timeout))
            if vpd.BLOCK_LIMITS in pages:
                limits = vpd.parse_block_limits(await scsi.vpd_page(session, lun, vpd.BLOCK_LIMITS, timeout))
                lun_.max_transfer_blocks = limits.max_transfer_length
                lun_.optimal_transfer_blocks = limits.optimal_transfer_length
        except ISCSIError:
            pass                         # no (or a malformed) VPD page: the kernel's own request size stays
        return lun_

    def start_read(self, offset: int, buf: memoryview, on_done: Callable[[int, str], None]) -> None:
        """READ(16) of ``len(buf)`` bytes at ``offset`` straight into ``buf``, without a coroutine (the NBD
        server's data path, through `Session.submit`): ``on_done(errno, message)`` runs once, in the loop,
        errno 0 when every byte arrived. Raises BlockError when the command cannot even start."""
        bs, length = self.block_size, len(buf)
        if offset % bs or length % bs or offset < 0 or offset + length > self.size:
            _check(self, offset, length)
        lba = offset // bs
        try:
            self.session.submit(self.lun, _READ16(0x88, 0, lba, length // bs, 0, 0),
                                functools.partial(_read_done, lba, length, on_done), read_into=buf)
        except ISCSIError as e:
            raise BlockError(errno.EIO, f"READ(16) at LBA {lba}: {e}") from e

    def start_write(self, offset: int, data: bytes | memoryview, fua: bool,
                    on_done: Callable[[int, str], None]) -> None:
        """WRITE(16) of ``data`` at ``offset`` (FUA bit when asked), as `start_read` is for reads."""
        bs, length = self.block_size, len(data)
        if offset % bs or length % bs or offset < 0 or offset + length > self.size:
            _check(self, offset, length)
        lba = offset // bs
        try:
            self.session.submit(self.lun, _READ16(0x8A, 0x08 if fua else 0, lba, length // bs, 0, 0),
                                functools.partial(_write_done, lba, on_done), data_out=data)
        except ISCSIError as e:
            raise BlockError(errno.EIO, f"WRITE(16) at LBA {lba}: {e}") from e

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        buf = bytearray(length)
        await self.read_into(offset, memoryview(buf))
        return buf

    async def read_into(self, offset: int, buf: memoryview) -> None:
        """READ(16) of ``len(buf)`` bytes at ``offset``, the Data-In payload landing straight in ``buf``.

        The data path: one coroutine between the NBD server and the session, the CDB built inline, the
        message of a failure only when there is one."""
        bs, length = self.block_size, len(buf)
        if offset % bs or length % bs or offset < 0 or offset + length > self.size:
            _check(self, offset, length)
        lba = offset // bs
        try:
            res = await self.session.execute(self.lun, _READ16(0x88, 0, lba, length // bs, 0, 0), read_into=buf,
                                             timeout=self.timeout)
        except ISCSIError as e:          # SessionFailed after the replacement timeout, CommandTimeout...
            raise BlockError(errno.EIO, f"READ(16) at LBA {lba}: {e}") from e
        if res.status != GOOD:
            _failed(res, f"READ(16) at LBA {lba}")
        if len(res.data) != length:
            raise BlockError(errno.EIO, f"READ(16) at LBA {lba}: got {len(res.data)} of {length} bytes")

    async def write(self, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        bs, length = self.block_size, len(data)
        if offset % bs or length % bs or offset < 0 or offset + length > self.size:
            _check(self, offset, length)
        lba = offset // bs
        try:
            res = await self.session.execute(self.lun, _READ16(0x8A, 0x08 if fua else 0, lba, length // bs, 0, 0),
                                             data_out=data, timeout=self.timeout)
        except ISCSIError as e:
            raise BlockError(errno.EIO, f"WRITE(16) at LBA {lba}: {e}") from e
        if res.status != GOOD:
            _failed(res, f"WRITE(16) at LBA {lba}")

    async def flush(self) -> None:
        await self._run(cdb.synchronize_cache16(), "SYNCHRONIZE CACHE(16)")

    async def trim(self, offset: int, length: int) -> None:
        _check(self, offset, length)
        if self.unmap_support is None:
            raise BlockError(errno.EOPNOTSUPP, "the LUN does not support UNMAP")
        extents = [(offset // self.block_size, length // self.block_size)]
        for chunk in scsi.split_unmap(extents, self.unmap_support):
            params = cdb.unmap_parameters(chunk)
            await self._run(cdb.unmap(len(params)), "UNMAP", data_out=params)

    async def close(self) -> None:
        """Nothing to release: the session belongs to the daemon."""

    async def _run(self, command: bytes, what: str, *, read_len: int = 0,
                   data_out: bytes | memoryview | None = None):
        try:
            return await scsi.run(self.session, self.lun, command, what, read_len=read_len, data_out=data_out,
                                  timeout=self.timeout)
        except scsi.SCSIError as e:
            raise BlockError(errno_for(e), str(e)) from e
        except ISCSIError as e:          # SessionFailed after the replacement timeout, CommandTimeout...
            raise BlockError(errno.EIO, f"{what}: {e}") from e

