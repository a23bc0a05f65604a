"""`bootkit fstab verify`: the warnings that point at known boot failures, and its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fstab_tools.cli import main
from fstab_tools.fstab import Fstab
from fstab_tools.verify import verify

DATA = Path(__file__).parent / "data" / "fstab"


def messages(text: str) -> list[tuple[int, str, str]]:
    return [(f.lineno, f.severity, f.message) for f in verify(Fstab.parse(text))]


def test_iscsi_corpus_gets_the_expected_warnings(capsys) -> None:
    code = main(["fstab", "verify", "--fstab", str(DATA / "iscsi.fstab")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    path = DATA / "iscsi.fstab"
    assert any(ln.startswith(f"{path}:7: warning: /dev/nbd1 looks like an iSCSI/NBD disk") for ln in out)
    assert f"{path}:9: warning: option 'netdev' is not '_netdev': did you mean '_netdev'?" in out
    assert any(ln.startswith(f"{path}:9: warning: /dev/disk/by-path/ip-10.0.2.2") for ln in out)
    assert not any(f"{path}:3:" in ln or f"{path}:4:" in ln for ln in out)  # _netdev,nofail: fine


@pytest.mark.parametrize(
    "source", ["/dev/disk/by-iscsi/iqn.2004-04.org.x:a-lun0", "/dev/nbd0", "/dev/nbd12p1",
               "/dev/disk/by-path/ip-10.0.2.2:3260-iscsi-iqn.2004-04.org.x:a-lun-0"],
)
def test_iscsi_looking_source_without_netdev_is_warned(source: str) -> None:
    found = messages(f"{source} /srv ext4 defaults 0 2\n")
    assert [m for m in found if "looks like an iSCSI/NBD disk" in m[2]]
    assert not [m for m in messages(f"{source} /srv ext4 _netdev,nofail 0 2\n") if "iSCSI" in m[2]]
    assert not [m for m in messages(f"{source} /srv ext4 net,nofail 0 2\n") if "iSCSI" in m[2]]


def test_network_entry_without_nofail_would_block_boot() -> None:
    assert messages("srv:/e /mnt nfs defaults 0 0\n") == [
        (1, "warning", "network entry /mnt has no nofail: boot waits for it when the network or target is down")
    ]
    assert messages("srv:/e /mnt nfs nofail 0 0\n") == []
    assert messages("srv:/e /mnt nfs noauto 0 0\n") == []


@pytest.mark.parametrize("fstype", ["nfs", "tmpfs", "proc", "overlay"])
def test_passno_on_a_type_without_fsck_helper_is_warned(fstype: str) -> None:
    found = messages(f"src /mnt {fstype} nofail 0 2\n")
    assert (1, "warning", f"passno 2 on {fstype}, which has no fsck helper") in found


def test_passno_on_an_uninstalled_exotic_type_is_warned() -> None:
    assert (1, "warning", "passno 1 on nosuchfs, but no fsck.nosuchfs is installed") in messages(
        "/dev/x /mnt nosuchfs defaults 0 1\n"
    )


def test_errors_make_verify_exit_1_and_are_file_line_prefixed(tmp_path: Path, capsys) -> None:
    f = tmp_path / "fstab"
    f.write_text("/dev/a / ext4 defaults 0 1\n/dev/b relative ext4 defaults 0 2\nbroken\n/dev/c / ext4 ro 0 0\n")
    code = main(["fstab", "verify", "--json", "--fstab", str(f)])
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert code == 1 and result["exit"] == 1 and err == ""
    errors = [(x["line"], x["message"]) for x in result["findings"] if x["severity"] == "error"]
    assert errors == [
        (2, "target 'relative' is not an absolute path"),
        (3, "missing target field (need at least source, target and fstype)"),
        (4, "/ is also mounted by line 1"),
    ]


def test_clean_corpus_files_verify_without_errors(capsys) -> None:
    for name in ("debian.fstab", "ubuntu.fstab", "tabs.fstab"):
        assert main(["fstab", "verify", "--fstab", str(DATA / name)]) == 0, name
    capsys.readouterr()


def test_ordering_hazards_are_warned() -> None:
    found = messages("/dev/a /srv/x/y ext4 defaults 0 2\n/dev/b /srv/x ext4 defaults 0 2\n")
    assert (1, "warning", "/srv/x/y comes before its parent /srv/x (line 2): mount -a would hide it") in found
    found = messages("/dev/nbd0 /srv ext4 _netdev,nofail 0 2\n/dev/sdb1 /srv/local ext4 defaults 0 2\n")
    assert any(m[0] == 2 and "is inside network /srv" in m[2] for m in found)


def test_openbsd_duid_is_flagged_as_unresolvable_on_linux() -> None:
    found = messages("0123456789abcdef.a / ffs rw 1 1\n")
    assert (1, "warning", "0123456789abcdef.a is an OpenBSD disklabel UID: Linux cannot resolve it") in found
