"""The proof's LUN backing file on the host: create and format it once, and check it from the host.

Everything here reads or writes a *regular file* with e2fsprogs (mkfs.ext4 -F, e2fsck -fn, dumpe2fs -h,
debugfs): nothing is ever mounted on the host, and e2fsck runs with -n (no change). The file may be
read while tgtd serves it: tgtd writes through the host page cache, so what the host reads is what the
guest's last completed write left, which is exactly what the next boot will see.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

PAYLOAD = "payload.bin"
PAYLOAD_HASH = "payload.sha256"
LABEL = "bootkit-proof"
TOOL_TIMEOUT = 120.0


class LunError(RuntimeError):
    """The backing file cannot be used (not ext4, a tool is missing or failed); the message says why."""


def _run(args: list[str], *, binary: bool = False) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=not binary, timeout=TOOL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise LunError(f"{args[0]} not found: install e2fsprogs") from None
    except subprocess.TimeoutExpired:
        raise LunError(f"{' '.join(args)} did not finish in {TOOL_TIMEOUT:g} s") from None


def features(path: Path) -> list[str]:
    """The ext2/3/4 feature list from `dumpe2fs -h` (raises LunError when PATH holds no such fs)."""
    r = _run(["dumpe2fs", "-h", str(path)])
    if r.returncode != 0:
        raise LunError(f"{path}: no ext2/3/4 filesystem ({r.stderr.strip().splitlines()[-1:]})")
    for line in r.stdout.splitlines():
        if line.startswith("Filesystem features:"):
            return line.split(":", 1)[1].split()
    raise LunError(f"{path}: dumpe2fs -h printed no feature line")


def debugfs_cat(path: Path, name: str) -> bytes | None:
    """The contents of /NAME in the filesystem in PATH as debugfs reads it (no journal replay), or None."""
    r = _run(["debugfs", "-R", f"cat /{name}", str(path)], binary=True)
    err = r.stderr.decode("utf-8", "replace")
    if r.returncode != 0 or "not found" in err or "Ext2 inode is not a directory" in err:
        return None
    return r.stdout


def sha256_line(data: bytes, name: str = PAYLOAD) -> str:
    """What `sha256sum NAME` prints for data: the format the guest's writer stores in payload.sha256."""
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


def recorded_hash(text: bytes | None) -> str | None:
    """The hex digest in a payload.sha256 file, or None when it is missing or malformed."""
    if not text:
        return None
    word = text.decode("ascii", "replace").split()[:1]
    if word and len(word[0]) == 64 and all(c in "0123456789abcdef" for c in word[0]):
        return word[0]
    return None


@dataclass
class HostCheck:
    """The state of the LUN file as the host sees it between boots (see module docstring)."""

    needs_recovery: bool
    e2fsck_exit: int
    e2fsck_tail: list[str]
    payload_sha256: str | None  # sha256 of /payload.bin as debugfs reads it
    recorded_sha256: str | None  # the digest stored in /payload.sha256
    payload_ok: bool | None  # None: no payload on the filesystem
    expected_sha256: str | None = None  # what the guest's writer last wrote, when known

    @property
    def clean(self) -> bool:
        return not self.needs_recovery and self.e2fsck_exit == 0

    @property
    def damaged(self) -> bool:
        """Not what a clean shutdown leaves: needs recovery, e2fsck complains, or not the last payload."""
        return not self.clean or self.payload_ok is not True

    def failures(self, where: str) -> list[str]:
        """What is wrong with the LUN after a shutdown, in words (empty: clean, payload intact)."""
        out = []
        if self.needs_recovery:
            out.append(f"{where}: after shutdown the LUN still needs journal recovery (not cleanly unmounted)")
        if self.e2fsck_exit != 0:
            out.append(f"{where}: after shutdown e2fsck -fn exit {self.e2fsck_exit}")
        if self.payload_ok is not True:
            out.append(f"{where}: after shutdown the LUN does not hold the payload just written "
                       "(read without journal replay)")
        return out

    def final_failure(self) -> list[str]:
        """The last check of a run, in words (empty: clean, payload intact)."""
        if not self.damaged:
            return []
        return [(f"final: LUN needs_recovery={self.needs_recovery}, e2fsck -fn exit {self.e2fsck_exit}, "
                f"payload_ok={self.payload_ok}")]

    def as_dict(self) -> dict:
        return {**asdict(self), "clean": self.clean}


def check(path: Path, expected: str | None = None) -> HostCheck:
    """needs_recovery (dumpe2fs -h), `e2fsck -fn` exit, and the payload read with debugfs vs its hash.

    With ``expected`` (the digest the guest's writer reported), the payload is ok only if it is that one:
    a filesystem whose last metadata lives only in its journal still shows the previous payload here.
    """
    path = Path(path)
    needs = "needs_recovery" in features(path)
    fsck = _run(["e2fsck", "-fn", str(path)])
    tail = [ln for ln in (fsck.stderr + fsck.stdout).splitlines() if ln.strip()][-6:]
    data = debugfs_cat(path, PAYLOAD)
    recorded = recorded_hash(debugfs_cat(path, PAYLOAD_HASH))
    actual = hashlib.sha256(data).hexdigest() if data is not None else None
    if data is None and recorded is None:
        ok = None
    else:
        ok = actual is not None and actual == recorded and expected in (None, actual)
    return HostCheck(needs, fsck.returncode, tail, actual, recorded, ok, expected)


def ensure(path: Path, size_mb: int = 64, payload_mb: int = 8) -> bool:
    """Create PATH (sparse), mkfs.ext4 it and seed a first payload, unless it already holds an ext4.

    The seed (written with `debugfs -w`, on the unmounted file) gives the first boot a payload to verify.
    Returns True when the file was created. A PATH that exists but holds no ext2/3/4 is refused, never
    overwritten.
    """
    path = Path(path)
    if path.exists():
        features(path)  # raises LunError for a file that is not ours to format
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    with open(tmp, "wb") as f:
        f.truncate(size_mb << 20)
    r = _run(["mkfs.ext4", "-F", "-q", "-L", LABEL, str(tmp)])
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise LunError(f"mkfs.ext4 {tmp} failed: {r.stderr.strip()}")
    data = os.urandom(payload_mb << 20)
    with tempfile.TemporaryDirectory(prefix="bootkit-proof-seed-") as d:
        (Path(d) / PAYLOAD).write_bytes(data)
        (Path(d) / PAYLOAD_HASH).write_text(sha256_line(data))
        for name in (PAYLOAD, PAYLOAD_HASH):
            w = _run(["debugfs", "-w", "-R", f"write {Path(d) / name} {name}", str(tmp)])
            if w.returncode != 0 or "rror" in w.stderr:
                tmp.unlink(missing_ok=True)
                raise LunError(f"debugfs -w: could not seed {name}: {w.stderr.strip()}")
    os.replace(tmp, path)
    return True
