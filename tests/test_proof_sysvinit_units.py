"""The sysvinit init of the proofs without a guest: what it puts into the image, which plans are controls,
and how a sysvinit guest's console (as one printed it, shortened) becomes timeline events and shutdown
evidence, with the LSB script's lines put back at the time their epoch stamps say (startpar held them)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rc import render as rc_render
from vm.console import ConsoleLine, GuestEvent
from vm.harness import GuestResult
from vm.scenarios import inits, timeline
from vm.scenarios.init_sysvinit import OUTPUT, SERVICES, SYSV_DIR, Sysvinit, restamp
from vm.scenarios.plan import ProofPlan

SYSV = Sysvinit()
PLAN = ProofPlan.default(40123, "sysvinit", *SYSV.fstab_options)
EPOCH0 = 1796210703.886 - 40.75  # the guest's epoch at uptime 0, from its clock line below

# (host seconds, text): a busy reboot cycle, as the console showed it
CONSOLE = [
    (6.8, "bootkit-vm[n] 3.49 boot"),
    (33.0, "[   29.100000] EXT4-fs (vda): recovering journal"),  # root, by the kernel: not our fsck
    (40.0, "rc: 1796210694.834 step uiscsid begin"),  # startpar: the whole block when the script ended
    (40.0, "rc: 1796210699.158 step uiscsid end rc=0"),
    (40.0, "rc: 1796210699.207 step reload begin"),
    (40.0, "TARGET  STATE      ADDRESS         CONN  DEVICES    DETAIL"),
    (40.0, "proof   logged-in  10.0.2.2:45631  1     /dev/nbd0"),
    (40.0, "rc: 1796210700.874 step reload end rc=0"),
    (40.0, "rc: 1796210700.907 step fsck-net begin"),
    (40.0, "bootkit fsck: /srv/data: bootkit-proof: recovering journal"),
    (40.0, "rc: 1796210701.681 step fsck-net end rc=0"),
    (40.0, "rc: 1796210701.732 step mount-net begin"),
    (40.0, "mounted\t/srv/data"),
    (40.0, "rc: 1796210702.797 step mount-net end rc=0"),
    (42.0, "INIT: Entering runlevel: 2"),
    (44.0, "bootkit-proof clock: 1796210703.886362260 40.75"),
    (44.3, "writer: 1796210704.201 start pid 1090"),
    (44.4, "nodisk: 1796210704.236 start pid 1089"),
    (44.5, "bootkit-vm[n] 41.21 cmd-begin"),
    (44.6, "INIT: no more processes left in this runlevel"),
    (50.6, "bootkit-vm[n] 47.35 shutdown-begin"),
    (51.9, "INIT: Switching to runlevel: 6"),
    (53.7, "writer: 1796210713.565 stopped after 81 churn writes"),
    (58.0, "Asking all remaining processes to terminate...done."),
    (65.1, "Killing all remaining processes...failed."),
    (67.0, "rc: 1796210725.162 step umount-net begin"),
    (67.0, "bootkit umount: /srv/data: busy; remounted read-only"),
    (67.0, "remounted-ro\t/srv/data\tbusy; remounted read-only"),
    (67.0, "rc: 1796210726.880 step umount-net end rc=0"),
    (67.0, "rc: 1796210727.129 uiscsid kept: /srv/data still mounted: it is served until the power goes off"),
    (67.1, "not deconfiguring network interfaces: network devices still mounted. ... (warning)."),
    (69.2, "Unmounting local filesystems...done."),
    (69.4, "Will now restart."),
    (69.5, "[   66.188699] reboot: Restarting system"),
]
EVENTS = [GuestEvent("boot", 3.49, 6.8), GuestEvent("cmd-begin", 41.21, 44.5),
          GuestEvent("shutdown-begin", 47.35, 50.6), GuestEvent("reboot", 66.19, 69.5)]


def result(console=CONSOLE, events=EVENTS, results_dir="/nonexistent") -> GuestResult:
    from pathlib import Path

    lines = [ConsoleLine(t, text) for t, text in console]
    return GuestResult(0, "\n".join(text for _, text in console), lines, list(events), Path(results_dir), 70.0)


def test_sysvinit_is_an_image_init_whose_fstab_line_carries_nofail():
    assert "sysvinit" in inits.names() and inits.image_init("sysvinit").variant == "sysvinit"
    assert PLAN.fstab.line().endswith(" ext4 _netdev,nofail 0 2")
    with pytest.raises(ValueError, match="nofail"):
        SYSV.files(ProofPlan.default(40123, "sysvinit"))


def test_the_image_gets_the_root_line_the_proof_services_and_the_packaged_lsb_script():
    files = SYSV.files(PLAN)
    fstab = files["/etc/fstab"].content
    assert fstab.startswith("# the guest's root disk\n/dev/vda / ext4 ") and PLAN.fstab.line() in fstab
    for name in SERVICES:
        assert files[f"/etc/init.d/{name}"].mode == 0o755
    assert f"{inits.PROOF_DIR}/busy.sh" in files and SYSV.enable(PLAN) == list(SERVICES)
    assert "/etc/init.d/uiscsid" not in files  # the package's own script runs the proof
    env = SYSV.env_text(PLAN)
    assert "PROOF_BOOTKIT=/usr/bin/bootkit" in env and "PROOF_SHUTDOWN_CMD=reboot" in env
    assert "PROOF_LATE_MOUNT_CMD='service uiscsid reload'" in env  # the README's command


@pytest.mark.parametrize(("change", "want"), [({"shim": False}, "--no-flag"), ({"attach": "ioctl"}, "--attach ioctl")])
def test_a_control_plan_replaces_the_lsb_script_with_the_same_one_rendered_for_it(change, want):
    plan = PLAN.with_(**change)
    text = SYSV.files(plan)["/etc/init.d/uiscsid"].content
    assert want in text and "BOOTKIT=/usr/bin/bootkit" in text
    packaged = rc_render.render("sysvinit", rc_render.Settings(bootkit="/usr/bin/bootkit"))
    assert text.split("### END INIT INFO")[0] == packaged.files["etc/init.d/uiscsid"].text.split(
        "### END INIT INFO")[0]  # same LSB headers: same place in rcS and rc0/rc6


def test_on_sysvinit_the_controls_fail_busy_or_not():
    """sendsigs kills before uiscsid's stop unmounts: the shim and netlink matter for every shutdown."""
    assert not SYSV.expects_damage(PLAN) and not SYSV.expects_damage(PLAN.with_(busy=True))
    for change in ({"shim": False}, {"attach": "ioctl"}, {"attach": "nbd"}):
        assert SYSV.expects_damage(PLAN.with_(**change)) and SYSV.expects_damage(PLAN.with_(busy=True, **change))


def test_the_lsb_scripts_lines_go_back_to_the_time_their_epoch_says():
    lines = restamp(result())
    by_text = {timeline.stamped(ln)[1]: timeline.stamped(ln)[0] for ln in lines}
    assert by_text["rc: 1796210694.834 step uiscsid begin"] == pytest.approx(1796210694.834 - EPOCH0, abs=0.01)
    # a step's own output gets its end marker's time, and the prefix that the rules look for
    assert by_text[f"{OUTPUT}mounted\t/srv/data"] == pytest.approx(1796210702.797 - EPOCH0, abs=0.01)
    assert by_text["EXT4-fs (vda): recovering journal"] == 29.1  # other lines keep their own
    # without the clock line nothing can be placed: the console stays as it is
    assert restamp(result([c for c in CONSOLE if "clock" not in c[1]])) == result().lines[:0] + [
        ConsoleLine(t, x) for t, x in CONSOLE if "clock" not in x]


def test_the_console_becomes_a_timeline_in_boot_order():
    ev = SYSV.timeline(PLAN, result())
    at = {name: timeline.at(ev, name) for name in timeline.EVENTS}
    order = ["boot", "daemon-start", "daemon-ready", "device-found", "fsck-begin", "fsck-replay", "fsck-end",
             "mount-begin", "mounted", "remote-fs", "writer-start", "boot-done", "shutdown-begin",
             "services-stop", "services-stopped", "unmount-begin", "unmount-failed", "power-off"]
    times = [at[name] for name in order]
    assert None not in times and times == sorted(times), dict(zip(order, times))
    assert at["daemon-ready"] - at["daemon-start"] == pytest.approx(4.324, abs=0.01)
    assert at["reload-failed"] is None and at["unmounted"] is None
    # the root's journal replay by the kernel is not the network filesystem's fsck
    assert len([e for e in ev if e.name == "fsck-replay"]) == 1


def test_shutdown_evidence_of_a_kept_daemon_and_a_daemon_that_logged_out():
    ev = SYSV.timeline(PLAN, result())
    s = SYSV.shutdown_facts(PLAN, ev, result())
    assert (s["unmount"], s["daemon_spared"], s["daemon_kept"], s["sendsigs_sigkill"]) == ("failed", True, True, True)
    assert (s["nbd_dropped"], s["io_errors"], s["fs_errors"]) == (0, 0, 0)
    bounds = SYSV.stop_bounds(PLAN, ev)
    assert [b["step"] for b in bounds] == ["sendsigs"] and bounds[0]["ok"]
    stopped = [c for c in CONSOLE if "kept" not in c[1]] + [
        (67.2, "rc: 1796210727.200 step uiscsid-stop begin"), (67.2, "uiscsid: PID 977 logged out and exited"),
        (67.2, "rc: 1796210728.300 step uiscsid-stop end rc=0")]
    r = result(stopped)
    s = SYSV.shutdown_facts(PLAN, SYSV.timeline(PLAN, r), r)
    assert s["daemon_spared"] and not s["daemon_kept"] and s["logout"] == ["uiscsid: PID 977 logged out and exited"]
    gone = [c for c in CONSOLE if "kept" not in c[1]] + [(67.2, "uiscsid: not running")]
    assert not SYSV.shutdown_facts(PLAN, SYSV.timeline(PLAN, result(gone)), result(gone))["daemon_spared"]


def test_reload_messages_are_what_uiscsictl_said_in_the_reload_step():
    down = [(40.0, "rc: 1796210980.918 step reload begin"),
            (40.0, "proof   failed  10.0.2.2:58885  0     -        cannot connect to 10.0.2.2:58885"),
            (40.0, "uiscsictl: target proof: failed: cannot connect to 10.0.2.2:58885"),
            (40.0, "rc: 1796210983.080 step reload end rc=1")]
    assert SYSV.reload_messages(result(down)) == ["uiscsictl: target proof: failed: cannot connect to 10.0.2.2:58885"]


def test_the_guest_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: run ./scripts/bootstrap.sh (make test does)")
    scripts = sorted(str(p) for p in SYSV_DIR.iterdir())
    r = subprocess.run(["shellcheck", "-s", "sh", "-x", "-P", str(SYSV_DIR.parent / "guest_proof"), *scripts],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout
