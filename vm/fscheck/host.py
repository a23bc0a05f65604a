"""Check, create and seed a LUN's filesystem on an image file (or a block device in a guest), unmounted.

`check` is the proof's verdict on a LUN between boots: the type's "needs recovery" state, its read-only
checker, and the payload read back without replay against the hash stored beside it (and, when known,
the one the guest's writer reported). `create` makes a new sparse image holding a fresh filesystem with a
first payload, so the first boot has one to verify; it never touches an existing file (see `probe` for
when a test may format something it did not create).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from vm.fscheck.filesystems import filesystem
from vm.fscheck.verdict import FsCheckError, FsVerdict

PAYLOAD = "payload.bin"
PAYLOAD_HASH = "payload.sha256"
LABEL = "bootkit-proof"


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


def check(target: str | Path, fstype: str, expected: str | None = None, where: str = "host") -> FsVerdict:
    """The verdict on TARGET's FSTYPE filesystem; ``expected``: the digest the guest's writer reported
    (the payload is ok only if it is that one: a filesystem whose last metadata is only in its journal
    still shows the previous payload here)."""
    fs = filesystem(fstype)
    target = str(target)
    try:
        image = stat.S_ISREG(os.stat(target).st_mode)
    except OSError as e:
        raise FsCheckError(f"{target}: {e.strerror}") from None
    rec = fs.recovery(target)
    checked = fs.check(target, image=image)
    files = fs.read_files(target, [PAYLOAD, PAYLOAD_HASH])
    data, recorded = files.get(PAYLOAD), recorded_hash(files.get(PAYLOAD_HASH))
    actual = hashlib.sha256(data).hexdigest() if data is not None else None
    if data is None and recorded is None:
        ok = None
    else:
        ok = actual is not None and actual == recorded and expected in (None, actual)
    return FsVerdict(rec.needed, checked.exit, checked.tail, actual, recorded, ok, expected, fs.name, where,
                     checked.tool, target, rec.evidence, checked.problems)


def seed_dir(root: Path, payload_mb: int) -> str:
    """Write a random payload and its sha256 line into ROOT; returns the digest."""
    data = os.urandom(payload_mb << 20)
    (root / PAYLOAD).write_bytes(data)
    (root / PAYLOAD_HASH).write_text(sha256_line(data))
    return hashlib.sha256(data).hexdigest()


def format_seeded(target: str | Path, fstype: str, payload_mb: int = 8, label: str = LABEL) -> str:
    """mkfs FSTYPE on TARGET (an image file or a device: whatever it held is gone) with a first payload in
    its root directory. Returns the payload's digest. Only for targets the caller may destroy."""
    fs = filesystem(fstype)
    with tempfile.TemporaryDirectory(prefix="bootkit-seed-") as d:
        seed = Path(d) / "root"
        seed.mkdir()
        digest = seed_dir(seed, payload_mb)
        fs.mkfs(str(target), seed, label)
    return digest


def create(path: Path, fstype: str, size_mb: int | None = None, payload_mb: int = 8) -> str:
    """Make PATH, a new sparse image (the type's default size) with a seeded FSTYPE filesystem; returns
    the payload's digest. An existing PATH is an error: this never formats a file it did not create."""
    fs = filesystem(fstype)
    size_mb = size_mb or fs.default_mb
    if size_mb < fs.min_mb:
        raise FsCheckError(f"{fstype} needs at least {fs.min_mb} MiB, not {size_mb}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    with open(tmp, "wb") as f:
        f.truncate(size_mb << 20)
    try:
        digest = format_seeded(tmp, fstype, payload_mb)
        os.link(tmp, path)  # fails if PATH appeared meanwhile: never replace a file we did not make
    except FileExistsError:
        raise FsCheckError(f"{path} exists: this test creates only a new LUN file") from None
    finally:
        tmp.unlink(missing_ok=True)
    return digest
