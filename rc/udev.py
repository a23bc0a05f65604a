"""The contract between uiscsid and the udev rule that names its NBD devices (rc/templates/udev/).

systemd learns device names only from udev, so a `/dev/disk/by-iscsi/...` link that the daemon makes
itself never becomes a `.device` unit and an fstab line naming it times out. Instead:

1. For each attached device the daemon writes ``INFO_DIR/<kernel name>`` (``/run/uiscsid/udev/nbd0``):
   the lines ``info_text()`` returns, ``KEY=value`` as udev's ``IMPORT{file}`` reads them.
2. It then asks udev for a change event on the disk and on each of its partitions, e.g.
   ``udevadm trigger --action=change --settle /dev/nbd0 /dev/nbd0p1`` (or ``change`` written to
   ``/sys/block/nbd0/uevent`` and ``/sys/block/nbd0/nbd0p1/uevent``).
3. The rule imports the file (a partition imports its disk's) and adds
   ``SYMLINK+="disk/by-iscsi/$env{UISCSI_NAME}"`` (``-part%n`` for partitions); udev's own
   60-persistent-storage.rules adds by-uuid and by-label, and 99-systemd.rules tags the device, so
   systemd makes device units for all of them once the kernel shows ``/sys/block/nbdN/pid``.
4. On detach the daemon removes the file and triggers a change again: udev drops the links.

This module is the one definition of the directory, the keys and the link name; it is pure.
"""

from __future__ import annotations

import re

INFO_DIR = "/run/uiscsid/udev"
RULES_NAME = "61-uiscsi.rules"
LINK_DIR = "disk/by-iscsi"  # under /dev
KEYS = ("UISCSI_TARGET", "UISCSI_LUN", "UISCSI_NAME")
# udev keeps these characters in a SYMLINK value and replaces any other with '_' (udev_replace_chars);
# doing it here keeps the link name the daemon reports equal to the one udev makes.
_UNSAFE = re.compile(r"[^0-9A-Za-z#+\-.:=@_]")


def link_name(target_name: str, lun: int) -> str:
    """``<iqn>-lun<N>``: the file name under /dev/disk/by-iscsi, already escaped as udev would."""
    if lun < 0:
        raise ValueError(f"LUN {lun} is negative")
    return _UNSAFE.sub("_", f"{target_name}-lun{lun}")


def info_text(target_name: str, lun: int) -> str:
    """The body of ``INFO_DIR/<kernel name>`` for one attached LUN."""
    values = {"UISCSI_TARGET": _UNSAFE.sub("_", target_name), "UISCSI_LUN": str(lun),
              "UISCSI_NAME": link_name(target_name, lun)}
    return "".join(f"{k}={values[k]}\n" for k in KEYS)


def info_path(kernel_name: str) -> str:
    """``/run/uiscsid/udev/nbd0`` for ``nbd0`` (a bare kernel name, never a path)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", kernel_name) or kernel_name in (".", ".."):
        raise ValueError(f"{kernel_name!r} is not a kernel device name")
    return f"{INFO_DIR}/{kernel_name}"


def link_path(target_name: str, lun: int) -> str:
    return f"/dev/{LINK_DIR}/{link_name(target_name, lun)}"
