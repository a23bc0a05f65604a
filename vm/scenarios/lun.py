"""The proof's LUN backing file on the host: create and format it once, and check it from the host.

The checks themselves are vm/fscheck's (one per filesystem type, read-only on the image file, nothing
ever mounted on the host): for ext4 ``dumpe2fs -h`` (needs_recovery), ``e2fsck -fn`` and the payload read
with debugfs; xfs and btrfs have their own tools there. The file may be read while tgtd serves it: tgtd
writes through the host page cache, so what the host reads is what the guest's last completed write
left, which is exactly what the next boot will see.
"""

from __future__ import annotations

from pathlib import Path

from vm.fscheck import FsCheckError, FsVerdict
from vm.fscheck import host as fshost
from vm.fscheck.probe import probe

PAYLOAD, PAYLOAD_HASH, LABEL = fshost.PAYLOAD, fshost.PAYLOAD_HASH, fshost.LABEL
sha256_line, recorded_hash = fshost.sha256_line, fshost.recorded_hash
HostCheck = FsVerdict  # the state of the LUN between boots: clean, damaged, failures, as_dict
EXT = ("ext2", "ext3", "ext4")


class LunError(RuntimeError):
    """The backing file cannot be used (not the expected filesystem, a tool is missing or failed)."""


def check(path: Path, expected: str | None = None, fstype: str = "ext4") -> HostCheck:
    """Recovery pending, the type's read-only checker, and the payload read without replay vs its hash.

    With ``expected`` (the digest the guest's writer reported), the payload is ok only if it is that one:
    a filesystem whose last metadata lives only in its journal still shows the previous payload here.
    """
    try:
        return fshost.check(path, fstype, expected)
    except FsCheckError as e:
        raise LunError(str(e)) from None


def ensure(path: Path, size_mb: int = 64, payload_mb: int = 8) -> bool:
    """Create PATH (sparse), mkfs.ext4 it with a first payload (so the first boot has one to verify), unless
    it already holds an ext4. Returns True when the file was created. A PATH that exists but holds no
    ext2/3/4 is refused, never overwritten."""
    path = Path(path)
    try:
        if path.exists():
            content = probe(path)
            if content.type not in EXT:
                raise LunError(f"{path}: no ext2/3/4 filesystem (it holds {content.describe()})")
            return False
        fshost.create(path, "ext4", size_mb, payload_mb)
    except FsCheckError as e:
        raise LunError(str(e)) from None
    return True
