"""The request-queue settings of /dev/nbdN, made after attach: how large one request may be.

nbd.c leaves ``max_sectors_kb`` at 128 (its hardware limit is 32 MiB), where the SCSI disk open-iscsi
makes gets 1280: a 1 MiB I/O reaches us as 8 NBD requests and 8 SCSI commands, and fills our window
eight times as fast. After attach we raise it the way sd sizes its own: the block layer's default cap
(1280 KiB), never over the device's ``max_hw_sectors_kb``, and never over what the LUN itself says it
takes in one command (Block Limits VPD: MAXIMUM TRANSFER LENGTH, and OPTIMAL TRANSFER LENGTH when given).
A setting the kernel refuses is logged and left as it was: the device works either way.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .nbd_sysfs import SYS_BLOCK

log = logging.getLogger("uiscsid.nbd")

DEFAULT_MAX_KB = 1280       # the block layer's BLK_DEF_MAX_SECTORS (2560 sectors), sd's cap too


def max_request_kb(hw_max_kb: int, block_size: int, max_transfer_blocks: int = 0,
                   optimal_transfer_blocks: int = 0) -> int:
    """The ``max_sectors_kb`` to set: sd's rule, in KiB, at least one block and at most the hardware's."""
    want = DEFAULT_MAX_KB
    for blocks in (max_transfer_blocks, optimal_transfer_blocks):
        if blocks and blocks * block_size >= 4096:
            want = min(want, blocks * block_size // 1024)
    return max(min(want, hw_max_kb), max(block_size // 1024, 4))


def tune(index: int, block_size: int, max_transfer_blocks: int = 0, optimal_transfer_blocks: int = 0,
         sys_block: Path = SYS_BLOCK) -> dict[str, int]:
    """Raise /dev/nbd``index``'s largest request; returns what it set (empty when nothing was)."""
    queue = sys_block / f"nbd{index}" / "queue"
    try:
        hw = int((queue / "max_hw_sectors_kb").read_text())
        now = int((queue / "max_sectors_kb").read_text())
    except (OSError, ValueError):
        return {}
    want = max_request_kb(hw, block_size, max_transfer_blocks, optimal_transfer_blocks)
    if want == now:
        return {}
    try:
        (queue / "max_sectors_kb").write_text(f"{want}\n")
    except OSError as e:
        log.warning("/dev/nbd%d: cannot set max_sectors_kb to %d: %s", index, want, e.strerror or e)
        return {}
    return {"max_sectors_kb": want}
