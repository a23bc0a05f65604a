"""/proc/self/mountinfo: what is mounted now, and the order to take it down (children first).

Hosts tests feed a fake file through `--mountinfo FILE`; real runs read /proc/self/mountinfo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fstab_tools.fstab import unmangle

PROC_MOUNTINFO = "/proc/self/mountinfo"
MAX_MOUNTINFO_BYTES = 16 * 1024 * 1024


class MountinfoError(Exception):
    """The mountinfo file cannot be read or a line does not have mountinfo's shape."""


@dataclass(frozen=True)
class Mount:
    """One mounted filesystem as the kernel reports it."""

    mount_id: int
    parent_id: int
    devno: str
    root: str
    target: str
    options: tuple[str, ...]
    fstype: str
    source: str
    index: int  # position in the file: later lines were mounted later


def parse_mountinfo(text: str, filename: str = PROC_MOUNTINFO) -> list[Mount]:
    """Parse mountinfo text; a line without mountinfo's shape raises `MountinfoError` (file:line)."""
    mounts = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        left, sep, right = line.partition(" - ")
        a = left.split(" ")
        b = right.split(" ")
        if not sep or len(a) < 6 or len(b) < 2 or not a[0].isdigit() or not a[1].isdigit():
            raise MountinfoError(f"{filename}:{lineno}: not a mountinfo line")
        target = unmangle(a[4])
        target = target.removesuffix(" (deleted)")
        mounts.append(
            Mount(
                mount_id=int(a[0]),
                parent_id=int(a[1]),
                devno=a[2],
                root=unmangle(a[3]),
                target=target,
                options=tuple(a[5].split(",")),
                fstype=unmangle(b[0]),
                source=unmangle(b[1]),
                index=len(mounts),
            )
        )
    return mounts


def load_mountinfo(path: str | Path = PROC_MOUNTINFO) -> list[Mount]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MOUNTINFO_BYTES)
    except OSError as e:
        raise MountinfoError(f"{path}: {e.strerror or e}") from None
    return parse_mountinfo(data.decode("utf-8", "surrogateescape"), str(path))


def norm(path: str) -> str:
    """Mount points compare without trailing slashes or doubled slashes (not resolving symlinks)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts) if path.startswith("/") else path


def visible(mounts: list[Mount]) -> dict[str, Mount]:
    """Target -> the mount on top there (the last one mounted on that path)."""
    top: dict[str, Mount] = {}
    for m in mounts:
        top[norm(m.target)] = m
    return top


def is_below(path: str, ancestor: str) -> bool:
    path, ancestor = norm(path), norm(ancestor)
    if ancestor == "/":
        return path != "/"
    return path.startswith(ancestor + "/")


def unmount_order(mounts: list[Mount], targets: list[str]) -> list[Mount]:
    """The mounts at `targets` plus everything mounted below them, children before parents.

    Depth in the mount tree first (deepest first), then the most recent mount first, which is the
    reverse of mount order and never leaves a parent busy because of a child.
    """
    wanted = {norm(t) for t in targets}
    parents = wanted - {"/"}  # below "/" is everything: the root itself goes last, alone
    by_id = {m.mount_id: m for m in mounts}
    chosen = [
        m for m in mounts if norm(m.target) in wanted or any(is_below(m.target, t) for t in parents)
    ]

    def depth(m: Mount) -> int:
        d, seen = 0, set()
        while m.parent_id in by_id and m.parent_id != m.mount_id and m.mount_id not in seen:
            seen.add(m.mount_id)
            m = by_id[m.parent_id]
            d += 1
        return d

    return sorted(chosen, key=lambda m: (-depth(m), -m.index))
