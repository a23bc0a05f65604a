"""Stable names for attached LUNs: ``/dev/disk/by-iscsi/<target IQN>-lun<N>``, whatever /dev/nbdN they got.

One name per LUN (`stable_name`) is both the by-iscsi link's file name and the NBD netlink backend
identifier (/sys/block/nbdN/backend), so a restarted uiscsid finds a kept device under the same name a
user mounts. Links are replaced atomically (a temporary link renamed over the old one).
"""

from __future__ import annotations

import contextlib
import os

LINK_DIR = "/dev/disk/by-iscsi"


def stable_name(target_name: str, lun: int) -> str:
    """``iqn.2026-11.org.example:disk-lun1``: the name of LUN ``lun`` of ``target_name``."""
    return f"{target_name}-lun{lun}"


def make_link(link_dir: str, name: str, device: str) -> str:
    """Point ``link_dir/name`` at ``device`` (a relative link, like udev's); returns the link's path."""
    os.makedirs(link_dir, exist_ok=True)
    link = os.path.join(link_dir, name)
    tmp = f"{link}.tmp{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.relpath(device, link_dir), tmp)
    os.replace(tmp, link)
    return link


def remove_link(link: str) -> None:
    """Remove a link made by `make_link`; one already gone is fine."""
    with contextlib.suppress(OSError):
        os.unlink(link)
