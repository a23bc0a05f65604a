"""What the kernel shows about /dev/nbdN under /sys/block: which devices exist, which are served, by whom held.

Reads only (``claimed`` opens the device read-only); the NBD bridges (ioctl and netlink) and the daemon's busy checks use them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

SYS_BLOCK = Path("/sys/block")
DEV = Path("/dev")


def _nbd_index(name: str) -> int | None:
    return int(name[3:]) if name.startswith("nbd") and name[3:].isdigit() else None


def device_indexes() -> list[int]:
    return sorted(i for p in SYS_BLOCK.glob("nbd*") if (i := _nbd_index(p.name)) is not None)


def is_connected(index: int) -> bool:
    """True while a server (any process) serves /dev/nbdN: the kernel shows its pid then."""
    return (SYS_BLOCK / f"nbd{index}" / "pid").exists()


def sectors(index: int) -> int:
    """The size the kernel shows for /dev/nbdN, in 512-byte sectors (0 until it is set)."""
    try:
        return int((SYS_BLOCK / f"nbd{index}" / "size").read_text())
    except (OSError, ValueError):
        return 0


def users(index: int) -> list[str]:
    """Why /dev/nbdN (or one of its partitions) must not be detached: mount points and holders."""
    base = SYS_BLOCK / f"nbd{index}"
    devs = set()
    for d in [base, *base.glob(f"nbd{index}p*")]:
        with contextlib.suppress(OSError):
            devs.add((d / "dev").read_text().strip())
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and parts[2] in devs:
                found.append(f"mounted on {parts[4]}")
    for d in [base, *base.glob(f"nbd{index}p*")]:
        with contextlib.suppress(OSError):
            found += [f"held by {h.name}" for h in (d / "holders").iterdir()]
    return found


def claimed(index: int) -> list[str]:
    """Why /dev/nbdN (or a partition) is still in use though ``users`` saw nothing: the kernel holds it claimed.

    A filesystem leaves mountinfo when umount(2) detaches it, before it has written its journal and
    superblock; the exclusive claim it keeps until then is what an O_EXCL open runs into (EBUSY). Opening
    a free device reads its partition table: a process that serves the device must call this from a
    thread, with its event loop running."""
    base = SYS_BLOCK / f"nbd{index}"
    found = []
    for name in [base.name, *sorted(p.name for p in base.glob(f"nbd{index}p*"))]:
        try:
            fd = os.open(DEV / name, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.EBUSY:
                found.append(f"claimed by the kernel ({name}: a filesystem still being unmounted?)")
            continue
        os.close(fd)
    return found


def find_by_identifier(identifier: str) -> int | None:
    """The /dev/nbdN the kernel keeps for ``identifier`` (its backend file), if any."""
    for p in SYS_BLOCK.glob("nbd*"):
        with contextlib.suppress(OSError, ValueError):
            if (p / "backend").read_text().strip() == identifier:
                return int(p.name[3:])
    return None
