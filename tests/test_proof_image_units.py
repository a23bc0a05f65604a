"""The proof's init-system parameter and its timelines, without a guest: the plan (fstab line, uiscsi.conf),
what the systemd init puts into the image, how its console becomes timeline events (lines as a systemd 252
guest printed them), the shutdown evidence and stop bounds, and the verdicts of the image scenarios.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fstab_tools.fstab import Fstab
from vm.console import ConsoleLine, GuestEvent
from vm.harness import GuestResult
from vm.scenarios import image_proof, inits, lun, timeline
from vm.scenarios.facts import busybox_timeline
from vm.scenarios.guest import parse_rc_log
from vm.scenarios.init_systemd import Systemd
from vm.scenarios.plan import FstabSpec, ProofPlan, TargetSpec

VENV_BIN = Path(sys.executable).parent
PLAN = ProofPlan.default(40123, "systemd")
LINK = "/dev/disk/by-iscsi/iqn.2026-11.test.bootkit:proof-lun1"
ESC = r"dev-disk-by\x2discsi-iqn.2026\x2d11.test.bootkit:proof\x2dlun1"

# A systemd 252 guest's console (journald forwarding with the uptime; kmsg at loglevel 7), shortened.
CONSOLE = [
    (13.4, "bootkit-vm[n] 6.39 boot"),
    (27.3, "[   20.359675] systemd[1]: Starting uiscsid.service - uiscsid userland iSCSI initiator..."),
    (37.3, "[   30.326471] nodisk.sh[205]: nodisk: 1796205648.314 start pid 205"),
    (49.3, "[   42.369121] systemd[1]: Started uiscsid.service - uiscsid userland iSCSI initiator."),
    (57.1, f"\x1b[K[   50.182343] systemd[1]: Found device {ESC}.device - {LINK}."),
    (57.2, f"[   50.285612] systemd[1]: Starting systemd-fsck@{ESC}.service - File System Check on {LINK}..."),
    (57.9, ("[   50.906923] systemd[1]: Finished uiscsi-reload.service - uiscsid: log in to the iSCSI targets of "
           "/etc/uiscsi.conf.")),
    (58.5, "[   51.500000] systemd-fsck[301]: bootkit-proof: recovering journal"),
    (59.1, f"[   52.138109] systemd[1]: Finished systemd-fsck@{ESC}.service - File System Check on {LINK}."),
    (59.2, "[   52.240726] systemd[1]: Mounting srv-data.mount - /srv/data..."),
    (60.0, "[   53.029380] systemd[1]: Mounted srv-data.mount - /srv/data."),
    (60.0, "[   53.045434] systemd[1]: Reached target remote-fs.target - Remote File Systems."),
    (60.9, "[   53.969553] systemd[1]: Reached target multi-user.target - Multi-User System."),
    (61.9, "[   54.882336] writer.sh[328]: writer: 1796205673.232 start pid 328"),
    (61.9, "bootkit-vm[n] 54.90 cmd-begin"),
    (79.4, "bootkit-vm[n] 72.37 shutdown-begin"),
    (81.4, ("[   74.283107] systemd[1]: Stopping proof-writer.service - bootkit proof writer: the service that "
           "needs the iSCSI filesystem...")),
    (82.4, ("[   75.448282] systemd[1]: Stopped proof-writer.service - bootkit proof writer: the service that "
           "needs the iSCSI filesystem.")),
    (82.5, "[   75.586612] systemd[1]: Unmounting srv-data.mount - /srv/data..."),
    (83.9, "[   76.900000] systemd[1]: srv-data.mount: Mount process exited, code=exited, status=32/n/a"),
    (84.0, "[   77.033233] systemd[1]: Failed unmounting srv-data.mount - /srv/data."),
    (84.3, ("[   77.328608] systemd[1]: Stopping uiscsi-logout.service - uiscsid: log out of the iSCSI sessions "
           "nothing uses, at shutdown...")),
    (87.6, "[   80.614320] block nbd1: Disconnected due to user request."),
    (87.6, "[   80.614517] block nbd1: shutting down sockets"),
    (87.8, "[   80.798718] uiscsictl[474]: /dev/nbd0: kept, mounted on /srv/data"),
    (88.0, ("[   81.029572] systemd[1]: Stopped uiscsi-logout.service - uiscsid: log out of the iSCSI sessions "
           "nothing uses, at shutdown.")),
    (89.1, "[   82.092520] systemd-shutdown[1]: Syncing filesystems and block devices."),
    (89.1, "[   82.119663] systemd-shutdown[1]: Sending SIGTERM to remaining processes..."),
    (89.4, "[   82.385829] systemd-shutdown[1]: Sending SIGKILL to remaining processes..."),
    (89.4, ("[   82.432238] systemd-shutdown[1]: Process 198 (uiscsid) has been marked to be excluded from "
           "killing. It is running from the root file system, and thus likely to block re-mounting of the root "
           "file system to read-only. Please consider moving it into an initrd file system instead.")),
    (89.5, "[   82.447232] systemd-shutdown[1]: Unmounting file systems."),
    (89.6, "[   82.460000] (sd-umount)[490]: Unmounting '/srv/data'."),
    (89.6, "[   82.465000] (sd-remount)[491]: Remounting '/' read-only with options ''."),
    (89.6, "[   82.468619] systemd-shutdown[1]: All filesystems unmounted."),
    (89.7, "[   82.600000] reboot: Restarting system"),
]


def guest_result(lines=CONSOLE, markers=(("boot", 6.39, 13.4), ("cmd-begin", 54.9, 61.9),
                                         ("shutdown-begin", 72.37, 79.4), ("reboot", -1.0, 89.7))):
    return GuestResult(exit_code=0, console="\n".join(t for _, t in lines),
                       lines=[ConsoleLine(t, text) for t, text in lines],
                       events=[GuestEvent(n, u, t) for n, u, t in markers], results_dir=Path("/nonexistent"),
                       duration=90.0)


def test_the_plan_writes_the_by_iscsi_fstab_line_and_the_config():
    assert PLAN.fstab.line() == f"{LINK} /srv/data ext4 _netdev 0 2"
    ((_, entry),) = list(Fstab.parse(PLAN.fstab.text()).entries)
    assert entry.source == LINK and tuple(entry.options) == ("_netdev",) and entry.passno == 2
    conf = PLAN.target.config_text()
    assert "targetaddr 10.0.2.2 port 40123" in conf and "replacement_timeout 15" in conf
    spec = FstabSpec.by_iscsi(TargetSpec(1), "_netdev", "nofail", "x-systemd.device-timeout=180")
    assert spec.option("x-systemd.device-timeout") == "180" and spec.option("x-systemd.mount-timeout") is None
    assert FstabSpec(r"/dev/x y", "/srv/my disk").line() == r"/dev/x\040y /srv/my\040disk ext4 _netdev 0 2"
    assert PLAN.describe()["fstab_source"] == LINK and PLAN.describe()["attach"] == "auto"


def test_busybox_is_the_default_init_and_systemd_is_an_image_init():
    assert inits.names()[0] == "busybox" and "systemd" in inits.names()
    assert isinstance(inits.image_init("systemd"), Systemd)
    with pytest.raises(KeyError):
        inits.image_init("busybox")


def test_systemd_image_files_install_the_proof_as_an_admin_would():
    sd = Systemd()
    files = sd.files(PLAN)
    assert files["/etc/fstab"].content.endswith(f"{LINK} /srv/data ext4 _netdev 0 2\n")
    assert "target proof" in files["/etc/uiscsi.conf"].content
    assert {"/etc/systemd/system/proof-writer.service", "/etc/systemd/system/proof-nodisk.service"} <= files.keys()
    assert "/etc/systemd/system/uiscsid.service" not in files  # the package's own unit, untouched
    assert sd.enable(PLAN) == ["proof-writer.service", "proof-nodisk.service"]
    env = files[f"{inits.PROOF_DIR}/proof.env"].content
    assert "PROOF_BUSY=0" in env and "systemctl reboot" in env and "PROOF_SOURCE_CMD=" in env
    for name in inits.SCRIPTS:
        assert files[f"{inits.PROOF_DIR}/{name}"].mode == 0o755


@pytest.mark.parametrize("change, want", [({"shim": False}, "--no-flag"), ({"attach": "ioctl"}, "--attach ioctl")])
def test_a_control_plan_overrides_the_packaged_daemon_unit(change, want):
    unit = Systemd().files(PLAN.with_(**change))["/etc/systemd/system/uiscsid.service"].content
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert start.startswith("ExecStart=/usr/") and want in start


def test_the_controls_are_the_busy_runs_without_shim_or_with_the_ioctl_attach():
    sd = Systemd()
    assert not sd.expects_damage(PLAN) and not sd.expects_damage(PLAN.with_(busy=True))
    assert not sd.expects_damage(PLAN.with_(shim=False))  # systemd unmounts first: the shim changes nothing
    assert sd.expects_damage(PLAN.with_(busy=True, shim=False))
    assert sd.expects_damage(PLAN.with_(busy=True, attach="ioctl"))


def test_the_busy_holder_survives_the_shutdown_transaction_and_does_not_require_the_mount():
    cmd = Systemd().busy_command(PLAN.with_(busy=True))
    assert "DefaultDependencies=no" in cmd and "--working-directory" not in cmd
    assert "cd /srv/data && exec 3<payload.bin" in cmd


def test_the_console_becomes_a_timeline_with_both_clocks():
    events = Systemd().timeline(PLAN, guest_result())
    names = [e.name for e in events]
    assert names[:2] == ["boot", "daemon-start"]
    for name in ("daemon-ready", "device-found", "fsck-begin", "fsck-replay", "fsck-end", "mount-begin", "mounted",
                 "remote-fs", "boot-done", "writer-start", "nodisk-start", "shutdown-begin", "services-stop",
                 "services-stopped", "unmount-begin", "unmount-failed", "logout-begin", "logout-end",
                 "final-term", "final-kill", "final-unmount", "final-umount", "final-done", "power-off"):
        assert name in names, name
    assert "nbd-dropped" not in names  # "shutting down sockets" after a requested disconnect is no drop
    assert all(e.guest_t is not None and e.host_t is not None for e in events), events
    found = timeline.first(events, "device-found")
    assert (found.guest_t, found.host_t) == (50.182343, 57.1)
    # the kernel's own last line, stamped with both clocks (the harness's marker of it is dropped)
    assert [(e.guest_t, e.host_t) for e in events if e.name == "power-off"] == [(82.6, 89.7)]
    shutdown = timeline.first(events, "shutdown-begin")  # a harness marker: both clocks from it
    assert (shutdown.guest_t, shutdown.host_t) == (72.37, 79.4)
    assert [e.guest_t for e in events] == sorted(e.guest_t for e in events)


def test_shutdown_evidence_and_stop_bounds():
    sd = Systemd()
    r = guest_result()
    events = sd.timeline(PLAN, r)
    facts = sd.shutdown_facts(PLAN, events, r)
    assert facts["unmount"] == "failed" and facts["logout_ran"] and facts["daemon_spared"]
    assert facts["logout"] == ["/dev/nbd0: kept, mounted on /srv/data"]
    assert facts["final_umount"] and facts["final_done"] and facts["io_errors"] == 0 and facts["root_read_only"]
    bounds = {b["step"]: b for b in sd.stop_bounds(PLAN, events)}
    assert bounds["unmount (mount unit stop)"]["seconds"] == pytest.approx(1.5)
    assert bounds["logout (uiscsi-logout stop)"]["bound"] == 35.0
    assert all(b["ok"] for b in bounds.values()), bounds
    slow = sd.stop_bounds(PLAN.with_(fstab=FstabSpec(LINK, options=("_netdev", "x-systemd.mount-timeout=1"))),
                          events)
    assert [b["ok"] for b in slow if b["step"].startswith("unmount")] == [False]


def test_fsck_output_is_what_systemd_fsck_printed():
    assert Systemd().fsck_output(guest_result()) == ["bootkit-proof: recovering journal"]


def _host(clean: bool = True) -> lun.HostCheck:
    return lun.HostCheck(needs_recovery=not clean, exit=0, payload_ok=bool(clean))


def _cycle(**kw) -> image_proof.Cycle:
    base = {"cycle": 1, "seconds": 80.0, "error": None, "exit_code": 0, "fsck_ran": True,
            "journal_replayed": False, "fsck_output": [], "found_clean": True, "device_found": True,
            "mounted": True, "mount_source": LINK, "payload_ok": True, "previous_payload": "ok",
            "wrote_sha256": None, "dirty_kb": 4096, "busy": None, "shutdown": {},
            "stop_bounds": [{"step": "x", "seconds": 1.0, "bound": 90.0, "ok": True}], "timings": {},
            "timeline": [], "host_after": _host()}
    return image_proof.Cycle(**{**base, **kw})


def test_image_verdicts_name_every_failure():
    assert image_proof.failures(PLAN, [_cycle()], _host()) == []
    bad = image_proof.failures(PLAN.with_(busy=True), [_cycle(
        mount_source="/dev/nbd0", busy=False, host_after=_host(False), journal_replayed=True, found_clean=False,
        stop_bounds=[{"step": "logout", "seconds": 50.0, "bound": 35.0, "ok": False}])], _host(False))
    text = " / ".join(bad)
    for want in ("replayed the journal", "not the fstab's", "did not run", "logout took 50.0 s",
                 "needs journal recovery", "final:"):
        assert want in text, want
    assert image_proof.failures(PLAN, [_cycle(error="qemu died")], _host())[0].endswith("qemu died")


def test_image_cycle_report_is_json_with_its_timeline():
    d = _cycle(timeline=[timeline.Event("boot", 1.0, 2.0, "x")]).as_dict()
    assert d["timeline"] == [{"name": "boot", "guest_t": 1.0, "host_t": 2.0, "detail": "x"}]
    assert d["clean"] and d["shutdown_clean"] and "seen" not in d


def test_the_busybox_rc_log_becomes_the_same_kind_of_timeline():
    rc_log = ("rc: 1000.000 boot begin\nrc: 1000.100 step uiscsid begin\nrc: 1002.000 step uiscsid end rc=0\n"
              "rc: 1002.100 step reload begin\nrc: 1003.000 step reload end rc=0\n"
              "rc: 1003.100 step fsck-net begin\nrc: 1004.000 step fsck-net end rc=0\n"
              "rc: 1004.100 step mount-net begin\nrc: 1004.500 step mount-net end rc=0\nrc: 1004.600 boot end\n")
    steps, markers = parse_rc_log(rc_log)
    r = guest_result(lines=[], markers=(("boot", 1.0, 3.0), ("rc-begin", 5.0, 7.0), ("poweroff", 30.0, 32.0)))
    events = busybox_timeline(r, steps, markers, [("writer", 1004.7, "start pid 9")], replayed=True)
    by = {e.name: e for e in events}
    assert by["daemon-ready"].guest_t == pytest.approx(7.0) and by["daemon-ready"].host_t == pytest.approx(9.0)
    assert by["fsck-replay"].guest_t == pytest.approx(9.0) and by["mounted"].guest_t == pytest.approx(9.5)
    assert by["writer-start"].guest_t == pytest.approx(9.7) and by["power-off"].host_t == 32.0


@pytest.mark.parametrize("args", [["reboot-test", "--busy"], ["reboot-test", "--poweroff"],
                                  ["power-cut-test", "--deb", "x.deb"]])
def test_debian_guest_options_need_a_debian_init(args):
    r = subprocess.run([str(VENV_BIN / "bootkit"), "vm", *args], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 2 and "--init systemd" in r.stderr and "Traceback" not in r.stderr


def test_guest_proof_units_parse():
    for unit in ("proof-writer.service", "proof-nodisk.service"):
        text = inits.guest_file_proof(unit).decode()
        assert "[Service]" in text and "ExecStart=/usr/local/lib/bootkit-proof/" in text
