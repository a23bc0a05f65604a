"""A minimal writer for the ``newc`` cpio format the kernel unpacks as an initramfs.

Written here rather than shelling out to cpio(1) so that the archive is byte-for-byte reproducible (fixed
mtimes, inode numbers and owners) and may hold device nodes such as ``/dev/console`` without root.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member. ``data`` is the file body, or the link target for a symlink."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def directory(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm)


def regular(name: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def chardev(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | perm, b"", (major, minor))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: Entry | None, name: bytes, size: int) -> bytes:
    mode = entry.mode if entry else 0
    nlink = 2 if entry and stat.S_ISDIR(entry.mode) else 1
    rmaj, rmin = entry.rdev if entry else (0, 0)
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, len(name) + 1, 0)
    return MAGIC + b"".join(b"%08X" % f for f in fields)


def archive(entries: list[Entry]) -> bytes:
    """Serialise ``entries`` in order (parents must precede children) and append the trailer."""
    out = bytearray()
    for ino, entry in enumerate(entries, start=1):
        name = entry.name.lstrip("/").encode()
        if not name:
            raise ValueError("cpio entry with an empty name")
        head = _header(ino, entry, name, len(entry.data)) + name + b"\0"
        out += head + _pad(len(head)) + entry.data + _pad(len(entry.data))
    name = TRAILER.encode()
    head = _header(0, None, name, 0) + name + b"\0"
    out += head + _pad(len(head))
    return bytes(out)
