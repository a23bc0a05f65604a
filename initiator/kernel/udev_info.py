"""The contract between uiscsid and the udev rule that names its NBD devices (rc/templates/udev/), and the
daemon's side of it.

systemd learns device names only from udev, so a `/dev/disk/by-iscsi/...` link that the daemon makes
itself never becomes a `.device` unit and an fstab line naming it times out. Where udev runs:

1. For each attached device the daemon writes ``INFO_DIR/<kernel name>`` (``/run/uiscsid/udev/nbd0``):
   the lines ``info_text()`` returns, ``KEY=value`` as udev's ``IMPORT{file}`` reads them (`announce`).
2. It then asks udev for a change event on the disk and on each of its partitions, by writing
   ``change`` to ``/sys/block/nbd0/uevent`` and ``/sys/block/nbd0/nbd0p1/uevent`` (`trigger`), as
   ``udevadm trigger --action=change`` does, without waiting for udev (the caller waits for the link).
3. The rule imports the file (a partition imports its disk's) and adds
   ``SYMLINK+="disk/by-iscsi/$env{UISCSI_NAME}"`` (``-part%n`` for partitions); udev's own
   60-persistent-storage.rules adds by-uuid and by-label, and 99-systemd.rules tags the device, so
   systemd makes device units for all of them once the kernel shows ``/sys/block/nbdN/pid``.
4. On detach the daemon removes the file and triggers a change again: udev drops the links (`withdraw`).

Where no udev runs (a busybox rc, a container) or the rule is not installed, the daemon makes the links
itself (`devnames.make_link`); `udev_names()` is that choice.

The pure part (names, escaping, the file's text) is the one definition rc/ and the tests use too.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

INFO_DIR = "/run/uiscsid/udev"
RULES_NAME = "61-uiscsi.rules"
LINK_SUBDIR = "disk/by-iscsi"  # under /dev: udev's SYMLINK+= value starts with it
LINK_DIR = f"/dev/{LINK_SUBDIR}"
KEYS = ("UISCSI_TARGET", "UISCSI_LUN", "UISCSI_NAME")
UDEV_CONTROL = "/run/udev/control"  # systemd-udevd's control socket: present while udevd runs
# Where udev reads rules from (udev(7)); the rule counts as installed when any of them holds it.
RULES_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d", "/usr/local/lib/udev/rules.d", "/lib/udev/rules.d",
              "/usr/lib/udev/rules.d")
SYS_BLOCK = Path("/sys/block")
# udev keeps these characters in a SYMLINK value and replaces any other with '_' (udev_replace_chars);
# doing it here keeps the link name the daemon reports equal to the one udev makes.
_UNSAFE = re.compile(r"[^0-9A-Za-z#+\-.:=@_]")
_KERNEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def stable_name(target_name: str, lun: int) -> str:
    """``iqn.2026-11.org.example:disk-lun1``: the one name of LUN ``lun`` of ``target_name``, unescaped
    (the NBD netlink backend identifier; the link's file name is `link_name`)."""
    if lun < 0:
        raise ValueError(f"LUN {lun} is negative")
    return f"{target_name}-lun{lun}"


def link_name(target_name: str, lun: int) -> str:
    """``<iqn>-lun<N>``: the file name under /dev/disk/by-iscsi, already escaped as udev would."""
    return _UNSAFE.sub("_", stable_name(target_name, lun))


def link_path(target_name: str, lun: int) -> str:
    return f"{LINK_DIR}/{link_name(target_name, lun)}"


def info_text(target_name: str, lun: int) -> str:
    """The body of ``INFO_DIR/<kernel name>`` for one attached LUN."""
    values = {"UISCSI_TARGET": _UNSAFE.sub("_", target_name), "UISCSI_LUN": str(lun),
              "UISCSI_NAME": link_name(target_name, lun)}
    return "".join(f"{k}={values[k]}\n" for k in KEYS)


def _check_kernel_name(kernel_name: str) -> str:
    if not _KERNEL_NAME.fullmatch(kernel_name) or kernel_name in (".", ".."):
        raise ValueError(f"{kernel_name!r} is not a kernel device name")
    return kernel_name


def info_path(kernel_name: str) -> str:
    """``/run/uiscsid/udev/nbd0`` for ``nbd0`` (a bare kernel name, never a path)."""
    return f"{INFO_DIR}/{_check_kernel_name(kernel_name)}"


# ------------------------------------------------------------------------------------------ the daemon's side
def udev_names(control: str = UDEV_CONTROL, rules_dirs: tuple[str, ...] = RULES_DIRS) -> bool:
    """True when udev names the devices: udevd runs and one of its rules directories holds our rule."""
    return os.path.exists(control) and any(os.path.isfile(os.path.join(d, RULES_NAME)) for d in rules_dirs)


def uevent_files(kernel_name: str, sys_block: Path = SYS_BLOCK) -> list[Path]:
    """The disk's uevent file, then each partition's (``nbd0p1``...)."""
    base = sys_block / _check_kernel_name(kernel_name)
    return [base / "uevent", *sorted(p / "uevent" for p in base.glob(f"{kernel_name}p*"))]


def trigger(kernel_name: str, sys_block: Path = SYS_BLOCK) -> list[str]:
    """Ask udev for a change event on the disk and its partitions; returns the failures (never raises).

    A partition that went away meanwhile is not a failure: a detach drops the partitions while this runs,
    and their remove events take their links away."""
    disk, *partitions = uevent_files(kernel_name, sys_block)
    problems = []
    for path in [disk, *partitions]:
        try:
            path.write_text("change")
        except OSError as e:
            if not (isinstance(e, FileNotFoundError) and path is not disk):
                problems.append(f"{path}: {e.strerror}")
    return problems


def scan_partitions(device: str) -> None:
    """Open and close the device once, so the kernel reads its partition table now (an NBD disk scans it
    on its first open) and `trigger` sees the partitions. Blocks on the device's I/O: never call it from
    the thread that serves the device."""
    with contextlib.suppress(OSError):
        os.close(os.open(device, os.O_RDONLY | os.O_CLOEXEC))


def announce(kernel_name: str, target_name: str, lun: int, info_dir: str = INFO_DIR,
             sys_block: Path = SYS_BLOCK) -> list[str]:
    """Write the device's info file (atomically), read its partitions, and trigger; returns the failures."""
    os.makedirs(info_dir, exist_ok=True)
    path = os.path.join(info_dir, _check_kernel_name(kernel_name))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(info_text(target_name, lun))
    os.replace(tmp, path)
    scan_partitions(f"/dev/{kernel_name}")
    return trigger(kernel_name, sys_block)


def withdraw(kernel_name: str, info_dir: str = INFO_DIR, sys_block: Path = SYS_BLOCK) -> list[str]:
    """Remove the device's info file and trigger, so udev drops its links; returns the failures."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(info_dir, _check_kernel_name(kernel_name)))
    return trigger(kernel_name, sys_block)
