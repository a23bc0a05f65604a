"""The proofs on sysvinit (issue 13): Debian 12 guests with sysvinit-core as PID 1, Debian's own rcS/rc0/rc6
and the checkout's .deb installed by apt, against a real tgtd on the host, through
`bootkit vm ... --init sysvinit`.

Budget: 4 guest boots (one busy reboot cycle, the power cut's two boots, the target-down boot), about
60-90 s each on an idle 2-core host, plus one image build per test (about 10 s). The negative controls
(`--no-shim`, `--attach ioctl`) are commands anyone can run (README); they are not run here. Every verdict
is re-checked from the host with e2fsprogs on the LUN file, and every order the proof claims is read back
from the boot's timeline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from initiator.kernel.udev_info import link_path
from tests.test_proof_vm import host_view
from vm.scenarios.plan import TARGET_IQN

pytestmark = [pytest.mark.vm, pytest.mark.target]

VENV_BIN = Path(sys.executable).parent
LINK = link_path(TARGET_IQN, 1)


def bootkit_vm(*args: str, deb: Path, timeout: float = 900) -> dict:
    r = subprocess.run([str(VENV_BIN / "bootkit"), "vm", *args, "--init", "sysvinit", "--deb", str(deb), "--json"],
                       capture_output=True, text=True, timeout=timeout, check=False)
    print(r.stderr)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    rep = json.loads(r.stdout)
    print(json.dumps({k: v for k, v in rep.items() if k not in ("cycles", "timeline")}, indent=1))
    return rep


def when(cycle: dict, name: str, which: int = 0) -> float:
    """The guest time of event ``name`` (the first, or ``which``-th) of a cycle's timeline."""
    found = [e["guest_t"] for e in cycle["timeline"] if e["name"] == name]
    assert found, f"no {name} in {[e['name'] for e in cycle['timeline']]}"
    return found[which]


@pytest.mark.timeout(900)
def test_a_busy_filesystem_is_served_through_sendsigs_and_umountfs_and_comes_back_clean(vm_deb, tmp_path):
    lun = tmp_path / "lun.img"
    rep = bootkit_vm("reboot-test", "--cycles", "1", "--busy", "--lun-file", str(lun), "--workdir",
                     str(tmp_path / "work"), deb=vm_deb)
    assert rep["ok"] and rep["failures"] == [] and rep["expected"] == "clean", rep["failures"]
    assert (rep["init"], rep["fstab_source"], rep["attach"], rep["shim"], rep["busy"]) == (
        "sysvinit", LINK, "auto", True, True)
    (c,) = rep["cycles"]
    # boot, in rcS: the LSB script after networking: daemon, login (the LUN attached), fsck -N, mount -N;
    # the service that needs the disk ($remote_fs) in runlevel 2
    assert c["clean"] and c["fsck_ran"] and not c["journal_replayed"] and c["device_found"], c["fsck_output"]
    assert c["mounted"] and c["mount_source"] == LINK and c["previous_payload"] == "ok"
    assert when(c, "daemon-ready") < when(c, "device-found") < when(c, "fsck-end") <= when(c, "mount-begin")
    assert when(c, "mounted") <= when(c, "remote-fs") <= when(c, "writer-start")
    assert c["dirty_kb"] >= 1024 and c["busy"] is True
    # shutdown: sendsigs (the real killall5, stop/continue rounds until its SIGKILL) spares the daemon;
    # then uiscsid's stop can only remount the busy filesystem read-only, and keeps the daemon serving it
    # through umountfs to the restart
    s = c["shutdown"]
    assert s["daemon_spared"] and s["daemon_kept"] and s["sendsigs_sigkill"] and s["unmount"] == "failed", s
    assert (s["nbd_dropped"], s["io_errors"], s["fs_errors"]) == (0, 0, 0), s
    assert when(c, "final-term") < when(c, "final-kill") < when(c, "unmount-begin") < when(c, "final-unmount")
    assert all(b["ok"] for b in c["stop_bounds"]), c["stop_bounds"]
    assert c["shutdown_clean"] and c["host_after"]["payload_sha256"] == c["wrote_sha256"]
    digest = c["wrote_sha256"]
    assert host_view(lun) == {"needs_recovery": False, "e2fsck": 0, "payload": digest, "recorded": digest}


@pytest.mark.timeout(900)
def test_after_a_power_cut_the_lsb_script_checks_before_it_mounts_and_the_service_waits(vm_deb, tmp_path):
    rep = bootkit_vm("power-cut-test", "--workdir", str(tmp_path), deb=vm_deb)
    assert rep["checks"] == {k: True for k in rep["checks"]}, rep["checks"]
    rec = rep["recovery"]
    o = rec["order"]
    # (what fsck printed carries the time its step ended: startpar held it until the script's end)
    assert o["fsck-begin"] < o["fsck-replay"] <= o["fsck-end"] <= o["mount-begin"] < o["mounted"], o
    assert o["mounted"] <= o["remote-fs"] <= o["writer-start"], o
    assert any("recovering journal" in line for line in rec["fsck_output"]), rec["fsck_output"]
    assert rep["cut"]["host"]["needs_recovery"]
    # the recovery boot's shutdown, nothing busy: sendsigs, then unmounted, then the logout
    s = rec["shutdown"]
    assert s["unmount"] == "ok" and s["logout"] and s["daemon_spared"] and not s["daemon_kept"], s
    t = rec["timings"]
    assert t["unmounted"] < t["logout-end"] < t["power-off"], t
    assert all(b["ok"] for b in rec["stop_bounds"]), rec["stop_bounds"]
    view = host_view(tmp_path / "lun.img")
    assert not view["needs_recovery"] and view["e2fsck"] == 0 and view["payload"] == view["recorded"]


@pytest.mark.timeout(900)
def test_target_down_the_boot_ends_within_a_bound_and_service_reload_mounts_the_lun_once_back(vm_deb, tmp_path):
    # The whole boot's bound catches a boot that waits for ever; under TCG the boot itself takes 40 s on a
    # quiet host and 150 s on a loaded one (Python's first start), so the target-down part has its own bound:
    # from the daemon ready to the boot done, the failed reload and what follows it.
    rep = bootkit_vm("target-down-test", "--bound", "300", "--workdir", str(tmp_path), deb=vm_deb)
    assert rep["checks"] == {k: True for k in rep["checks"]}, rep["checks"]
    assert rep["timings"]["boot-done"] - rep["timings"]["daemon-ready"] <= 60, rep["timings"]
    late = rep["after_target_returns"]
    t = rep["timings"]
    assert t["reload-failed"] < t["boot-done"], t
    # once back: `service uiscsid reload` (the README's command) logs in, checks, then mounts
    assert late["reload_exit"] == 0 and late["mount_command_exit"] == 0, late
    assert late["fsck_end"] <= late["mounted_at"], late
    view = host_view(tmp_path / "lun.img")
    assert not view["needs_recovery"] and view["e2fsck"] == 0 and view["payload"] == view["recorded"]
