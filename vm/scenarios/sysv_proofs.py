"""The reboot, power-cut and target-down proofs on a real sysvinit guest (vm/scenarios/init_sysvinit.py).

The same properties as the busybox and systemd proofs, judged on the same evidence (vm/scenarios/facts.py,
reboot.make_cycle/failures, lun.check from the host), with Debian's own scripts doing the boot and the
shutdown: rcS starts uiscsid (S after networking, before mountnfs), the services come in runlevel 2, and
rc6/rc0 stop them, run sendsigs (the real killall5: stop every process, signal all but
/run/sendsigs.omit.d, continue), uiscsid's stop (umount -a -N, logout), umountnfs, networking, umountfs,
umountroot and reboot/halt.

reboot-test cycles end in `reboot` (rc6); the other proofs end in `poweroff` (rc0). ``busy`` adds two
processes no init script stops (vm/guest_sysv/busy.sh): a writer deaf to SIGTERM that sendsigs has to
SIGKILL after ~10 s of stop/continue rounds, and a holder sendsigs spares, which keeps the filesystem
mounted (read-only after uiscsid's umount) through umountfs: the daemon is then kept, serving it to the
end. Controls: ``shim=False`` (nothing in sendsigs.omit.d: sendsigs signals the daemon) and
``attach="ioctl"`` (the daemon is spared but its NBD_DO_IT wait dies of killall5's SIGSTOP).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vm.harness import PowerCut
from vm.scenarios import lun, reboot
from vm.scenarios.facts import BootFacts, facts, prepare, read, start_target
from vm.scenarios.init_sysvinit import SysvPlan, SysvRunner, build_image, command
from vm.scenarios.target_down import _LateTarget
from vm.targets import free_port

KEPT = "uiscsid kept:"
Say = Callable[[str], None]


def _image(plan: SysvPlan, workdir: Path, deb: Path, runner: SysvRunner, say: Say):
    t = time.monotonic()
    img = build_image(plan, workdir / "root.img", deb, kernel=runner.kernel, progress=say)
    say(f"sysvinit image built in {time.monotonic() - t:.0f} s ({img.path})")
    return img


def kept(f: BootFacts) -> bool:
    """The LSB script kept the daemon at halt: a filesystem of its was still mounted after umount -a -N."""
    return any(KEPT in line for line in f.console)


def expected_clean(shim: bool, attach: str) -> bool:
    return shim and attach == "netlink"


def reboot_test(lun_file: Path, cycles: int, workdir: Path, runner: SysvRunner, deb: Path, *,
                shim: bool = True, attach: str = "netlink", busy: bool = False, payload_mb: int = 8,
                say: Say = lambda _: None) -> dict:
    """CYCLES reboots (rc6) of the sysvinit guest against LUN_FILE; the report of reboot.reboot_test plus
    the init, the attach mode, busy, and per cycle whether the daemon was kept and alive at umountfs."""
    t0 = time.monotonic()
    lun_file, workdir, created = prepare(lun_file, workdir, payload_mb)
    initial = lun.check(lun_file)
    say(f"LUN {lun_file}: {'created' if created else 'reused'}; needs_recovery={initial.needs_recovery}")
    report: list[reboot.Cycle] = []
    extra: list[dict] = []
    with start_target(workdir, lun_file) as tgt:
        plan = SysvPlan(port=tgt.port, shim=shim, attach=attach, payload_mb=payload_mb)
        image = _image(plan, workdir, deb, runner, say)
        script = command(*(["busy.sh"] if busy else []), "cycle.sh")
        before = initial
        for n in range(1, cycles + 1):
            say(f"cycle {n}/{cycles}: boot ({'shim' if shim else 'NO SHIM'}, attach {attach}"
                f"{', busy' if busy else ''})")
            results = workdir / f"cycle{n}"
            f = facts(runner.boot(image, results, script, after="reboot"))
            after = lun.check(lun_file, expected=f.wrote_sha256)
            c = reboot.make_cycle(n, f, results, before, after)
            c.inherited = n == 1 and not initial.clean
            alive = read(results, "daemon-at-umountfs").startswith("uiscsid is running")
            if kept(f):  # its stop was to keep serving: judged by being alive at umountfs instead
                c.daemon_stop_exit = 0 if alive else 3
            report.append(c)
            extra.append({"daemon_kept": kept(f), "daemon_alive_at_umountfs": alive,
                          "mounted_at_umountfs": bool(read(results, "mounted-at-umountfs")),
                          "busy_writes": int(read(results, "busy.count", "0") or 0) if busy else None})
            say(f"cycle {n}: {f.seconds:.0f} s, fsck -N -p exit {c.fsck_exit}"
                f"{' (journal replayed)' if c.journal_replayed else ''}, previous payload "
                f"{c.previous_payload}, daemon {'kept' if kept(f) else 'stopped'}, "
                f"LUN {'clean' if c.shutdown_clean else 'DIRTY'} (needs_recovery={after.needs_recovery})")
            before = after
            if f.error and f.exit_code is None:
                break
    final = lun.check(lun_file, expected=report[-1].wrote_sha256 if report else initial.recorded_sha256)
    bad = reboot.failures(report, final)
    clean = expected_clean(shim, attach)
    return {
        "test": "reboot", "init": "sysvinit", "shim": shim, "attach": attach, "busy": busy,
        "lun_file": str(lun_file), "created": created, "initial": initial.as_dict(),
        "cycles": [{**c.as_dict(), **x} for c, x in zip(report, extra)],
        "final": final.as_dict(), "expected": "clean" if clean else "failure", "failures": bad,
        "ok": not bad if clean else bool(bad), "seconds": round(time.monotonic() - t0, 1),
        "workdir": str(workdir),
    }


def order_of(f: BootFacts) -> dict:
    """The recovery boot's order: fsck -N ends before mount -N begins, the services start after both."""
    fsck, mount = f.step("fsck-net"), f.step("mount-net")
    starts = {name: f.service_start(name) for name in ("writer", "nodisk")}
    times = {"fsck_begin": fsck and fsck.begin, "fsck_end": fsck and fsck.end,
             "mount_begin": mount and mount.begin, "mount_end": mount and mount.end,
             **{f"{k}_start": v for k, v in starts.items()}}
    ok = (None not in times.values() and times["fsck_end"] <= times["mount_begin"]
          and all(v >= times["mount_end"] for v in starts.values()))
    t0 = (fsck.begin if fsck else None)
    rel = {k: None if v is None or t0 is None else round(v - t0, 3) for k, v in times.items()}
    return {"ok": ok, **rel}


def power_cut_test(lun_file: Path, workdir: Path, runner: SysvRunner, deb: Path, payload_mb: int = 8,
                   say: Say = lambda _: None) -> dict:
    """Pull the plug mid-write; the next boot's LSB script must repair before mounting, before services."""
    t0 = time.monotonic()
    lun_file, workdir, created = prepare(lun_file, workdir, payload_mb)
    with start_target(workdir, lun_file) as tgt:
        image = _image(SysvPlan(port=tgt.port, payload_mb=payload_mb), workdir, deb, runner, say)
        say("boot 1: write and sync a payload, keep writing churn, then pull the plug")
        r1 = runner.boot(image, workdir / "cut", command("cycle.sh", env={"PROOF_CUT": "1"}), after="none",
                         power_cut=PowerCut(marker=reboot.CUT_MARKER, delay=0.5))
        f1 = facts(r1)
        cut = lun.check(lun_file)
        say(f"power cut {'fired' if r1.power_cut else 'DID NOT FIRE'}; LUN needs_recovery={cut.needs_recovery}")
        say("boot 2: fsck -N -p must repair before mount -a -N, and the services come after both")
        f2 = facts(runner.boot(image, workdir / "recovery", command("cycle.sh"), after="poweroff"))
    after = lun.check(lun_file, expected=f2.wrote_sha256)
    order = order_of(f2)
    repaired = f2.fsck_exit == 1 or (f2.fsck_exit == 0 and f2.journal_replayed)
    checks = {
        "power_cut_fired": r1.power_cut and r1.exit_code is None,
        "dirty_after_cut": cut.needs_recovery,
        "fsck_repaired_before_mount": repaired and order["ok"],
        "synced_payload_survived": f2.previous_payload == "ok",
        "clean_after_next_shutdown": after.clean and after.payload_ok is True,
    }
    say(f"boot 2: fsck -N -p exit {f2.fsck_exit}{' after a journal replay' if f2.journal_replayed else ''}; "
        f"order ok: {order['ok']}; synced payload {f2.previous_payload}")
    return {
        "test": "power-cut", "init": "sysvinit", "lun_file": str(lun_file), "created": created,
        "cut": {"fired": r1.power_cut, "seconds": f1.seconds, "synced_sha256": f1.wrote_sha256,
                "host": cut.as_dict()},
        "recovery": {"seconds": f2.seconds, "error": f2.error, "fsck_exit": f2.fsck_exit,
                     "journal_replayed": f2.journal_replayed, "repaired": repaired,
                     "fsck_output": f2.fsck_output, "order": order, "previous_payload": f2.previous_payload},
        "host_after": after.as_dict(), "checks": checks, "ok": all(checks.values()),
        "seconds": round(time.monotonic() - t0, 1), "workdir": str(workdir),
    }


def target_down_test(lun_file: Path, workdir: Path, runner: SysvRunner, deb: Path, bound: float = 120.0,
                     payload_mb: int = 8, say: Say = lambda _: None) -> dict:
    """Boot with nothing on the target's port: the LSB script's start must end within BOUND seconds and
    the boot reach runlevel 2 with the no-disk service; then the target comes back and an admin's
    reload, fsck -N, mount -N attach and mount it (vm/guest_proof/late.sh)."""
    t0 = time.monotonic()
    lun_file, workdir, created = prepare(lun_file, workdir, payload_mb)
    port = free_port()  # nothing listens there until the guest asks
    image = _image(SysvPlan(port=port, payload_mb=payload_mb), workdir, deb, runner, say)
    results = workdir / "boot"
    say(f"boot with the target down (nothing listens on 10.0.2.2:{port})")
    with _LateTarget(results, port, lun_file, workdir, time.monotonic() + runner.timeout) as late:
        r = runner.boot(image, results, command("late.sh"), after="poweroff")
    f = facts(r)
    reload, begin, end = f.step("reload"), f.step("uiscsid"), f.step("mount-net")
    start_span = round(end.end - begin.begin, 3) if begin and end and end.end else None
    runlevel2 = r.event("cmd-begin")
    message = [ln for ln in f.output("reload") if ln.strip()]
    boot = {
        "start_seconds": start_span, "bound": bound,
        "uptime_at_runlevel_2": runlevel2.uptime if runlevel2 else None,
        "reload_exit": reload.rc if reload else None,
        "reload_seconds": round(reload.end - reload.begin, 3) if reload and reload.end else None,
        "message": message, "fsck_exit": f.fsck_exit, "mount_exit": f.mount_exit,
        "mounted": read(results, "boot.mounted") == "mounted",
        "nodisk_service": read(results, "boot.nodisk", "none"),
        "writer_service": read(results, "boot.writer", "none"),
    }
    after_late = {
        "target_started": late.started_at is not None, "target_error": late.error,
        "reload_exit": _int(read(results, "late.reload")), "fsck_exit": _int(read(results, "late.fsck")),
        "mount_exit": _int(read(results, "late.mount")), "mounted": read(results, "late.mounted") == "mounted",
        "writer": read(results, "late.writer"),
    }
    host = lun.check(lun_file, expected=f.wrote_sha256)
    checks = {
        "boot_finished_within_bound": start_span is not None and start_span <= bound and runlevel2 is not None,
        "clear_message": boot["reload_exit"] not in (0, None) and any("proof" in ln for ln in message),
        "nodisk_service_started": boot["nodisk_service"] == "started",
        "disk_service_refused": boot["writer_service"] == "refused" and not boot["mounted"],
        "late_attach_and_mount": after_late["reload_exit"] == 0 and after_late["fsck_exit"] == 0
        and after_late["mount_exit"] == 0 and after_late["mounted"],
        "writer_ran_after_mount": after_late["writer"] == "written",
        "clean_after_shutdown": host.clean and host.payload_ok is True,
    }
    say(f"the LSB script's start took {start_span} s (bound {bound:g} s), runlevel 2 at uptime "
        f"{boot['uptime_at_runlevel_2']}; reload exit {boot['reload_exit']}: {message[-1] if message else '-'}")
    return {
        "test": "target-down", "init": "sysvinit", "lun_file": str(lun_file), "created": created,
        "seconds_boot": f.seconds, "error": f.error, "boot": boot, "after_target_returns": after_late,
        "host_after": host.as_dict(), "checks": checks, "ok": all(checks.values()),
        "seconds": round(time.monotonic() - t0, 1), "workdir": str(workdir),
    }


def _int(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None
