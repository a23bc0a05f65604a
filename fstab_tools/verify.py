"""`bootkit fstab verify`: errors that break the file, warnings where it invites known failures.

Warnings target what users report: an iSCSI/NBD disk mounted before its device exists (cockpit
#15556), a network disk that blocks boot when the target is down (longhorn #1024), and a passno
on a type no fsck helper can check.
"""

from __future__ import annotations

from dataclasses import dataclass

from fstab_tools.fsck import find_helper
from fstab_tools.fstab import Fstab
from fstab_tools.mountinfo import is_below, norm
from fstab_tools.netfs import has_net_option, is_network, is_network_fstype

# Types with no fsck.TYPE helper on any system: a passno on them is a mistake.
NO_FSCK_FSTYPES = frozenset(
    {
        "tmpfs", "ramfs", "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "swap", "none",
        "bind", "overlay", "9p", "virtiofs", "squashfs", "iso9660", "udf", "nullfs", "mfs", "tracefs",
    }
)  # fmt: skip
# Types whose helper ships with their tools on Linux; checked without consulting PATH.
FSCK_FSTYPES = frozenset(
    {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "msdos", "fat", "exfat", "f2fs", "jfs",
        "reiserfs", "minix", "ffs", "ufs", "hfsplus", "ntfs",
    }
)  # fmt: skip
ISCSI_PREFIXES = ("/dev/disk/by-iscsi/", "/dev/nbd", "/dev/disk/by-path/ip-")


@dataclass(frozen=True)
class Finding:
    lineno: int
    severity: str  # "error" or "warning"
    message: str

    def format(self, filename: str) -> str:
        return f"{filename}:{self.lineno}: {self.severity}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {"line": self.lineno, "severity": self.severity, "message": self.message}


def looks_iscsi(source: str) -> bool:
    src = source
    if src.startswith("/dev/disk/by-path/"):
        return "-iscsi-" in src
    return any(src.startswith(p) for p in ISCSI_PREFIXES)


def verify(fstab: Fstab) -> list[Finding]:
    """All findings, in line order. Errors: malformed lines, relative or duplicate targets."""
    out = [Finding(e.lineno, "error", e.message) for e in fstab.errors]
    seen: dict[str, int] = {}
    entries = [(line, e) for line, e in fstab.entries if not e.ignored]
    for line, e in entries:
        n = line.lineno
        swapish = e.is_swap or e.target in ("none", "swap")
        if len(line.fields) > 6:
            out.append(Finding(n, "warning", f"{len(line.fields) - 6} field(s) after passno are ignored"))
        if not swapish and not e.target.startswith("/"):
            out.append(Finding(n, "error", f"target {e.target!r} is not an absolute path"))
        if not swapish and norm(e.target) in seen:
            out.append(Finding(n, "error", f"{e.target} is also mounted by line {seen[norm(e.target)]}"))
        seen.setdefault(norm(e.target), n)
        if e.has_option("netdev"):
            out.append(Finding(n, "warning", "option 'netdev' is not '_netdev': did you mean '_netdev'?"))
        if looks_iscsi(e.source) and not has_net_option(e):
            out.append(Finding(
                n, "warning",
                f"{e.source} looks like an iSCSI/NBD disk but has no _netdev or net option: "
                "it would be checked and mounted before the session exists",
            ))
        if is_network(e) and not swapish and "nofail" not in e.options and not e.noauto:
            out.append(Finding(
                n, "warning",
                f"network entry {e.target} has no nofail: boot waits for it when the network "
                "or target is down",
            ))
        if e.passno > 0 and not swapish:
            ft = e.fstype
            if is_network_fstype(ft) or ft in NO_FSCK_FSTYPES:
                out.append(Finding(n, "warning", f"passno {e.passno} on {ft}, which has no fsck helper"))
            elif ft not in FSCK_FSTYPES and ft != "auto" and find_helper(ft) is None:
                out.append(Finding(n, "warning", f"passno {e.passno} on {ft}, but no fsck.{ft} is installed"))
        if e.is_duid:
            out.append(Finding(n, "warning", f"{e.source} is an OpenBSD disklabel UID: Linux cannot resolve it"))
    # mount -a goes in file order: a child listed before its parent, or a local filesystem inside a
    # network one (mounted before the network is up), ends up hidden under or without its parent.
    for i, (line, e) in enumerate(entries):
        for pline, p in entries:
            if p is e or not p.target.startswith("/") or not is_below(e.target, p.target):
                continue
            if is_network(p) and not is_network(e):
                out.append(Finding(
                    line.lineno, "warning",
                    f"local {e.target} is inside network {p.target} (line {pline.lineno}): "
                    "mount -a mounts it before its parent exists",
                ))
            elif pline.lineno > line.lineno and is_network(p) == is_network(e):
                out.append(Finding(
                    line.lineno, "warning",
                    f"{e.target} comes before its parent {p.target} (line {pline.lineno}): "
                    "mount -a would hide it",
                ))
    return sorted(out, key=lambda f: f.lineno)


def exit_code(findings: list[Finding]) -> int:
    return 1 if any(f.severity == "error" for f in findings) else 0
