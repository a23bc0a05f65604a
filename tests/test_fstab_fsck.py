"""`bootkit fsck`: plans, pass order, per-disk parallelism, exit-code ORing and `--wait`.

Host-side only: the CLI runs with --dry-run; real runs go through the Python API against a checker
script (`fsck.bkfake`) that touches no filesystem, so ordering and ORing are proved with real
processes. Real e2fsck runs live in the guest test.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from fstab_tools import fsck
from fstab_tools.cli import main
from fstab_tools.devices import resolve, wait_for, whole_disk
from fstab_tools.fstab import Fstab

FAKE = """#!/bin/sh
# a checker that checks nothing: logs start/end and exits with the code written in the "device".
# With DEVICE.partner naming another device, it waits (up to 5 s) to see that one start: proof that
# the two run at the same time, however loaded the machine is.
for dev; do :; done
name=$(basename "$dev")
echo "start $name $(date +%s.%N)" >> "$FSCK_LOG"
partner=$(cat "$dev.partner" 2>/dev/null)
if [ -n "$partner" ]; then
  i=0
  while ! grep -q "^start $partner " "$FSCK_LOG" && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
  grep -q "^start $partner " "$FSCK_LOG" && echo "met $name $partner" >> "$FSCK_LOG"
fi
sleep 0.1
echo "end $name $(date +%s.%N)" >> "$FSCK_LOG"
exit "$(cat "$dev")"
"""


@pytest.fixture
def fake_fsck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "fsck.bkfake"
    helper.write_text(FAKE)
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FSCK_LOG", str(tmp_path / "log"))
    return tmp_path


def disks(tmp_path: Path, codes: dict[str, int]) -> None:
    for name, code in codes.items():
        (tmp_path / name).write_text(str(code))


def events(tmp_path: Path) -> dict[tuple[str, str], float]:
    out = {}
    for line in (tmp_path / "log").read_text().splitlines():
        kind, name, t = line.split()
        out[(kind, name)] = 0.0 if kind == "met" else float(t)
    return out


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_codes_are_ored_as_fsck_defines() -> None:
    assert fsck.combine([]) == 0
    assert fsck.combine([0, 1, 0]) == 1
    assert fsck.combine([1, 4]) == 5
    assert fsck.combine([4, 8]) == 12
    assert fsck.combine([1, 2, 4, 8, 16, 32]) == 63


def test_a_checker_killed_by_sigint_counts_as_canceled_and_other_signals_as_errors() -> None:
    assert fsck.status_exit(-2) == fsck.EXIT_CANCELED
    assert fsck.status_exit(-9) == fsck.EXIT_ERROR
    assert fsck.status_exit(4) == 4


@pytest.mark.parametrize(
    "device, disk",
    [("/x/sda1", "/x/sda"), ("/x/sda", "/x/sda"), ("/x/nvme0n1p2", "/x/nvme0n1"), ("/x/nbd0p1", "/x/nbd0"),
     ("/x/nbd3", "/x/nbd3"), ("/x/mmcblk0p1", "/x/mmcblk0"), ("/x/vdb", "/x/vdb")],
)
def test_partitions_map_to_their_disk_by_name_when_not_block_devices(device: str, disk: str) -> None:
    assert whole_disk(device) == disk


def test_pass_one_runs_alone_first_then_different_disks_in_parallel(fake_fsck: Path) -> None:
    t = fake_fsck
    disks(t, {"sda1": 0, "sdb1": 1, "sdb2": 0, "sdc1": 4})
    (t / "sdb1.partner").write_text("sdc1")
    (t / "sdc1.partner").write_text("sdb1")
    fstab = Fstab.parse(
        f"{t}/sdb1 /b1 bkfake defaults 0 2\n"
        f"{t}/sda1 / bkfake defaults 0 1\n"
        f"{t}/sdb2 /b2 bkfake defaults 0 2\n"
        f"{t}/sdc1 /c1 bkfake defaults 0 2\n"
    )
    checks = fsck.plan(fstab, net=False, mode="-p")
    assert [[[c.entry.target for c in q] for q in p] for p in fsck.passes(checks)] == [
        [["/"]], [["/b1", "/b2"], ["/c1"]]
    ]
    code = fsck.run(checks)
    ev = events(t)
    assert code == 1 | 4
    assert ev[("end", "sda1")] <= min(ev[("start", n)] for n in ("sdb1", "sdb2", "sdc1"))
    assert ev[("end", "sdb1")] <= ev[("start", "sdb2")]  # one disk: one at a time
    assert ("met", "sdb1") in ev and ("met", "sdc1") in ev  # other disks: at the same time
    assert {c.entry.target: (c.status, c.exit) for c in checks} == {
        "/": ("clean", 0), "/b1": ("repaired", 1), "/b2": ("clean", 0), "/c1": ("errors", 4)
    }


def test_dry_run_json_is_a_plan_and_runs_nothing(fake_fsck: Path, capsys) -> None:
    t = fake_fsck
    disks(t, {"vdb": 0})
    (t / "fstab").write_text(f"{t}/vdb /srv/iscsi bkfake _netdev,nofail 0 2\n")
    code, out, _ = run_cli(capsys, ["fsck", "-N", "-p", "--dry-run", "--json", "--fstab", str(t / "fstab")])
    plan = json.loads(out)
    assert code == 0 and not (t / "log").exists()
    assert plan["dry_run"] is True and plan["net"] is True and plan["exit"] == 0
    (check,) = plan["checks"]
    assert check["target"] == "/srv/iscsi" and check["passno"] == 2 and check["status"] == "planned"
    assert Path(check["command"][0]).name == "fsck.bkfake"
    assert check["command"][1:] == ["-p", f"{t}/vdb"]
    assert check["device"] == f"{t}/vdb" and check["disk"] == f"{t}/vdb"


def test_dry_run_text_prints_one_command_per_check(fake_fsck: Path, capsys) -> None:
    t = fake_fsck
    disks(t, {"vdb": 0})
    (t / "fstab").write_text(f"{t}/vdb /srv bkfake defaults 0 2\n")
    code, out, _ = run_cli(capsys, ["fsck", "-y", "-f", "--dry-run", "--fstab", str(t / "fstab")])
    assert code == 0
    assert out.startswith("pass 2\t/srv\t") and out.rstrip().endswith(f"fsck.bkfake -y -f {t}/vdb")


def test_types_without_a_helper_and_network_types_are_skipped_not_failed(tmp_path: Path, capsys) -> None:
    (tmp_path / "vdb").write_bytes(b"")
    (tmp_path / "fstab").write_text(
        f"{tmp_path}/vdb /a nosuchfs defaults 0 2\nsrv:/x /n nfs _netdev 0 2\n"
    )
    code, out, _ = run_cli(capsys, ["fsck", "-p", "--dry-run", "--json", "--fstab", str(tmp_path / "fstab")])
    assert code == 0
    assert [c["status"] for c in json.loads(out)["checks"]] == ["skipped"]
    code, out, _ = run_cli(capsys, ["fsck", "-N", "-p", "--dry-run", "--json", "--fstab", str(tmp_path / "fstab")])
    assert [(c["status"], c["reason"]) for c in json.loads(out)["checks"]] == [
        ("skipped", "network filesystem: nothing to check")
    ]


def test_passno_zero_swap_and_openbsd_sw_xx_are_not_checked(tmp_path: Path) -> None:
    fstab = Fstab.parse(
        "/dev/a /a ext4 defaults 0 0\n/dev/b none swap sw 0 2\n0123456789abcdef.b none swap sw 0 2\n"
        "/dev/c /c ffs xx 1 2\n/dev/d /d ffs rq 1 2\n"
    )
    assert [e.target for _, e in fsck.selected(fstab, net=False)] == ["/d"]


def test_wait_times_out_with_a_clear_message_and_exit_8(tmp_path: Path, capsys) -> None:
    (tmp_path / "fstab").write_text(f"{tmp_path}/never /srv/iscsi ext4 _netdev 0 2\n")
    start = time.monotonic()
    code, out, err = run_cli(
        capsys, ["fsck", "-N", "-p", "--wait", "0.5", "--dry-run", "--fstab", str(tmp_path / "fstab")]
    )
    assert 0.5 <= time.monotonic() - start < 5
    assert code == 8
    assert "waiting up to 0.5 s for" in err
    assert f"/srv/iscsi: {tmp_path}/never does not exist; device did not appear within 0.5 s" in err
    assert out.startswith("missing\t/srv/iscsi\t")


def test_wait_returns_as_soon_as_a_late_device_appears(tmp_path: Path, capsys) -> None:
    (tmp_path / "fstab").write_text(f"{tmp_path}/late /srv ext4 _netdev 0 2\n")
    timer = threading.Timer(0.3, lambda: (tmp_path / "late").write_bytes(b""))
    timer.start()
    start = time.monotonic()
    try:
        code, out, _ = run_cli(
            capsys, ["fsck", "-N", "-p", "--wait", "20", "--dry-run", "--json", "--fstab", str(tmp_path / "fstab")]
        )
    finally:
        timer.cancel()
    assert time.monotonic() - start < 5
    assert code == 0 and json.loads(out)["checks"][0]["device"] == f"{tmp_path}/late"


def test_a_missing_nofail_device_is_skipped_not_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "fstab").write_text(f"{tmp_path}/never /srv ext4 _netdev,nofail 0 2\n")
    code, out, _ = run_cli(capsys, ["fsck", "-N", "-p", "--dry-run", "--json", "--fstab", str(tmp_path / "fstab")])
    assert code == 0 and json.loads(out)["checks"][0]["status"] == "skipped"


def test_tags_resolve_through_dev_disk_links(tmp_path: Path) -> None:
    by_uuid = tmp_path / "disk" / "by-uuid"
    by_label = tmp_path / "disk" / "by-label"
    by_uuid.mkdir(parents=True)
    by_label.mkdir(parents=True)
    (tmp_path / "vdb").write_bytes(b"")
    (by_uuid / "1111-2222").symlink_to(tmp_path / "vdb")
    (by_label / "my\\x20data").symlink_to(tmp_path / "vdb")
    fstab = Fstab.parse("UUID=1111-2222 /a ext4 defaults 0 2\nLABEL=my\\040data /b ext4 defaults 0 2\n")
    checks = fsck.plan(fstab, net=False, mode="-p", dev_root=str(tmp_path))
    assert [c.device for c in checks] == [str(by_uuid / "1111-2222"), str(by_label / "my\\x20data")]
    assert {c.disk for c in checks} == {str(tmp_path / "vdb")}


def test_usage_errors_exit_16(capsys) -> None:
    code, _, err = run_cli(capsys, ["fsck", "-p", "-n"])
    assert code == 16 and "not allowed with" in err


def test_a_filesystem_mounted_read_write_is_skipped_but_read_only_root_is_checked(tmp_path: Path, capsys) -> None:
    for name in ("vda", "vdb"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "mi").write_text(
        f"21 1 252:0 / / ro,relatime - ext4 {tmp_path}/vda ro\n"
        f"30 21 43:0 / /srv rw,relatime - ext4 {tmp_path}/vdb rw\n"
    )
    (tmp_path / "fstab").write_text(f"{tmp_path}/vda / ext4 defaults 0 1\n{tmp_path}/vdb /srv ext4 defaults 0 2\n")
    code, out, _ = run_cli(capsys, ["fsck", "-p", "--dry-run", "--json", "--fstab", str(tmp_path / "fstab"),
                                    "--mountinfo", str(tmp_path / "mi")])
    checks = json.loads(out)["checks"]
    assert code == 0
    assert [(c["target"], c["status"], c["reason"]) for c in checks] == [
        ("/", "planned", ""), ("/srv", "skipped", "mounted read-write on /srv")
    ]


def test_uppercase_uuid_finds_udevs_lowercase_link(tmp_path: Path) -> None:
    by_uuid = tmp_path / "disk" / "by-uuid"
    by_uuid.mkdir(parents=True)
    (by_uuid / "6d3e5c9a-3b8e-4f7a").write_bytes(b"")
    (entry,) = [e for _, e in Fstab.parse("UUID=6D3E5C9A-3B8E-4F7A /x ext4 defaults 0 2\n").entries]
    assert resolve(entry, dev_root=str(tmp_path)).device == str(by_uuid / "6d3e5c9a-3b8e-4f7a")


def test_wait_for_polls_until_the_device_shows_up(tmp_path: Path) -> None:
    (entry,) = [e for _, e in Fstab.parse(f"{tmp_path}/nbd0 /x ext4 _netdev 0 2\n").entries]
    now = [0.0]
    seen: list[str] = []

    def sleep(dt: float) -> None:  # a virtual clock; the device appears at t=1.0
        now[0] += dt
        if now[0] >= 1.0:
            (tmp_path / "nbd0").touch()

    got = wait_for([entry], 30, progress=seen.append, clock=lambda: now[0], sleep=sleep)
    assert got[entry].device == f"{tmp_path}/nbd0"
    assert 1.0 <= now[0] < 1.2
    assert seen == [f"waiting up to 30 s for {tmp_path}/nbd0 (/x)"]
