"""The proof itself (issue 8) with the busybox rc, in QEMU guests against a real tgtd on the host.

Budget: 4 guest boots in all (reboot 2 cycles, the no-shim control 1, target down 1), about 20-40 s each
on an idle 2-core host. The busybox power cut (`bootkit vm power-cut-test`) is a command, not a test
here: the repair before the mount is proven by tests/test_fstab_guest.py (a dirty ext4, fsck -N -p,
then mount -a -N) and the rc's order by tests/test_rc_guest.py, and the power cut itself by the systemd
proof (tests/test_systemd_proof_vm.py). Every verdict the scenarios give is also re-checked here from
the host with e2fsprogs directly on the LUN file, so the test does not only trust the report.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vm.scenarios.facts import Runner
from vm.scenarios.reboot import reboot_test
from vm.scenarios.target_down import target_down_test

pytestmark = [pytest.mark.vm, pytest.mark.target]

VENV_BIN = Path(sys.executable).parent


def host_view(path: Path) -> dict:
    """The LUN file as e2fsprogs sees it from the host (read-only)."""
    dump = subprocess.run(
        ["dumpe2fs", "-h", str(path)], capture_output=True, text=True, check=True, timeout=60
    )
    fsck = subprocess.run(
        ["e2fsck", "-fn", str(path)], capture_output=True, text=True, timeout=120, check=False
    )

    def cat(name: str) -> bytes:
        return subprocess.run(
            ["debugfs", "-R", f"cat /{name}", str(path)], capture_output=True, check=True, timeout=60
        ).stdout

    return {
        "needs_recovery": "needs_recovery" in dump.stdout,
        "e2fsck": fsck.returncode,
        "payload": hashlib.sha256(cat("payload.bin")).hexdigest(),
        "recorded": cat("payload.sha256").decode().split()[0] if cat("payload.sha256") else None,
    }


def runner(boot_files) -> Runner:
    return Runner(boot_files=boot_files, say=lambda text: print(f"proof: {text}", flush=True), timeout=420)


@pytest.mark.timeout(1500)
def test_reboot_cycles_with_the_shim_come_back_clean_with_the_payload_intact(vm_boot_files, tmp_path):
    lun_file, work = tmp_path / "lun.img", tmp_path / "work"
    r = subprocess.run(
        [
            str(VENV_BIN / "bootkit"),
            "vm",
            "reboot-test",
            "--cycles",
            "2",
            "--lun-file",
            str(lun_file),
            "--workdir",
            str(work),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    print(r.stderr)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["shim"] and rep["ok"] and rep["failures"] == []
    assert [c["cycle"] for c in rep["cycles"]] == [1, 2]
    for c in rep["cycles"]:
        assert c["clean"] and c["fsck_exit"] == 0 and not c["journal_replayed"] and c["mounted"], c
        assert c["payload_ok"] and c["previous_payload"] == "ok", c
        # the shutdown had unsynced writes to get through: the guest waits for 2 MiB dirty, but on a loaded
        # host writeback may flush part of it before the shutdown reads the figure (748 KiB seen)
        assert c["dirty_kb"] >= 512, c
        # the flagged daemon was spared by shutdown-kill and logged out last, after a clean umount
        assert c["daemon_signalled"] == [] and c["daemon_stop_exit"] == 0, c
        assert c["umount_exit"] == 0 and c["umount_io_errors"] == 0, c
        assert c["shutdown_clean"] and c["host_after"]["payload_sha256"] == c["wrote_sha256"], c
    # cycle 2 verified exactly what cycle 1 wrote (the digest it found on the filesystem)
    assert (work / "cycle2" / "prev.sha256").read_text().split()[0] == rep["cycles"][0]["wrote_sha256"]
    view = host_view(lun_file)
    assert view == {
        "needs_recovery": False,
        "e2fsck": 0,
        "payload": rep["cycles"][-1]["wrote_sha256"],
        "recorded": rep["cycles"][-1]["wrote_sha256"],
    }


@pytest.mark.timeout(900)
def test_without_the_shim_the_shutdown_kill_takes_the_daemon_and_leaves_the_filesystem_dirty(
    vm_boot_files, tmp_path
):
    lun_file = tmp_path / "lun.img"
    rep = reboot_test(lun_file, 1, False, tmp_path / "work", runner(vm_boot_files))
    print(json.dumps(rep, indent=2))
    assert not rep["shim"] and rep["ok"], "the negative control came out clean: it proves nothing"
    (c,) = rep["cycles"]
    assert c["error"] is None and c["clean"] and c["payload_ok"], c  # it started from a clean LUN
    # the kill took the daemon: a netlink one (the default) exits on SIGTERM and leaves its device to the
    # kernel, whose I/O then waits for a daemon that never comes back (replacement_timeout) and fails
    assert "SIGTERM" in c["daemon_signalled"] and c["daemon_stop_exit"] == 3, c
    assert c["umount_io_errors"] > 0, c
    assert c["host_after"]["needs_recovery"] and not c["shutdown_clean"], c
    assert any("journal recovery" in f for f in rep["failures"]), rep["failures"]
    assert host_view(lun_file)["needs_recovery"]


@pytest.mark.timeout(900)
def test_target_down_at_boot_is_bounded_and_the_lun_attaches_and_mounts_when_it_returns(
    vm_boot_files, tmp_path
):
    rep = target_down_test(tmp_path / "lun.img", tmp_path / "work", runner(vm_boot_files), bound=120)
    print(json.dumps(rep, indent=2))
    assert rep["checks"] == {k: True for k in rep["checks"]}, rep["checks"]
    boot = rep["boot"]
    assert boot["reload_exit"] == 1 and "cannot connect" in " ".join(boot["message"]), boot
    assert boot["reload_seconds"] < 10 + 30, boot  # reload --wait 10, plus Python start-up under TCG
    view = host_view(tmp_path / "lun.img")
    assert not view["needs_recovery"] and view["e2fsck"] == 0 and view["payload"] == view["recorded"]
