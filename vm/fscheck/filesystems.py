"""One `Filesystem` per type: its read-only checker, where its "needs recovery" state is read, how a file is
read back without mounting (or replaying anything), and how mkfs makes one already holding a few files.

Facts the classes encode (xfsprogs 6.1, btrfs-progs 6.2, e2fsprogs 1.47, as in Debian 12):
- ext4: ``dumpe2fs -h`` lists the ``needs_recovery`` feature while the journal holds transactions to
  replay; ``e2fsck -fn`` exits 0 (clean), 4 (errors left uncorrected) or 8 (no ext2/3/4 there).
- xfs: ``xfs_logprint -t`` prints ``log tail: T head: H state: <CLEAN|DIRTY>``. ``xfs_repair -n`` exits 0 or
  1 (corruption); with a dirty log it says the log "is being ignored because the -n option was used"
  and its other findings may be spurious, so the log's state is read separately and decides first.
  mkfs.xfs refuses filesystems under 300 MB; ``-p PROTOFILE`` populates files without a mount.
- btrfs: no journal to replay, but an fsync'd write since the last commit lives in a log tree that the
  next mount replays: ``dump-super`` shows ``log_root`` non-zero then. ``btrfs check --readonly`` exits 0
  or 1; ``btrfs restore`` copies files out of an unmounted filesystem, as committed.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vm.fscheck.verdict import FsCheckError

TOOL_TIMEOUT = 300.0


def run(args: list[str], package: str, *, binary: bool = False,
        timeout: float = TOOL_TIMEOUT) -> subprocess.CompletedProcess:
    """Run one tool; a missing tool or a hang is an `FsCheckError` naming the Debian package to install."""
    try:
        return subprocess.run(args, capture_output=True, text=not binary, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise FsCheckError(f"{args[0]} not found: install {package}") from None
    except subprocess.TimeoutExpired:
        raise FsCheckError(f"{' '.join(args)} did not finish in {timeout:g} s") from None


def lines_of(*texts: str) -> list[str]:
    return [ln.rstrip() for t in texts for ln in t.splitlines() if ln.strip()]


@dataclass(frozen=True)
class Checked:
    """What a checker said: its command, exit status, the lines naming problems, its last lines."""

    tool: str
    exit: int
    problems: list[str]
    tail: list[str]


@dataclass(frozen=True)
class Recovery:
    """Whether the next mount replays something, and the evidence (the tool's own words)."""

    needed: bool
    evidence: str


class Filesystem(ABC):
    """One filesystem type's tools, all read-only except `mkfs`."""

    name: str = ""
    package: str = ""
    min_mb: int = 16        # the smallest filesystem its mkfs makes
    default_mb: int = 64    # the size of a LUN file the proof creates for it
    label_max: int = 16
    noise: tuple[str, ...] = ()  # regexes of the checker's progress lines (not problems)

    def label(self, text: str) -> str:
        return text[: self.label_max]

    @abstractmethod
    def recovery(self, target: str) -> Recovery:
        """Whether the next mount would replay something (FsCheckError when the type is not there)."""

    @abstractmethod
    def check_args(self, target: str, *, image: bool) -> list[str]:
        """The read-only checker's command line (``image``: TARGET is a regular file)."""

    def check(self, target: str, *, image: bool) -> Checked:
        args = self.check_args(target, image=image)
        r = run(args, self.package)
        out = lines_of(r.stderr, r.stdout)  # e2fsck's and btrfs check's progress on stderr, summary on stdout
        return Checked(" ".join(args[:-1]), r.returncode, self.problems(out) if r.returncode else [], out[-8:])

    def problems(self, lines: list[str]) -> list[str]:
        """The checker's lines that are not its progress chatter (bounded)."""
        pats = [re.compile(p) for p in self.noise]
        return [ln.strip() for ln in lines if not any(p.search(ln) for p in pats)][:12]

    @abstractmethod
    def read_files(self, target: str, names: list[str]) -> dict[str, bytes]:
        """Files of the root directory as stored (no replay), by name; missing ones are left out."""

    @abstractmethod
    def mkfs_args(self, target: str, seed: Path, label: str) -> list[str]:
        """mkfs for TARGET with SEED's files in the root directory (without a mount)."""

    def mkfs(self, target: str, seed: Path, label: str) -> None:
        r = run(self.mkfs_args(target, seed, self.label(label)), self.package)
        if r.returncode != 0:
            raise FsCheckError(f"mkfs.{self.name} {target} failed: {' '.join(lines_of(r.stderr)[-3:])}")


class Ext4(Filesystem):
    name = "ext4"
    package = "e2fsprogs"
    noise = (r"^Pass \d", r"^e2fsck \d", r": \d+/\d+ files .* blocks$")

    def recovery(self, target: str) -> Recovery:
        r = run(["dumpe2fs", "-h", target], self.package)
        feats = next((ln.split(":", 1)[1].split() for ln in r.stdout.splitlines()
                      if ln.startswith("Filesystem features:")), None)
        if r.returncode != 0 or feats is None:
            raise FsCheckError(f"{target}: no ext2/3/4 filesystem ({' '.join(lines_of(r.stderr)[-1:])})")
        needed = "needs_recovery" in feats
        return Recovery(needed, f"dumpe2fs -h: {'' if needed else 'no '}needs_recovery feature")

    def check_args(self, target: str, *, image: bool) -> list[str]:
        return ["e2fsck", "-fn", target]

    def read_files(self, target: str, names: list[str]) -> dict[str, bytes]:
        out = {}
        for name in names:
            r = run(["debugfs", "-R", f"cat /{name}", target], self.package, binary=True)
            err = r.stderr.decode("utf-8", "replace")
            if r.returncode == 0 and "not found" not in err and "not a directory" not in err:
                out[name] = r.stdout
        return out

    def mkfs_args(self, target: str, seed: Path, label: str) -> list[str]:
        return ["mkfs.ext4", "-F", "-q", "-L", label, "-d", str(seed), target]


# "data offset 0 startblock 24 (0/24) count 733 flag 0": file block, AG/AG block, length, unwritten flag
_BMAP = re.compile(r"data offset (\d+) startblock \d+ \((\d+)/(\d+)\) count (\d+) flag (\d+)")


def xfs_extents(text: str) -> list[tuple[int, int, int, int, bool]]:
    """xfs_db bmap lines as (file block, AG, AG block, blocks, unwritten)."""
    return [(int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5] != "0") for m in _BMAP.finditer(text)]


def xfs_fields(text: str) -> dict[str, int]:
    """xfs_db "name = value" lines with integer values."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^([\w.]+) = (\d+)$", text, flags=re.MULTILINE)}


def xfs_assemble(dev: BinaryIO, extents: list[tuple[int, int, int, int, bool]], size: int, bs: int,
                 agblocks: int) -> bytes:
    """A file's bytes from its extents: each at its file offset, read from AG * agblocks + AG block;
    holes and unwritten (preallocated) extents read as zeros, as the kernel returns them."""
    data = bytearray(size)
    for fblock, ag, agblock, count, unwritten in extents:
        start = fblock * bs
        if unwritten or start >= size:
            continue
        dev.seek((ag * agblocks + agblock) * bs)
        chunk = dev.read(min(count * bs, size - start))
        data[start:start + len(chunk)] = chunk
    return bytes(data)


class Xfs(Filesystem):
    name = "xfs"
    package = "xfsprogs"
    min_mb = 300
    default_mb = 320
    label_max = 12
    noise = (r"^Phase \d", r"^\s+- ", r"^No modify flag set", r"Cannot get host filesystem geometry",
             r"^Repair may fail if there is a sector size", r"^the image and the host filesystem")

    def label(self, text: str) -> str:
        return text.replace("-", "")[: self.label_max]

    def recovery(self, target: str) -> Recovery:
        r = run(["xfs_logprint", "-t", target], self.package)
        m = re.search(r"log tail: (\d+) head: (\d+) state: <(\w+)>", r.stdout)
        if m is None:
            raise FsCheckError(f"{target}: no xfs filesystem (xfs_logprint -t found no log)")
        return Recovery(m[3] != "CLEAN", f"xfs_logprint -t: log tail {m[1]} head {m[2]} state <{m[3]}>")

    def check_args(self, target: str, *, image: bool) -> list[str]:
        return ["xfs_repair", "-n", *(["-f"] if image else []), target]

    def read_files(self, target: str, names: list[str]) -> dict[str, bytes]:
        out = {}
        for name in names:
            r = run(["xfs_db", "-r", "-c", f"path /{name}", "-c", "bmap", "-c", "print core.size",
                     "-c", "sb 0", "-c", "print blocksize agblocks", target], self.package)
            if r.returncode != 0:
                continue
            f = xfs_fields(r.stdout)
            size, bs, agblocks = f.get("core.size"), f.get("blocksize"), f.get("agblocks")
            if size is None or not bs or not agblocks:
                continue
            with open(target, "rb") as dev:
                data = xfs_assemble(dev, xfs_extents(r.stdout), size, bs, agblocks)
            out[name] = data
        return out

    def mkfs_args(self, target: str, seed: Path, label: str) -> list[str]:
        proto = seed.parent / f"{seed.name}.proto"
        entries = "".join(f"{p.name} ---644 0 0 {p}\n" for p in sorted(seed.iterdir()) if p.is_file())
        proto.write_text(f"bootkit\n0 0\nd--755 0 0\n{entries}$\n")
        return ["mkfs.xfs", "-f", "-q", "-L", label, "-p", str(proto), target]


class Btrfs(Filesystem):
    name = "btrfs"
    package = "btrfs-progs"
    min_mb = 114
    default_mb = 256
    label_max = 255
    noise = (r"^Opening filesystem to check", r"^Checking filesystem on", r"^UUID: ", r"^\[\d/\d\] ",
             r"^found \d+ bytes used", r"^total ", r"^btree space waste", r"^file data blocks allocated",
             r"^\s*referenced \d+")

    def recovery(self, target: str) -> Recovery:
        r = run(["btrfs", "inspect-internal", "dump-super", target], self.package)
        m = re.search(r"^log_root\s+(\d+)$", r.stdout, flags=re.MULTILINE)
        if r.returncode != 0 or m is None or "bad magic" in r.stdout:
            raise FsCheckError(f"{target}: no btrfs superblock ({' '.join(lines_of(r.stderr, r.stdout)[-1:])})")
        return Recovery(m[1] != "0", f"btrfs inspect-internal dump-super: log_root {m[1]}")

    def check_args(self, target: str, *, image: bool) -> list[str]:
        return ["btrfs", "check", "--readonly", target]

    def read_files(self, target: str, names: list[str]) -> dict[str, bytes]:
        regex = "^/(|" + "|".join(re.escape(n) for n in names) + ")$"
        with tempfile.TemporaryDirectory(prefix="bootkit-btrfs-restore-") as d:
            run(["btrfs", "restore", "-i", "--path-regex", regex, target, d], self.package)
            return {n: (Path(d) / n).read_bytes() for n in names if (Path(d) / n).is_file()}

    def mkfs_args(self, target: str, seed: Path, label: str) -> list[str]:
        return ["mkfs.btrfs", "-f", "-q", "-L", label, "-r", str(seed), target]


FILESYSTEMS: dict[str, Filesystem] = {fs.name: fs for fs in (Ext4(), Xfs(), Btrfs())}


def filesystem(name: str) -> Filesystem:
    """The `Filesystem` for an fstab type (FsCheckError naming the supported ones otherwise)."""
    try:
        return FILESYSTEMS[name]
    except KeyError:
        raise FsCheckError(f"filesystem type {name!r} has no check here: use one of "
                           f"{', '.join(FILESYSTEMS)}") from None
