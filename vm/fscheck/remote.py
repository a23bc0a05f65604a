"""Probe a LUN the host has no image of (a user's target) by reading it through the target, read-only.

``blkid -p`` needs the places signatures live: the first MiB holds every filesystem superblock and
partition-table header blkid knows of that sits at the start (ext2/3/4 at 1 KiB, xfs at 0, btrfs at
64 KiB, LVM at 512 B, swap in the first page, GPT, ISO 9660 at 32 KiB), and the last MiB the ones that sit
at the end (MD RAID 0.90/1.0, the backup GPT, ZFS's last labels). Those two ranges are read with plain
READ commands in one session and laid into a sparse file of the LUN's size, which blkid then probes as it
would the device. Nothing is written to the LUN.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

from initiator.errors import ISCSIError
from initiator.io.params import SessionParams
from initiator.io.session import open_session
from initiator.scsi import commands as scsi
from vm.fscheck.probe import Content, probe
from vm.fscheck.verdict import FsCheckError

EDGE = 1 << 20  # bytes read at each end
INITIATOR = "iqn.2026-11.org.iscsi-bootkit:probe"


@dataclass(frozen=True)
class RemoteContent:
    """What the LUN holds, and its size as READ CAPACITY reports it."""

    content: Content
    size: int


async def read_edges(params: SessionParams, lun: int, timeout: float) -> tuple[int, list[tuple[int, bytes]]]:
    """The LUN's size and its first and last EDGE bytes as (offset, data)."""
    session = await open_session(params)
    try:
        cap = await scsi.read_capacity(session, lun, timeout)
        bs = cap.block_size
        blocks = max(1, min(EDGE // bs, cap.blocks))
        chunks = []
        for lba in sorted({0, max(0, cap.blocks - blocks)}):
            data = await scsi.read(session, lun, lba, min(blocks, cap.blocks - lba), bs, timeout=timeout)
            chunks.append((lba * bs, bytes(data)))
        return cap.size, chunks
    finally:
        try:
            async with asyncio.timeout(timeout):
                await session.logout()
        except (ISCSIError, OSError, TimeoutError):
            pass
        await session.close()


def probe_lun(params: SessionParams, lun: int, timeout: float = 20.0) -> RemoteContent:
    """Log in with PARAMS (its initiator name, if empty, is INITIATOR), read the LUN's edges, probe them."""
    if not params.initiator_name:
        params = dataclasses.replace(params, initiator_name=INITIATOR)
    params = dataclasses.replace(params, login_timeout=timeout, command_timeout=0.0)
    where = f"{params.portal} {params.target_name} lun {lun}"
    try:
        size, chunks = asyncio.run(asyncio.wait_for(read_edges(params, lun, timeout), 3 * timeout))
    except (ISCSIError, OSError, TimeoutError) as e:
        raise FsCheckError(f"cannot read {where} to see what it holds: {e}") from None
    with tempfile.TemporaryDirectory(prefix="bootkit-probe-") as d:
        sparse = Path(d) / "edges.img"
        with open(sparse, "wb") as f:
            f.truncate(size)
            for offset, data in chunks:
                f.seek(offset)
                f.write(data)
        return RemoteContent(probe(sparse), size)
