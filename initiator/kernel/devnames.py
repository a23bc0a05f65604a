"""Stable names for attached LUNs: ``/dev/disk/by-iscsi/<target IQN>-lun<N>``, whatever /dev/nbdN they got.

The names themselves are udev_info's (one definition, shared with the udev rule): `stable_name` is the
NBD netlink backend identifier (/sys/block/nbdN/backend), so a restarted uiscsid finds a kept device under
the same name a user mounts, and `link_name` is the link's file name (the same, escaped as udev would).
Where udev names the devices (udev_info.udev_names) udev makes the links; elsewhere the daemon makes them
here. Links are replaced atomically (a temporary link renamed over the old one).
"""

from __future__ import annotations

import contextlib
import os

from .udev_info import LINK_DIR, link_name, stable_name

__all__ = ["LINK_DIR", "link_name", "make_link", "remove_link", "stable_name"]


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
