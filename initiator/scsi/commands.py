"""SCSI commands for a block device, run through an iSCSI session, and `SCSIError`. No I/O of their own.

Each helper runs one command through anything with the `io.session.Session.execute` signature
(`SessionLike`, so this layer imports no session) and raises `SCSIError` on a status other than GOOD, so
callers read like ``cap = await commands.read_capacity(session, lun)``. CDBs come from `cdb`, the replies
are decoded by `parsers` and `vpd`. A UNIT ATTENTION never reaches these helpers unless it repeats: the
session core sends such a command again (the one retry, see `protocol.session`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import ISCSIError, LocalProtocolError, TargetProtocolError
from . import cdb, vpd
from .parsers import (
    Capacity,
    Inquiry,
    parse_inquiry,
    parse_read_capacity10,
    parse_read_capacity16,
    parse_report_luns,
)
from .sense import GOOD, ILLEGAL_REQUEST, Sense, describe_status, parse_sense
from .vpd import BlockLimits, parse_block_limits, parse_provisioning, parse_supported_pages


class SCSIError(ISCSIError):
    """A command finished with a status other than GOOD; the message carries the decoded sense."""

    def __init__(self, status: int, sense: bytes | bytearray | memoryview = b"", what: str = "") -> None:
        self.status = status
        self.sense_data = bytes(sense)
        self.sense: Sense | None = parse_sense(self.sense_data) if self.sense_data else None
        prefix = f"{what}: " if what else ""
        super().__init__(prefix + describe_status(status, self.sense_data))

    @property
    def key(self) -> int | None:
        return self.sense.key if self.sense else None


# ------------------------------------------------------------------------------ async conveniences


class _Result(Protocol):
    status: int
    sense: bytes
    data: bytes | memoryview
    residual: int
    underflow: bool


class SessionLike(Protocol):
    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                      read_len: int = 0, read_into: memoryview | None = None,
                      timeout: float | None = None) -> _Result: ...


async def run(session: SessionLike, lun: int, cdb: bytes, what: str, *, read_len: int = 0,
              data_out: bytes | memoryview | None = None, read_into: memoryview | None = None,
              timeout: float | None = None) -> _Result:
    """Execute one command; raise `SCSIError` (with ``what`` in its message) unless the status is GOOD."""
    res = await session.execute(lun, cdb, data_out=data_out, read_len=read_len, read_into=read_into,
                                timeout=timeout)
    if res.status != GOOD:
        raise SCSIError(res.status, res.sense, what)
    return res


async def test_unit_ready(session: SessionLike, lun: int, timeout: float | None = None) -> None:
    await run(session, lun, cdb.test_unit_ready(), "TEST UNIT READY", timeout=timeout)


async def inquiry(session: SessionLike, lun: int, timeout: float | None = None) -> Inquiry:
    res = await run(session, lun, cdb.inquiry(96), "INQUIRY", read_len=96, timeout=timeout)
    return parse_inquiry(res.data)


async def vpd_page(session: SessionLike, lun: int, page: int, timeout: float | None = None) -> bytes:
    """Raw VPD page, re-asked with the full length when the first answer was clipped."""
    res = await run(session, lun, cdb.vpd(page, 255), f"INQUIRY VPD 0x{page:02x}", read_len=255,
                    timeout=timeout)
    data = bytes(res.data)
    if len(data) >= 4 and 4 + int.from_bytes(data[2:4], "big") > 255:
        want = min(4 + int.from_bytes(data[2:4], "big"), 0xFFFF)
        res = await run(session, lun, cdb.vpd(page, want), f"INQUIRY VPD 0x{page:02x}", read_len=want,
                        timeout=timeout)
        data = bytes(res.data)
    return data


async def read_capacity(session: SessionLike, lun: int, timeout: float | None = None) -> Capacity:
    """READ CAPACITY(16), falling back to (10) on a device that rejects the 16-byte form."""
    try:
        res = await run(session, lun, cdb.read_capacity16(), "READ CAPACITY(16)", read_len=32, timeout=timeout)
        return parse_read_capacity16(res.data)
    except SCSIError as e:  # fall back only when the 16-byte command itself was refused
        if e.key != ILLEGAL_REQUEST or e.sense is None or e.sense.asc not in (0x20, 0x24):
            raise
    res = await run(session, lun, cdb.read_capacity10(), "READ CAPACITY(10)", read_len=8, timeout=timeout)
    return parse_read_capacity10(res.data)


async def report_luns(session: SessionLike, lun: int = 0, timeout: float | None = None) -> list[int]:
    alloc = 16 + 8 * 256
    res = await run(session, lun, cdb.report_luns(alloc), "REPORT LUNS", read_len=alloc, timeout=timeout)
    data = bytes(res.data)
    listed = int.from_bytes(data[:4], "big") if len(data) >= 4 else 0
    if 8 + listed > alloc:
        alloc = min(8 + listed, 1 << 20)
        res = await run(session, lun, cdb.report_luns(alloc), "REPORT LUNS", read_len=alloc, timeout=timeout)
        data = bytes(res.data)
    return parse_report_luns(data)


async def read(session: SessionLike, lun: int, lba: int, blocks: int, block_size: int, *,
               into: memoryview | None = None, timeout: float | None = None) -> bytes | memoryview:
    """READ ``blocks`` blocks at ``lba`` (into ``into`` when given); short data is a protocol error."""
    n = blocks * block_size
    res = await run(session, lun, cdb.read_cdb(lba, blocks), f"READ at LBA {lba}", read_len=n, read_into=into,
                    timeout=timeout)
    if res.underflow and res.residual:
        raise TargetProtocolError(f"READ at LBA {lba}: the target returned {n - res.residual} of {n} bytes")
    return res.data


async def write(session: SessionLike, lun: int, lba: int, data: bytes | memoryview, block_size: int, *,
                fua: bool = False, timeout: float | None = None) -> None:
    """WRITE whole blocks of ``data`` at ``lba``."""
    if len(data) % block_size:
        raise LocalProtocolError(f"write of {len(data)} bytes is not a multiple of {block_size}")
    await run(session, lun, cdb.write_cdb(lba, len(data) // block_size, fua), f"WRITE at LBA {lba}",
              data_out=data, timeout=timeout)


async def sync_cache(session: SessionLike, lun: int, timeout: float | None = None) -> None:
    await run(session, lun, cdb.synchronize_cache16(), "SYNCHRONIZE CACHE(16)", timeout=timeout)


@dataclass(frozen=True)
class UnmapSupport:
    """What the target advertised for UNMAP: LBPME in RC(16), LBPU in VPD 0xB2, limits in VPD 0xB0."""

    max_lba_count: int
    max_descriptors: int


async def unmap_support(session: SessionLike, lun: int, timeout: float | None = None) -> UnmapSupport | None:
    """`UnmapSupport` when the unit advertises UNMAP (LBPME and VPD 0xB2 LBPU), else None."""
    cap = await read_capacity(session, lun, timeout)
    if not cap.lbpme:
        return None
    pages = parse_supported_pages(await vpd_page(session, lun, vpd.SUPPORTED_PAGES, timeout))
    if vpd.LB_PROVISIONING not in pages:
        return None
    if not parse_provisioning(await vpd_page(session, lun, vpd.LB_PROVISIONING, timeout)).lbpu:
        return None
    limits = BlockLimits()
    if vpd.BLOCK_LIMITS in pages:
        limits = parse_block_limits(await vpd_page(session, lun, vpd.BLOCK_LIMITS, timeout))
    return UnmapSupport(max_lba_count=limits.max_unmap_lba_count or 0xFFFFFFFF,
                        max_descriptors=limits.max_unmap_descriptors or 1)


def split_unmap(extents: list[tuple[int, int]], support: UnmapSupport) -> list[list[tuple[int, int]]]:
    """Cut extents into UNMAP commands that respect the advertised per-command limits."""
    pieces: list[tuple[int, int]] = []
    for lba, n in extents:
        while n > 0:
            take = min(n, support.max_lba_count, 0xFFFFFFFF)
            pieces.append((lba, take))
            lba, n = lba + take, n - take
    commands: list[list[tuple[int, int]]] = []
    cur: list[tuple[int, int]] = []
    total = 0
    for lba, n in pieces:
        if cur and (len(cur) >= support.max_descriptors or total + n > support.max_lba_count):
            commands.append(cur)
            cur, total = [], 0
        cur.append((lba, n))
        total += n
    if cur:
        commands.append(cur)
    return commands


async def unmap(session: SessionLike, lun: int, extents: list[tuple[int, int]],
                    support: UnmapSupport | None, timeout: float | None = None) -> None:
    """UNMAP ``extents`` (lba, blocks); refuses when the target did not advertise UNMAP."""
    if support is None:
        raise LocalProtocolError("the target does not advertise UNMAP (LBPME/LBPU); not sending it")
    for chunk in split_unmap(extents, support):
        params = cdb.unmap_parameters(chunk)
        await run(session, lun, cdb.unmap(len(params)), "UNMAP", data_out=params, timeout=timeout)

