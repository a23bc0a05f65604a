"""The network-entry rule and `-N` selection for list, fsck and mount (all host-side, --dry-run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fstab_tools.cli import main
from fstab_tools.fstab import Entry
from fstab_tools.netfs import NETWORK_FSTYPES, is_network, is_network_fstype, mount_options

DATA = Path(__file__).parent / "data" / "fstab"
EMPTY_MOUNTINFO = "1 0 0:1 / / rw - rootfs rootfs rw\n"


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("opt", ["net", "_netdev"])
def test_net_and__netdev_options_make_a_network_entry(opt: str) -> None:
    assert is_network(Entry("/dev/sdb1", "/srv", "ext4", ("rw", opt)))


@pytest.mark.parametrize("opt", ["netdev", "_netdevice", "network", "nett", "_net", "x-net"])
def test_options_that_merely_start_like_net_do_not_count(opt: str) -> None:
    assert not is_network(Entry("/dev/sdb1", "/srv", "ext4", ("rw", opt)))


@pytest.mark.parametrize("fstype", ["nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "fuse.sshfs", "sshfs"])
def test_documented_network_fstypes_are_network_entries_without_options(fstype: str) -> None:
    assert is_network_fstype(fstype)
    assert is_network(Entry("srv:/x", "/mnt", fstype, ("defaults",)))


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "tmpfs", "fuse", "fuse.ntfs-3g", "nfsd", "9p"])
def test_local_fstypes_are_not_network(fstype: str) -> None:
    assert not is_network_fstype(fstype)


def test_the_network_fstype_list_is_in_the_help(capsys) -> None:
    code, out, _ = run(capsys, ["fstab", "--help"])
    assert code == 0
    flat = " ".join(out.split())
    for fstype in NETWORK_FSTYPES:
        assert fstype in flat


def test_net_is_stripped_for_mount_and_rq_becomes_rw() -> None:
    e = Entry("/dev/sdb1", "/srv", "ext4", ("rq", "net", "_netdev", "nodev"))
    assert mount_options(e) == ["rw", "_netdev", "nodev"]


def test_list_without_N_shows_local_entries_as_fstab_lines(capsys) -> None:
    code, out, err = run(capsys, ["fstab", "list", "--fstab", str(DATA / "openbsd.fstab")])
    assert code == 0 and err == ""
    assert [ln.split()[1] for ln in out.splitlines()] == ["none", "/", "/home", "/tmp", "/usr", "/var"]


def test_list_with_N_shows_only_network_entries_as_json(capsys) -> None:
    code, out, _ = run(capsys, ["fstab", "list", "-N", "--json", "--fstab", str(DATA / "openbsd.fstab")])
    assert code == 0
    rows = json.loads(out)
    assert [r["target"] for r in rows] == ["/srv/iscsi", "/mnt/export"]
    assert set(rows[0]) == {"source", "target", "fstype", "options", "freq", "passno", "net", "noauto", "line"}
    assert rows[0]["options"] == ["rw", "net", "nodev", "nosuid"] and rows[0]["net"] is True
    assert rows[0]["line"] == 8 and rows[0]["passno"] == 2


def test_list_json_target_is_unescaped(capsys) -> None:
    _, out, _ = run(capsys, ["fstab", "list", "-N", "--json", "--fstab", str(DATA / "escapes.fstab")])
    assert [r["target"] for r in json.loads(out)] == ["/mnt/back\\slash"]


def test_fsck_selection_splits_on_N(capsys, tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    for name in ("sda1", "sdb1", "sdc1"):
        (tmp_path / name).write_bytes(b"")
    fstab.write_text(
        f"{tmp_path}/sda1 / ext4 defaults 0 1\n"
        f"{tmp_path}/sdb1 /srv/iscsi ext4 _netdev 0 2\n"
        f"{tmp_path}/sdc1 /data ext4 net 0 2\n"
        f"{tmp_path}/sdc1 /skip ext4 _netdev 0 0\n"
    )
    base = ["fsck", "-p", "--dry-run", "--json", "--fstab", str(fstab)]
    local = json.loads(run(capsys, base)[1])
    net = json.loads(run(capsys, [*base[:1], "-N", *base[1:]])[1])
    assert [c["target"] for c in local["checks"]] == ["/"]
    assert [c["target"] for c in net["checks"]] == ["/srv/iscsi", "/data"]


def test_mount_selection_splits_on_N(capsys, tmp_path: Path) -> None:
    (tmp_path / "mountinfo").write_text(EMPTY_MOUNTINFO)
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "tmpfs /tmp tmpfs defaults 0 0\n"
        "srv:/export /mnt/nfs nfs defaults 0 0\n"
        "tmpfs /net-tmp tmpfs net 0 0\n"
    )
    base = ["--dry-run", "--json", "--fstab", str(fstab), "--mountinfo", str(tmp_path / "mountinfo")]
    local = json.loads(run(capsys, ["mount", "-a", *base])[1])
    net = json.loads(run(capsys, ["mount", "-a", "-N", *base])[1])
    assert [m["target"] for m in local["mounts"]] == ["/tmp"]
    assert [m["target"] for m in net["mounts"]] == ["/mnt/nfs", "/net-tmp"]
    assert net["mounts"][1]["command"] == ["mount", "-t", "tmpfs", "tmpfs", "/net-tmp"]


def test_openbsd_xx_lines_are_never_selected(capsys) -> None:
    _, out, _ = run(capsys, ["fstab", "list", "--json", "--fstab", str(DATA / "openbsd.fstab")])
    assert "/usr/obj" not in [r["target"] for r in json.loads(out)]


CORPUS_SPLIT = {
    "debian.fstab": (["/", "/boot/efi", "none", "/media/cdrom0"], []),
    "ubuntu.fstab": (["/", "/boot", "none"], []),
    "openbsd.fstab": (["none", "/", "/home", "/tmp", "/usr", "/var"], ["/srv/iscsi", "/mnt/export"]),
    "iscsi.fstab": (["/", "/srv/scratch", "/srv/typo"], ["/srv/store", "/srv/store/cache"]),
    "escapes.fstab": (["/mnt/my disk", "/mnt/tab\there", "/mnt/not\\escaped"], ["/mnt/back\\slash"]),
    "four_field.fstab": (["/proc", "/run/shm", "/data", "/srv"], []),
    "tabs.fstab": (["/", "/home", "/var"], []),
}


@pytest.mark.parametrize("name", sorted(CORPUS_SPLIT))
def test_corpus_files_split_into_local_and_network_entries(name: str, capsys) -> None:
    local, net = CORPUS_SPLIT[name]
    for flag, want in (([], local), (["-N"], net)):
        code, out, err = run(capsys, ["fstab", "list", *flag, "--json", "--fstab", str(DATA / name)])
        assert code == 0 and err == ""
        assert [r["target"] for r in json.loads(out)] == want
