"""vm/fscheck: read-only checks of ext4, xfs and btrfs images with their own tools, and the format rule.

Every image here is a regular file made by mkfs (with a seeded payload, no mount); damage is written into
the file at a known metadata block, so each checker has something real to find.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import pytest

from vm.fscheck import FsCheckError
from vm.fscheck.filesystems import FILESYSTEMS, filesystem, xfs_assemble, xfs_extents, xfs_fields
from vm.fscheck.host import check, create
from vm.fscheck.probe import Content, Refused, decide, parse_export, probe, require

TYPES = sorted(FILESYSTEMS)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """One fresh image per type with its payload digest (made once; tests copy before damaging)."""
    d = tmp_path_factory.mktemp("fs")
    return {t: (d / f"{t}.img", create(d / f"{t}.img", t, payload_mb=1)) for t in TYPES}


@pytest.mark.parametrize("fstype", TYPES)
def test_a_fresh_image_is_clean_and_holds_its_payload(images, fstype):
    path, digest = images[fstype]
    v = check(path, fstype, expected=digest)
    assert v.clean and not v.damaged, v
    assert v.payload_ok is True and v.payload_sha256 == digest == v.recorded_sha256
    assert not v.needs_recovery and v.exit == 0 and v.failures("x") == []
    assert v.check.startswith("host: ") and v.fstype == fstype


@pytest.mark.parametrize("fstype", TYPES)
def test_another_payload_than_the_writer_reported_is_damage(images, fstype):
    path, _ = images[fstype]
    v = check(path, fstype, expected="0" * 64)
    assert v.clean and v.damaged and v.payload_ok is False
    assert any("does not hold the payload" in f for f in v.failures("cycle 2"))


def _corrupt(fstype: str, path: Path) -> None:
    """Damage one metadata structure: ext4 clears the payload's inode; xfs zeroes AG 1's AGF magic; btrfs
    overwrites both copies of the root tree's block (DUP metadata) mid-block."""
    if fstype == "ext4":
        subprocess.run(["debugfs", "-w", "-R", "clri <12>", str(path)], check=True, capture_output=True)
    elif fstype == "xfs":
        out = subprocess.run(["xfs_db", "-r", "-c", "agf 1", "-c", "daddr", str(path)], check=True,
                             capture_output=True, text=True).stdout  # "current daddr is 163841"
        daddr = int(out.split()[-1])
        with open(path, "r+b") as f:
            f.seek(daddr * 512)
            f.write(b"\0\0\0\0")
    else:
        out = subprocess.run(["btrfs", "inspect-internal", "dump-super", str(path)], check=True,
                             capture_output=True, text=True).stdout
        root = next(int(ln.split()[1]) for ln in out.splitlines() if ln.split()[:1] == ["root"])
        maps = subprocess.run(["btrfs-map-logical", "-l", str(root), str(path)], check=True,
                              capture_output=True, text=True).stdout
        with open(path, "r+b") as f:
            for line in maps.splitlines():
                words = line.split()
                if "physical" in words:
                    f.seek(int(words[words.index("physical") + 1]) + 100)
                    f.write(b"\xa5" * 200)


@pytest.mark.parametrize("fstype", TYPES)
def test_damaged_metadata_is_found_by_the_types_own_checker(images, fstype, tmp_path):
    src, _ = images[fstype]
    path = tmp_path / src.name
    path.write_bytes(src.read_bytes())
    _corrupt(fstype, path)
    v = check(path, fstype)
    assert v.exit != 0 and not v.clean and v.damaged
    assert v.problems, v.tail
    assert any(f"{v.tool} exit {v.exit}" in f for f in v.failures("cycle 1"))


def test_the_checker_of_the_wrong_type_says_so(images):
    path, _ = images["ext4"]
    for wrong in ("xfs", "btrfs"):
        with pytest.raises(FsCheckError, match=f"no {wrong}"):
            check(path, wrong)
    with pytest.raises(FsCheckError, match="has no check here"):
        filesystem("reiserfs")


def test_create_never_replaces_a_file(images, tmp_path):
    path = tmp_path / "mine.img"
    path.write_bytes(b"user data")
    with pytest.raises(FsCheckError, match="exists"):
        create(path, "ext4")
    assert path.read_bytes() == b"user data"
    with pytest.raises(FsCheckError, match="at least 300 MiB"):
        create(tmp_path / "small.img", "xfs", size_mb=64)


def test_xfs_bmap_lines_are_read_as_extents():
    text = ("data offset 0 startblock 24 (0/24) count 733 flag 0\n"
            "data offset 733 startblock 32770 (1/2) count 5 flag 1\n")
    assert xfs_extents(text) == [(0, 0, 24, 733, False), (733, 1, 2, 5, True)]
    assert xfs_fields("core.size = 3000000\nblocksize = 4096\nuuid = x\n") == {"core.size": 3000000,
                                                                               "blocksize": 4096}


def test_xfs_extents_are_laid_at_their_file_offsets_from_their_allocation_groups():
    """Blocks of 4 bytes, AGs of 4 blocks: extent (file block 0, AG 1 block 2, 1 block), a hole at file
    block 1, an unwritten extent at 2, and (file block 3, AG 0 block 1) cut at the file's size."""
    image = bytes(range(32)) * 2  # 64 bytes = 16 blocks = 4 AGs
    extents = [(0, 1, 2, 1, False), (2, 2, 0, 1, True), (3, 0, 1, 2, False)]
    data = xfs_assemble(io.BytesIO(image), extents, 14, 4, 4)
    assert data == image[24:28] + bytes(4) + bytes(4) + image[4:6]


# ------------------------------------------------------------------------------- what a LUN holds
def test_probe_names_what_is_there(images, tmp_path):
    for t in TYPES:
        c = probe(images[t][0])
        assert c.type == t and not c.empty and t in c.describe()
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    assert probe(blank).empty
    parted = tmp_path / "parted.img"
    mbr = bytearray(4 << 20)  # a DOS partition table by hand: one Linux partition from sector 2048
    mbr[446:462] = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (6144).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    parted.write_bytes(bytes(mbr))
    c = probe(parted)
    assert c.fields.get("PTTYPE") == "dos" and not c.empty and "partition table" in c.describe()


def test_parse_export_drops_devname():
    assert parse_export("DEVNAME=x.img\nTYPE=xfs\nUSAGE=filesystem\n") == {"TYPE": "xfs", "USAGE": "filesystem"}


XFS = Content({"TYPE": "xfs", "USAGE": "filesystem", "LABEL": "data"})


@pytest.mark.parametrize("content, fstype, created, allow, action", [
    (Content(), "ext4", True, False, "format"),       # the test made it: its to format
    (XFS, "xfs", False, False, "reuse"),              # holds the fstab's type: used as it is
    (XFS, "ext4", False, False, "refuse"),            # holds another filesystem: never destroyed
    (Content(), "ext4", False, False, "refuse"),      # blank, but not ours: --format needed
    (Content({"PTTYPE": "gpt"}), "ext4", False, False, "refuse"),
    (Content({"TYPE": "ext4"}, ambivalent=True), "ext4", False, False, "refuse"),
    (XFS, "ext4", False, True, "format"),             # --format: the admin allows it
])
def test_the_format_rule(content, fstype, created, allow, action):
    d = decide(content, fstype, created=created, allow_format=allow, name="LUN")
    assert d.action == action, d.reason


def test_a_lun_holding_a_filesystem_is_refused_without_format(images, tmp_path):
    """The safety rule on a real image: an xfs LUN, an ext4 fstab line, no --format: refused, untouched."""
    path, _ = images["xfs"]
    before = sha(path)
    d = decide(probe(path), "ext4", created=False, allow_format=False, name=str(path))
    with pytest.raises(Refused, match=r"holds xfs \(filesystem, .*\), not ext4: the test would destroy it"):
        require(d)
    assert "--format" in d.reason and sha(path) == before
    assert require(decide(probe(path), "ext4", created=False, allow_format=True, name="x")).action == "format"
