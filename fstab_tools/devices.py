"""From an fstab source to a device node: tags, waiting for late devices, and the disk behind it.

An iSCSI or NBD disk appears only after login, so `--wait S` polls until every needed device exists
or S seconds pass. Tags resolve through udev's /dev/disk/by-* links first and blkid second.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from fstab_tools.fstab import Entry
from fstab_tools.mountinfo import Mount
from fstab_tools.netfs import is_network_fstype

BY_DIR = {
    "UUID": "by-uuid",
    "LABEL": "by-label",
    "PARTUUID": "by-partuuid",
    "PARTLABEL": "by-partlabel",
    "ID": "by-id",
}
POLL_S = 0.1
BLKID_EVERY = 10  # polls
_UDEV_SAFE = re.compile(r"[A-Za-z0-9#+\-.:=@_]")


@dataclass(frozen=True)
class Resolved:
    """`device` is the node to use, or None with `reason` saying why it is not there."""

    spec: str
    device: str | None
    reason: str = ""


def udev_escape(value: str) -> str:
    """Encode a tag value as udev names its /dev/disk/by-* link (`my disk` -> `my\\x20disk`)."""
    out = []
    for ch in value:
        if _UDEV_SAFE.match(ch) or ord(ch) > 127:
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def needs_device(entry: Entry) -> bool:
    """True when the source names a block device or file that must exist (not tmpfs, not NFS)."""
    if entry.tag or entry.is_duid:
        return True
    src = entry.source
    return src.startswith("/") and not src.startswith("//") and not is_network_fstype(entry.fstype)


def _blkid(name: str, value: str) -> str | None:
    try:
        out = subprocess.run(
            ["blkid", "-c", "/dev/null", "-o", "device", "-t", f"{name}={value}"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    return lines[0] if out.returncode == 0 and lines else None


def resolve(entry: Entry, dev_root: str = "/dev", use_blkid: bool | None = None) -> Resolved:
    """Resolve one entry's source once, without waiting. `use_blkid` defaults to dev_root == /dev."""
    spec = entry.source
    if entry.is_duid:
        return Resolved(spec, None, "an OpenBSD disklabel UID has no Linux device")
    tag = entry.tag
    if tag is None:
        if os.path.exists(spec):
            return Resolved(spec, spec)
        return Resolved(spec, None, f"{spec} does not exist")
    name, value = tag
    values = [value, value.lower()] if name == "UUID" and value != value.lower() else [value]
    for v in values:
        link = os.path.join(dev_root, "disk", BY_DIR[name], udev_escape(v))
        if os.path.exists(link):
            return Resolved(spec, link)
    if name != "ID" and (use_blkid if use_blkid is not None else dev_root == "/dev"):
        found = _blkid(name, value)
        if found:
            return Resolved(spec, found)
    return Resolved(spec, None, f"no device with {name}={value}")


def wait_for(
    entries: list[Entry],
    timeout: float,
    dev_root: str = "/dev",
    use_blkid: bool | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[Entry, Resolved]:
    """Resolve every entry, polling up to `timeout` seconds for the missing ones to appear."""
    deadline = clock() + max(timeout, 0.0)
    result = {e: resolve(e, dev_root, use_blkid) for e in entries}
    missing = [e for e, r in result.items() if r.device is None and not e.is_duid]
    if missing and timeout > 0 and progress:
        names = ", ".join(f"{e.source} ({e.target})" for e in missing)
        progress(f"waiting up to {timeout:g} s for {names}")
    polls = 0
    while missing and clock() < deadline:
        sleep(min(POLL_S, max(deadline - clock(), 0.0)))
        polls += 1
        # links are cheap to test every poll; blkid scans every disk, so only about once a second
        probe = use_blkid if polls % BLKID_EVERY == 0 else False
        for e in list(missing):
            r = resolve(e, dev_root, probe)
            if r.device is not None:
                result[e] = r
                missing.remove(e)
    if timeout > 0:
        for e in missing:
            r = result[e]
            result[e] = Resolved(r.spec, None, f"{r.reason}; device did not appear within {timeout:g} s")
    return result


def whole_disk(device: str) -> str:
    """The disk a device lives on, so checks on one disk run one at a time (sda1, sda2 -> sda).

    Block devices ask sysfs; anything else (and the dry-run plans of tests) falls back to the name.
    """
    real = os.path.realpath(device)
    try:
        st = os.stat(real)
    except OSError:
        st = None
    if st is not None and stat.S_ISBLK(st.st_mode):
        sys_dir = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        try:
            node = os.path.realpath(sys_dir)
            if os.path.exists(os.path.join(sys_dir, "partition")):
                node = os.path.dirname(node)
            return "/dev/" + os.path.basename(node)
        except OSError:
            pass
    base = os.path.basename(real)
    m = re.match(r"^(.*\d)p\d+$", base) or re.match(r"^((?:sd|vd|hd|xvd)[a-z]+)\d+$", base)
    return os.path.join(os.path.dirname(real), m.group(1) if m else base)


def devno(path: str) -> str | None:
    """`MAJOR:MINOR` of a block device, as mountinfo writes it; None for anything else."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if stat.S_ISBLK(st.st_mode) else None


def mounted_rw(device: str, mounts: list[Mount]) -> Mount | None:
    """The read-write mount of `device`, matched by device number, else by resolved source path."""
    number = devno(device)
    real = os.path.realpath(device)
    for m in mounts:
        if "rw" not in m.options:
            continue
        if (number is not None and m.devno == number) or (
            m.source.startswith("/") and os.path.realpath(m.source) == real
        ):
            return m
    return None
