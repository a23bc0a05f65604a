"""The reboot proof and its negative control, and the power-cut proof.

reboot: a host tgtd serves the LUN file; each cycle is one guest boot through the rendered rc (uiscsid
under the shim, reload --wait, fsck -N -p, mount -a -N, the services), the writer's fresh payload left
unsynced, and the rendered rc.shutdown (shutdown-kill, umount -a -N, the daemon last). Between boots
the host reads the file: needs_recovery, e2fsck -fn, and the payload through debugfs.

"Clean" is judged on evidence fsck's exit code alone cannot give: e2fsck -p replays a journal and still
exits 0, so a cycle is clean only if the host saw no needs_recovery before the boot, fsck -N -p exited
0 and printed no journal recovery.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vm.harness import PowerCut
from vm.report.properties import ordering
from vm.scenarios import guest, lun
from vm.scenarios.facts import BootFacts, CycleVerdict, Runner, facts, prepare, read, relative, start_target
from vm.scenarios.timeline import Event

CYCLE = [f"{guest.GUEST_RC_DIR}/cycle.sh"]
CUT_MARKER = "cut now"


@dataclass
class Cycle(CycleVerdict):
    """One reboot cycle; see the module docstring for what clean means."""

    cycle: int
    seconds: float
    error: str | None
    fsck_exit: int | None
    journal_replayed: bool
    found_clean: bool  # host: no needs_recovery before the boot; fsck -N -p 0 without replay
    mounted: bool
    payload_ok: bool  # the previous boot's payload, checked in the guest after fsck and mount
    previous_payload: str  # ok | bad | none | unknown
    wrote_sha256: str | None
    dirty_kb: int | None  # Dirty: in /proc/meminfo just before the shutdown
    daemon_signalled: list[str]  # the shutdown-kill signals that named uiscsid
    umount_exit: int | None
    umount_io_errors: int
    daemon_stop_exit: int | None  # 0: logged out and exited; 3: was not running any more
    host_after: lun.HostCheck
    inherited: bool = False  # cycle 1 on a LUN a previous run left dirty: not held against this run
    timings: dict[str, float | None] = field(default_factory=dict)
    timeline: list[Event] = field(default_factory=list)


def _dirty_kb(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("Dirty:"):
            return int(line.split()[1])
    return None


def make_cycle(n: int, f: BootFacts, results: Path, before: lun.HostCheck, after: lun.HostCheck) -> Cycle:
    pid = read(results, "uiscsid.pid")
    stop = f.step("uiscsid-stop")
    umount = f.step("umount-net")
    return Cycle(
        cycle=n,
        seconds=f.seconds,
        error=f.error,
        fsck_exit=f.fsck_exit,
        journal_replayed=f.journal_replayed,
        found_clean=before.clean and f.fsck_exit == 0 and not f.journal_replayed,
        mounted=bool(read(results, "mounts")),
        payload_ok=f.previous_payload == "ok",
        previous_payload=f.previous_payload,
        wrote_sha256=f.wrote_sha256,
        dirty_kb=_dirty_kb(read(results, "meminfo")),
        daemon_signalled=guest.signalled(f.output("shutdown-kill"), int(pid)) if pid.isdigit() else [],
        umount_exit=umount.rc if umount else None,
        umount_io_errors=f.io_errors("umount-net"),
        daemon_stop_exit=stop.rc if stop else None,
        host_after=after,
        timings=f.timings(),
        timeline=f.timeline,
    )


def failures(cycles: list[Cycle], final: lun.HostCheck) -> list[str]:
    """Every way the run was not clean, in words (empty: clean)."""
    out = []
    for c in cycles:
        where = f"cycle {c.cycle}"
        if c.error:
            out.append(f"{where}: the boot failed: {c.error}")
            continue
        if not c.found_clean and not c.inherited:
            why = "fsck replayed the journal" if c.journal_replayed else f"fsck -N -p exit {c.fsck_exit}"
            out.append(f"{where}: the filesystem was not clean at boot ({why})")
        if not c.mounted:
            out.append(f"{where}: the filesystem was not mounted")
        if not c.payload_ok:
            out.append(f"{where}: the previous payload was {c.previous_payload}")
        if c.daemon_signalled:
            out.append(f"{where}: shutdown-kill sent uiscsid {'+'.join(c.daemon_signalled)}")
        if c.umount_exit != 0:
            out.append(f"{where}: umount -a -N exit {c.umount_exit}")
        if c.umount_io_errors:
            out.append(f"{where}: umount -a -N hit {c.umount_io_errors} I/O error line(s)")
        if c.daemon_stop_exit != 0:
            out.append(
                f"{where}: the last step, stopping uiscsid, exit {c.daemon_stop_exit} (3: it was gone)"
            )
        order = ordering([e.as_dict() for e in c.timeline])
        if order.ok is False:
            out.append(f"{where}: out of order: {order.summary}")
        out += c.host_after.failures(where) if c.host_after is not None else []
    return out + final.final_failure()


def reboot_test(
    lun_file: Path,
    cycles: int,
    shim: bool,
    workdir: Path,
    runner: Runner,
    payload_mb: int = 8,
    on_cycle: Callable[[Cycle, BootFacts], None] | None = None,
    attach: str = "",
) -> dict:
    """Run CYCLES boots against LUN_FILE and return the report (see `bootkit vm reboot-test --help`).

    ``on_cycle`` sees each cycle as soon as its host check is done (the demo narrates from it).
    """
    t0 = time.monotonic()
    lun_file, workdir, created = prepare(lun_file, workdir, payload_mb)
    say = runner.say
    initial = lun.check(lun_file)
    say(
        f"LUN {lun_file}: {'created, formatted and seeded' if created else 'reused'}; "
        f"needs_recovery={initial.needs_recovery}, {initial.tool} exit {initial.exit}"
    )
    if not initial.clean:
        say(
            "the LUN is not clean (a previous --no-shim run or power cut?): cycle 1 will repair it and is "
            "not counted"
        )
    report: list[Cycle] = []
    with start_target(workdir, lun_file) as tgt:
        say(f"tgtd serves it as {tgt.iqn} on 127.0.0.1:{tgt.port} (10.0.2.2:{tgt.port} in the guest)")
        plan = guest.GuestPlan(port=tgt.port, shim=shim, payload_mb=payload_mb, attach=attach)
        rc_dir = guest.render_dir(plan, workdir / "rc")
        before = initial
        for n in range(1, cycles + 1):
            say(f"cycle {n}/{cycles}: boot ({'shim on' if shim else 'NO SHIM: uiscsid --no-flag'})")
            results = workdir / f"cycle{n}"
            f = facts(runner.boot(rc_dir, results, CYCLE))
            after = lun.check(lun_file, expected=f.wrote_sha256)
            c = make_cycle(n, f, results, before, after)
            c.inherited = n == 1 and not initial.clean
            report.append(c)
            if on_cycle is not None:
                on_cycle(c, f)
            say(
                f"cycle {n}: {f.seconds:.0f} s, fsck -N -p exit {c.fsck_exit}"
                f"{' (journal replayed)' if c.journal_replayed else ''}, "
                f"previous payload {c.previous_payload}, "
                f"shutdown: uiscsid {'killed' if c.daemon_signalled else 'spared'}, "
                f"LUN {'clean' if c.shutdown_clean else 'DIRTY'} (needs_recovery={after.needs_recovery})"
            )
            before = after
            if f.error and f.exit_code is None:
                break
    final = lun.check(lun_file, expected=report[-1].wrote_sha256 if report else initial.recorded_sha256)
    bad = failures(report, final)
    ok = not bad if shim else bool(bad)
    return {
        "test": "reboot",
        **guest.describe(plan),
        "shim": shim,
        "lun_file": str(lun_file),
        "created": created,
        "initial": initial.as_dict(),
        "cycles": [c.as_dict() for c in report],
        "final": final.as_dict(),
        "expected": "clean" if shim else "failure",
        "failures": bad,
        "ok": ok,
        "seconds": round(time.monotonic() - t0, 1),
        "workdir": str(workdir),
    }


def order_of(f: BootFacts) -> dict:
    """The recovery boot's order, in seconds since "boot begin", and whether it is the required one."""
    fsck, mount, svc = f.step("fsck-net"), f.step("mount-net"), f.step("services")
    starts = {name: f.service_start(name) for name in ("writer", "nodisk")}
    times = {
        "fsck_begin": fsck and fsck.begin,
        "fsck_end": fsck and fsck.end,
        "mount_begin": mount and mount.begin,
        "mount_end": mount and mount.end,
        "services_begin": svc and svc.begin,
        **{f"{k}_start": v for k, v in starts.items()},
    }
    ok = (
        None not in times.values()
        and times["fsck_end"] <= times["mount_begin"]
        and times["mount_end"] <= times["services_begin"]
        and all(v >= times["mount_end"] for v in starts.values())
    )
    return {"ok": ok, **{k: relative(f, v) for k, v in times.items()}}


def power_cut_test(lun_file: Path, workdir: Path, runner: Runner, payload_mb: int = 8, attach: str = "") -> dict:
    """Cut the power mid-write, then boot again: fsck -N -p must repair before mount -a -N and services."""
    t0 = time.monotonic()
    lun_file, workdir, created = prepare(lun_file, workdir, payload_mb)
    say = runner.say
    with start_target(workdir, lun_file) as tgt:
        plan = guest.GuestPlan(port=tgt.port, payload_mb=payload_mb, attach=attach)
        rc_dir = guest.render_dir(plan, workdir / "rc")
        say("boot 1: write and sync a payload, keep writing churn, then pull the plug")
        r1 = runner.boot(
            rc_dir,
            workdir / "cut",
            CYCLE,
            env={"PROOF_CUT": "1"},
            power_cut=PowerCut(marker=CUT_MARKER, delay=0.5),
        )
        f1 = facts(r1)
        cut = lun.check(lun_file)
        say(
            f"power cut {'fired' if r1.power_cut else 'DID NOT FIRE'} after {f1.seconds:.0f} s; the LUN "
            f"{'needs journal recovery' if cut.needs_recovery else 'does not need recovery'}"
        )
        say("boot 2: fsck -N -p must repair before mount -a -N, and the services come after both")
        f2 = facts(runner.boot(rc_dir, workdir / "recovery", CYCLE))
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
    say(
        f"boot 2: fsck -N -p exit {f2.fsck_exit}"
        f"{' after replaying the journal' if f2.journal_replayed else ''}; order ok: {order['ok']}; "
        f"synced payload {f2.previous_payload}"
    )
    return {
        "test": "power-cut",
        **guest.describe(plan),
        "lun_file": str(lun_file),
        "created": created,
        "cut": {
            "fired": r1.power_cut,
            "seconds": f1.seconds,
            "synced_sha256": f1.wrote_sha256,
            "host": cut.as_dict(),
        },
        "recovery": {
            "seconds": f2.seconds,
            "error": f2.error,
            "fsck_exit": f2.fsck_exit,
            "journal_replayed": f2.journal_replayed,
            "repaired": repaired,
            "fsck_output": f2.fsck_output,
            "order": order,
            "previous_payload": f2.previous_payload,
            "timings": f2.timings(),
            "timeline": [e.as_dict() for e in f2.timeline],
        },
        "host_after": after.as_dict(),
        "checks": checks,
        "ok": all(checks.values()),
        "seconds": round(time.monotonic() - t0, 1),
        "workdir": str(workdir),
    }
