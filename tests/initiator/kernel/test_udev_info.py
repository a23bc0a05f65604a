"""The udev contract's daemon side: the info file, the change events and the choice between udev's links
and the daemon's own. udev itself runs only in the Debian guest (tests/test_systemd_proof_vm.py); here the
files are written under a temporary /run and /sys/block."""

from __future__ import annotations

import pytest

from initiator.kernel import udev_info


def test_names_escape_as_udev_does_and_keep_the_identifier_raw():
    assert udev_info.stable_name("iqn.x:a b", 2) == "iqn.x:a b-lun2"  # the netlink identifier
    assert udev_info.link_name("iqn.x:a b", 2) == "iqn.x:a_b-lun2"
    assert udev_info.link_path("iqn.2026-11.org.example:data", 1) == \
        "/dev/disk/by-iscsi/iqn.2026-11.org.example:data-lun1"
    with pytest.raises(ValueError):
        udev_info.stable_name("iqn.x:a", -1)


def test_the_rule_is_counted_only_where_udevd_runs_and_the_rule_is_installed(tmp_path):
    control, rules = tmp_path / "control", tmp_path / "rules.d"
    rules.mkdir()
    assert not udev_info.udev_names(str(control), (str(rules),))
    control.write_text("")
    assert not udev_info.udev_names(str(control), (str(rules),))      # udevd, but no rule: our own links
    (rules / udev_info.RULES_NAME).write_text("# rule\n")
    assert udev_info.udev_names(str(control), (str(tmp_path / "none"), str(rules)))


def _fake_block(tmp_path, name: str, parts: int):
    base = tmp_path / "sys" / name
    base.mkdir(parents=True)
    (base / "uevent").write_text("")
    for i in range(1, parts + 1):
        (base / f"{name}p{i}").mkdir()
        (base / f"{name}p{i}" / "uevent").write_text("")
    return tmp_path / "sys"


def test_announce_writes_the_file_then_a_change_event_on_the_disk_and_each_partition(tmp_path):
    sys_block = _fake_block(tmp_path, "nbd3", 2)
    info = tmp_path / "run"
    assert udev_info.announce("nbd3", "iqn.x:t", 1, str(info), sys_block) == []
    assert (info / "nbd3").read_text() == udev_info.info_text("iqn.x:t", 1)
    assert [p.read_text() for p in udev_info.uevent_files("nbd3", sys_block)] == ["change"] * 3
    assert [p.parent.name for p in udev_info.uevent_files("nbd3", sys_block)] == ["nbd3", "nbd3p1", "nbd3p2"]
    assert sorted(p.name for p in info.iterdir()) == ["nbd3"]  # no temporary file left
    for p in udev_info.uevent_files("nbd3", sys_block):
        p.write_text("")
    assert udev_info.withdraw("nbd3", str(info), sys_block) == []
    assert not (info / "nbd3").exists()
    assert [p.read_text() for p in udev_info.uevent_files("nbd3", sys_block)] == ["change"] * 3
    assert udev_info.withdraw("nbd3", str(info), sys_block) == []  # already gone: fine


def test_a_failed_trigger_is_reported_not_raised(tmp_path):
    problems = udev_info.trigger("nbd9", tmp_path)
    assert len(problems) == 1 and "nbd9/uevent" in problems[0]


@pytest.mark.parametrize("bad", ["", ".", "..", "../etc", "nbd0/x", "a b"])
def test_kernel_names_are_bare_names(tmp_path, bad):
    with pytest.raises(ValueError):
        udev_info.info_path(bad)
    with pytest.raises(ValueError):
        udev_info.trigger(bad, tmp_path)


def test_a_partition_gone_while_triggering_is_not_a_failure(tmp_path, monkeypatch):
    sys_block = _fake_block(tmp_path, "nbd4", 1)
    listed = udev_info.uevent_files("nbd4", sys_block)
    (sys_block / "nbd4" / "nbd4p1" / "uevent").unlink()
    (sys_block / "nbd4" / "nbd4p1").rmdir()          # a detach dropped it after the listing
    monkeypatch.setattr(udev_info, "uevent_files", lambda name, sb=None: listed)
    assert udev_info.trigger("nbd4", sys_block) == []
    assert (sys_block / "nbd4" / "uevent").read_text() == "change"
