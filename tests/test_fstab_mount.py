"""`bootkit mount -a` / `umount -a` plans against a fake mountinfo (host-side: --dry-run only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fstab_tools import mount
from fstab_tools.cli import main
from fstab_tools.fstab import Fstab
from fstab_tools.mountinfo import MountinfoError, parse_mountinfo, unmount_order

MOUNTINFO = """\
21 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
22 21 0:5 / /proc rw,nosuid - proc proc rw
30 21 43:0 / /srv/iscsi rw,relatime shared:5 - ext4 /dev/nbd0 rw
31 30 43:0 /sub /srv/iscsi/bind rw - ext4 /dev/nbd0 rw
32 30 0:40 / /srv/iscsi/tmp rw - tmpfs tmpfs rw
36 31 0:41 / /srv/iscsi/bind/deep rw - tmpfs tmpfs rw
33 21 8:17 / /data rw - ext4 /dev/sdb1 rw
34 21 0:50 / /mnt/nfs rw - nfs srv:/export rw,vers=4.2
35 21 43:32 / /mnt/x\\040y rw - ext4 /dev/nbd1 rw
"""
FSTAB = """\
/dev/vda / ext4 defaults 0 1
/dev/sdb1 /data ext4 defaults 0 2
/dev/nbd0 /srv/iscsi ext4 _netdev,nofail 0 2
srv:/export /mnt/nfs nfs soft 0 0
/dev/nbd1 /mnt/x\\040y ext4 net,nofail 0 2
tmpfs /scratch tmpfs noauto 0 0
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "fstab").write_text(FSTAB)
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    return tmp_path / "fstab", tmp_path / "mountinfo"


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main(argv)
    out, _ = capsys.readouterr()
    return code, json.loads(out)


def test_mountinfo_is_parsed_with_escapes_and_optional_fields() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.target for m in mounts][-1] == "/mnt/x y"
    assert mounts[2].source == "/dev/nbd0" and mounts[2].fstype == "ext4" and mounts[2].parent_id == 21


def test_a_broken_mountinfo_line_is_a_file_line_error() -> None:
    with pytest.raises(MountinfoError, match="^mi:2: not a mountinfo line$"):
        parse_mountinfo("21 1 252:0 / / rw - ext4 /dev/vda rw\ngarbage\n", "mi")


def test_children_are_unmounted_before_parents() -> None:
    order = [m.target for m in unmount_order(parse_mountinfo(MOUNTINFO), ["/srv/iscsi"])]
    assert order.index("/srv/iscsi/bind/deep") < order.index("/srv/iscsi/bind") < order.index("/srv/iscsi")
    assert order.index("/srv/iscsi/tmp") < order.index("/srv/iscsi")
    assert set(order) == {"/srv/iscsi", "/srv/iscsi/bind", "/srv/iscsi/tmp", "/srv/iscsi/bind/deep"}


def test_root_does_not_drag_every_mount_along() -> None:
    order = [m.target for m in unmount_order(parse_mountinfo(MOUNTINFO), ["/"])]
    assert order == ["/"]


def test_umount_N_plan_takes_network_mounts_children_first(files, capsys) -> None:
    fstab, mi = files
    code, plan = run_json(capsys, ["umount", "-a", "-N", "--dry-run", "--json", "--fstab", str(fstab),
                                   "--mountinfo", str(mi)])
    targets = [u["target"] for u in plan["unmounts"]]
    assert code == 0 and plan["dry_run"] is True
    for child, parent in [("/srv/iscsi/bind/deep", "/srv/iscsi/bind"), ("/srv/iscsi/bind", "/srv/iscsi"),
                          ("/srv/iscsi/tmp", "/srv/iscsi")]:
        assert targets.index(child) < targets.index(parent)
    assert set(targets) == {"/srv/iscsi", "/srv/iscsi/bind", "/srv/iscsi/tmp", "/srv/iscsi/bind/deep",
                            "/mnt/nfs", "/mnt/x y"}
    first = plan["unmounts"][0]
    assert first["command"] == ["umount", first["target"]]
    assert first["fallback"] == ["mount", "-o", "remount,ro", first["target"]]
    assert first["status"] == "planned"


def test_umount_without_N_leaves_network_mounts_and_proc_alone(files, capsys) -> None:
    fstab, mi = files
    _, plan = run_json(capsys, ["umount", "-a", "--dry-run", "--json", "--fstab", str(fstab),
                                "--mountinfo", str(mi)])
    assert [u["target"] for u in plan["unmounts"]] == ["/data", "/"]


def test_mount_N_skips_what_is_mounted_and_noauto(files, capsys) -> None:
    fstab, mi = files
    code, plan = run_json(capsys, ["mount", "-a", "-N", "--dry-run", "--json", "--fstab", str(fstab),
                                   "--mountinfo", str(mi)])
    assert code == 0
    assert [(m["target"], m["status"]) for m in plan["mounts"]] == [
        ("/srv/iscsi", "skipped"), ("/mnt/nfs", "skipped"), ("/mnt/x y", "skipped")
    ]
    assert plan["mounts"][0]["reason"] == "already mounted (/dev/nbd0 ext4)"


def test_mount_plan_is_in_fstab_order_strips_net_and_resolves_devices(tmp_path: Path, capsys) -> None:
    (tmp_path / "mountinfo").write_text("21 1 252:0 / / rw - ext4 /dev/vda rw\n")
    (tmp_path / "vdc").write_bytes(b"")
    (tmp_path / "fstab").write_text(
        f"{tmp_path}/vdc /srv/b ext4 rw,net,nodev 0 2\n"
        "srv:/e /srv/a nfs4 _netdev,soft 0 0\n"
        "tmpfs /srv/c tmpfs net,noauto 0 0\n"
        f"{tmp_path}/vdd /srv/d auto net 0 0\n"
    )
    code, plan = run_json(capsys, ["mount", "-a", "-N", "--dry-run", "--json", "--fstab", str(tmp_path / "fstab"),
                                   "--mountinfo", str(tmp_path / "mountinfo")])
    m = plan["mounts"]
    assert [x["target"] for x in m] == ["/srv/b", "/srv/a", "/srv/c", "/srv/d"]
    assert m[0]["command"] == ["mount", "-t", "ext4", "-o", "rw,nodev", f"{tmp_path}/vdc", "/srv/b"]
    assert m[0]["options"] == ["rw", "nodev"] and m[0]["device"] == f"{tmp_path}/vdc"
    assert m[1]["command"] == ["mount", "-t", "nfs4", "-o", "_netdev,soft", "srv:/e", "/srv/a"]
    assert (m[2]["status"], m[2]["reason"]) == ("skipped", "noauto")
    assert m[3]["status"] == "missing" and m[3]["command"] is None
    assert code == 32  # dry run: nothing mounted yet, one entry already known to fail


def test_named_target_ignores_the_net_filter_and_noauto(tmp_path: Path, capsys) -> None:
    (tmp_path / "mountinfo").write_text("21 1 252:0 / / rw - ext4 /dev/vda rw\n")
    (tmp_path / "fstab").write_text("tmpfs /srv/c tmpfs net,noauto,size=1m 0 0\n")
    code, plan = run_json(capsys, ["mount", "--dry-run", "--json", "--fstab", str(tmp_path / "fstab"),
                                   "--mountinfo", str(tmp_path / "mountinfo"), "/srv/c"])
    assert code == 0
    assert plan["mounts"][0]["command"] == ["mount", "-t", "tmpfs", "-o", "noauto,size=1m", "tmpfs", "/srv/c"]


def test_unknown_named_target_fails_with_a_message(files, capsys) -> None:
    fstab, mi = files
    code = main(["mount", "--dry-run", "--fstab", str(fstab), "--mountinfo", str(mi), "/nowhere"])
    _, err = capsys.readouterr()
    assert code == 32 and "/nowhere: not found in" in err


def test_mount_without_a_or_targets_is_a_usage_error(files, capsys) -> None:
    fstab, _mi = files
    assert main(["mount", "--dry-run", "--fstab", str(fstab)]) == 1
    assert "give -a or at least one TARGET" in capsys.readouterr().err


@pytest.mark.parametrize(
    "statuses, code",
    [(["mounted", "skipped"], 0), (["failed", "missing"], 32), (["mounted", "failed"], 64),
     (["remounted-ro", "unmounted"], 0), ([], 0)],
)
def test_exit_codes_follow_mount_8(statuses: list[str], code: int) -> None:
    actions = [mount.Action("/x", "s", "ext4", 1, status=s) for s in statuses]
    assert mount.exit_code(actions) == code


def test_a_bad_mountinfo_file_is_a_system_error_not_a_traceback(files, capsys) -> None:
    fstab, mi = files
    mi.write_text("not mountinfo\n")
    assert main(["umount", "-a", "--dry-run", "--fstab", str(fstab), "--mountinfo", str(mi)]) == 2
    assert capsys.readouterr().err == f"bootkit umount: {mi}:1: not a mountinfo line\n"


def test_plan_mount_api_reports_already_mounted_from_mountinfo() -> None:
    fstab = Fstab.parse(FSTAB)
    actions = mount.plan_mount(fstab, parse_mountinfo(MOUNTINFO), net=False)
    assert [(a.target, a.status) for a in actions] == [
        ("/", "skipped"), ("/data", "skipped"), ("/scratch", "skipped")
    ]


def test_umount_of_a_named_mount_point_needs_no_fstab_line_and_takes_children(files, capsys) -> None:
    fstab, mi = files
    fstab.write_text("")
    code, plan = run_json(capsys, ["umount", "--dry-run", "--json", "--fstab", str(fstab), "--mountinfo", str(mi),
                                   "/srv/iscsi/bind"])
    assert code == 0
    assert [u["target"] for u in plan["unmounts"]] == ["/srv/iscsi/bind/deep", "/srv/iscsi/bind"]
    assert plan["unmounts"][1]["line"] is None


def test_umount_of_something_not_mounted_fails_with_32(files, capsys) -> None:
    fstab, mi = files
    code = main(["umount", "--dry-run", "--fstab", str(fstab), "--mountinfo", str(mi), "/nowhere"])
    assert code == 32 and "/nowhere: not mounted" in capsys.readouterr().err
