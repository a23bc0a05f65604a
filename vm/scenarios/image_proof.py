"""The proofs on a Debian guest image, for any init system of vm/scenarios/inits.py (systemd today).

The guest is a Debian 12 root with the project's .deb installed by apt (vm/guest_image.py), the plan's
fstab line and uiscsi.conf, and the init's proof services; every boot of a test is a fresh QEMU on the same
root image, so a reboot really is one. The host judges every shutdown the same way as for the busybox
proof (vm/scenarios/lun.py: needs_recovery, `e2fsck -fn`, the payload's hash), and every boot is kept as a
timeline of events with the guest's and the host's clocks (vm/scenarios/timeline.py).

- `reboot_test`: N cycles of boot (the init's own fstab handling: fsck, then mount), the writer's payload
  left unsynced, and the init's reboot or poweroff; a plan the init says is a negative control
  (`ImageInit.expects_damage`) must leave the LUN needing recovery instead.
- `power_cut_test`: QEMU killed mid-write; the next boot must replay the journal before the mount, and
  the service ordered after the network filesystems must start after both.
- `target_down_test`: the boot must reach its end within a bound with the target down; once the target is
  back, `uiscsictl reload` brings the link and the filesystem is checked and mounted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vm.deb import DebBuildError, ensure_deb
from vm.guest_image import GuestImage, make_image
from vm.harness import GuestResult, PowerCut
from vm.report.properties import ordering
from vm.scenarios import lun, source, timeline
from vm.scenarios.facts import CycleVerdict, Runner, read
from vm.scenarios.inits import PROOF_DIR, ImageInit
from vm.scenarios.plan import ProofPlan
from vm.scenarios.source import LunSource
from vm.scenarios.target_down import LateTarget
from vm.scenarios.timeline import Event
from vm.targets import free_port

CUT_MARKER = "cut now"
# The events a report sums up as timings (guest seconds since the kernel started).
TIMINGS = ("daemon-ready", "reload-done", "reload-failed", "device-found", "fsck-begin", "fsck-end",
           "mounted", "remote-fs", "writer-start", "boot-done", "shutdown-begin", "services-stopped",
           "unmounted", "unmount-failed", "logout-end", "final-term", "final-unmount", "final-done",
           "power-off")
PlanFor = Callable[[int], ProofPlan]  # the target's port -> the plan


def build(init: ImageInit, plan: ProofPlan, workdir: Path, runner: Runner, deb: Path | None) -> GuestImage:
    """The guest's root disk: the Debian root, the .deb (the checkout's, built if needed) and the plan's
    files, as an admin would install them."""
    if deb is None:
        try:
            deb = ensure_deb(progress=runner.say)
        except DebBuildError as e:
            raise DebBuildError(f"{e}\n(the .deb is built from a checkout of the project; elsewhere pass "
                                "--deb PATH)") from None
    runner.say(f"building the {init.name} guest image with {deb.name}")
    kernel = runner.boot_files.kernel if runner.boot_files else None
    return make_image(workdir / "root.img", init.variant, debs=[deb], files=init.files(plan),
                      dirs=init.dirs(plan), enable_units=init.enable(plan), kernel=kernel, progress=runner.say)


def command(script: str, **env: str) -> str:
    """The boot's command: one of the proof scripts in the image, with extra settings."""
    assigns = "".join(f"{k}={v} " for k, v in env.items())
    return f"#!/bin/sh\n{assigns}exec {PROOF_DIR}/{script}\n"


@dataclass
class Boot:
    """One boot, read back: its result, its timeline and the files it left in /results."""

    result: GuestResult
    events: list[Event]
    results: Path

    @property
    def error(self) -> str | None:
        return self.result.error

    def file(self, name: str, default: str = "") -> str:
        return read(self.results, name, default)

    def at(self, name: str, which: str = "first") -> float | None:
        return timeline.at(self.events, name, which)

    def timings(self) -> dict[str, float | None]:
        return {name: self.at(name) for name in TIMINGS}

    def saw(self, name: str) -> bool:
        return timeline.first(self.events, name) is not None


def boot(init: ImageInit, plan: ProofPlan, image: GuestImage, results: Path, runner: Runner, script: str,
         power_cut: PowerCut | None = None) -> Boot:
    r = runner.boot_image(image, results, script, kernel_args=init.kernel_args,
                          journal_to_console=init.journal_to_console, power_cut=power_cut)
    events = init.timeline(plan, r)
    if r.power_cut:
        events.append(Event("cut", None, round(r.duration, 3), "the host killed QEMU"))
    return Boot(r, events, results)


def _dirty_kb(text: str) -> int | None:
    m = re.search(r"^Dirty:\s+(\d+)", text, flags=re.MULTILINE)
    return int(m[1]) if m else None


# ------------------------------------------------------------------------------------------ reboot
@dataclass
class Cycle(CycleVerdict):
    """One reboot cycle on an image guest."""

    cycle: int
    seconds: float
    error: str | None
    exit_code: int | None
    fsck_ran: bool
    journal_replayed: bool
    fsck_output: list[str]
    found_clean: bool  # host: no needs_recovery before the boot; the fsck ran (if due), nothing replayed
    device_found: bool
    mounted: bool
    mount_source: str
    payload_ok: bool
    previous_payload: str
    wrote_sha256: str | None
    dirty_kb: int | None
    busy: bool | None  # the holder ran through the shutdown (None: not asked for)
    shutdown: dict
    stop_bounds: list[dict]
    timings: dict[str, float | None]
    timeline: list[Event]
    host_after: lun.HostCheck | None  # None: the host cannot read the LUN (the next boot's fsck judges it)
    inherited: bool = False
    fsck_expected: bool = True  # the fstab line's passno is not 0 (an admin's xfs or btrfs line often has 0)


def make_cycle(n: int, init: ImageInit, plan: ProofPlan, b: Boot, before: lun.HostCheck | None,
               after: lun.HostCheck | None) -> Cycle:
    replayed = b.saw("fsck-replay") or b.saw("mount-replay")  # xfs and btrfs replay their log at mount
    fsck_ran, fsck_expected = b.saw("fsck-end"), plan.fstab.passno > 0
    return Cycle(
        cycle=n, seconds=b.result.duration, error=b.error, exit_code=b.result.exit_code,
        fsck_ran=fsck_ran, fsck_expected=fsck_expected, journal_replayed=replayed,
        fsck_output=init.fsck_output(b.result),
        found_clean=(before is None or before.clean) and (fsck_ran or not fsck_expected) and not replayed,
        device_found=b.saw("device-found"), mounted=bool(b.file("mounts")), mount_source=b.file("mount.source"),
        payload_ok=b.file("prev.payload") == "ok", previous_payload=b.file("prev.payload", "unknown"),
        wrote_sha256=lun.recorded_hash(b.file("new.sha256").encode()), dirty_kb=_dirty_kb(b.file("meminfo")),
        busy=(b.file("busy.rc") == "0") if plan.busy else None,
        shutdown=init.shutdown_facts(plan, b.events, b.result), stop_bounds=init.stop_bounds(plan, b.events),
        timings=b.timings(), timeline=b.events, host_after=after)


def failures(plan: ProofPlan, cycles: list[Cycle], final: lun.HostCheck) -> list[str]:
    """Every way the run was not clean, in words (empty: clean)."""
    out = []
    for c in cycles:
        where = f"cycle {c.cycle}"
        if c.error:
            out.append(f"{where}: the boot failed: {c.error}")
            continue
        if not c.found_clean and not c.inherited:
            why = "the fsck replayed the journal" if c.journal_replayed else (
                "no fsck ran" if c.fsck_expected and not c.fsck_ran else "the LUN was not clean before the boot")
            out.append(f"{where}: the filesystem was not clean at boot ({why})")
        if not c.device_found:
            out.append(f"{where}: the init never saw the device {plan.fstab.source}")
        if not c.mounted:
            out.append(f"{where}: the filesystem was not mounted")
        elif c.mount_source != plan.fstab.source:
            out.append(f"{where}: mounted from {c.mount_source!r}, not the fstab's {plan.fstab.source}")
        if not c.payload_ok:
            out.append(f"{where}: the previous payload was {c.previous_payload}")
        if c.shutdown.get("root_read_only") is False:
            out.append(f"{where}: systemd-shutdown did not remount the root read-only")
        if plan.busy and not c.busy:
            out.append(f"{where}: the process meant to hold the filesystem through the shutdown did not run")
        for b in c.stop_bounds:
            if not b["ok"]:
                out.append(f"{where}: {b['step']} took {b['seconds']} s (bound {b['bound']:g} s)")
        order = ordering([e.as_dict() for e in c.timeline], fsck=c.fsck_expected)
        if order.ok is False:
            out.append(f"{where}: out of order: {order.summary}")
        out += c.host_after.failures(where) if c.host_after is not None else []
    return out + final.final_failure()


def reboot_test(init: ImageInit, plan_for: PlanFor, lun_file: Path | LunSource, cycles: int, workdir: Path,
                runner: Runner, deb: Path | None = None, on_cycle: Callable[[Cycle], None] | None = None) -> dict:
    """CYCLES boots of an image guest against the LUN (a file the built-in tgtd serves, or an admin's
    `LunSource`); the report (see `bootkit vm reboot-test --help`)."""
    t0 = time.monotonic()
    src = source.of(lun_file)
    workdir = src.prepare(workdir, runner)
    say = runner.say
    initial = src.check()
    if initial is not None:
        say(f"LUN before the run: needs_recovery={initial.needs_recovery}, {initial.tool} exit {initial.exit}")
    # a LUN this run did not seed may hold no payload yet: cycle 1 then finds none, which is no failure
    no_payload_yet = not src.seeded and (initial is None or initial.payload_ok is None)
    report: list[Cycle] = []
    with src.served(workdir) as port:
        plan = plan_for(port)
        say(f"{src.served_text}; fstab: {plan.fstab.line()}")
        image = build(init, plan, workdir, runner, deb)
        before = initial
        expect = "the LUN left needing recovery" if init.expects_damage(plan) else "clean"
        for n in range(1, cycles + 1):
            say(f"cycle {n}/{cycles}: boot ({init.name}, attach {plan.attach or 'auto'}, "
                f"shim {'on' if plan.shim else 'OFF'}{', busy' if plan.busy else ''}; expected: {expect})")
            b = boot(init, plan, image, workdir / f"cycle{n}", runner, command("cycle.sh"))
            after = src.check(lun.recorded_hash(b.file("new.sha256").encode()))
            c = make_cycle(n, init, plan, b, before, after)
            c.inherited = n == 1 and initial is not None and not initial.clean
            if n == 1 and no_payload_yet and c.previous_payload == "none":
                c.payload_ok = True
            report.append(c)
            if on_cycle is not None:
                on_cycle(c)
            s = c.shutdown
            say(f"cycle {n}: {c.seconds:.0f} s, fsck {'replayed the journal' if c.journal_replayed else 'clean'}, "
                f"previous payload {c.previous_payload}; shutdown: unmount {s.get('unmount')}, "
                f"daemon {'spared' if s.get('daemon_spared') else 'not spared'}, LUN "
                f"{'clean' if c.shutdown_clean else 'DIRTY'}"
                f"{f' (needs_recovery={after.needs_recovery})' if after else ' (judged by the next boot)'}")
            before = after
            if b.error and b.result.exit_code is None:
                break
    final = src.final(report[-1].wrote_sha256 if report else None, workdir, runner)
    if report and report[-1].host_after is None:
        report[-1].host_after = final  # a last guest boot judged how the last shutdown left it
    bad = failures(plan, report, final)
    damage = init.expects_damage(plan)
    harness = [f for f in bad if "the boot failed" in f or "did not run" in f]
    ok = not bad if not damage else (not harness and any(not c.shutdown_clean for c in report))
    return {"test": "reboot", **plan.describe(), **src.describe(), "check": final.check,
            "image": {"path": str(image.path), "build_seconds": image.timings},
            "initial": initial.as_dict() if initial else None, "cycles": [c.as_dict() for c in report], "final": final.as_dict(),
            "expected": "damage" if damage else "clean", "failures": bad, "ok": ok,
            "seconds": round(time.monotonic() - t0, 1), "workdir": str(workdir)}


def shutdown_checks(init: ImageInit, plan: ProofPlan, b: Boot) -> dict[str, bool]:
    """A clean shutdown with nothing busy: unmounted first, then the session logged out, every stop job
    within its bound, the root read-only at the end."""
    s = init.shutdown_facts(plan, b.events, b.result)
    bounds = init.stop_bounds(plan, b.events)
    unmounted, logged_out = b.at("unmounted"), b.at("logout-end")
    return {"unmounted_then_logged_out": s["unmount"] == "ok" and any("detached" in x for x in s["logout"])
            and unmounted is not None and logged_out is not None and unmounted <= logged_out,
            "stop_jobs_within_bounds": bool(bounds) and all(x["ok"] for x in bounds),
            "root_read_only_at_the_end": s.get("root_read_only") is not False}


# ------------------------------------------------------------------------------------------ power cut
def power_cut_test(init: ImageInit, plan_for: PlanFor, lun_file: Path | LunSource, workdir: Path, runner: Runner,
                   deb: Path | None = None) -> dict:
    """Cut the power mid-write; the next boot must replay the journal (ext4: the fsck, before the mount;
    xfs, btrfs: the mount itself) and the service ordered after the network filesystems must start after
    both."""
    t0 = time.monotonic()
    src = source.of(lun_file)
    workdir = src.prepare(workdir, runner)
    say = runner.say
    with src.served(workdir) as port:
        plan = plan_for(port)
        image = build(init, plan, workdir, runner, deb)
        say("boot 1: write and sync a payload, keep writing churn, then pull the plug")
        b1 = boot(init, plan, image, workdir / "cut", runner, command("cycle.sh", PROOF_CUT="1"),
                  power_cut=PowerCut(marker=CUT_MARKER, delay=0.5))
        cut = src.check()
        say(f"power cut {'fired' if b1.result.power_cut else 'DID NOT FIRE'} after {b1.result.duration:.0f} s; "
            + ("the host cannot read the LUN: the next boot shows whether it needs recovery" if cut is None else
               f"the LUN {'needs recovery' if cut.needs_recovery else 'does not need recovery'}"))
        say("boot 2: the fsck must replay the journal before the mount, the writer must start after both")
        b2 = boot(init, plan, image, workdir / "recovery", runner, command("cycle.sh"))
    after = src.final(lun.recorded_hash(b2.file("new.sha256").encode()), workdir, runner)
    order = {k: b2.at(k) for k in ("fsck-begin", "fsck-replay", "fsck-end", "mount-begin", "mount-replay",
                                   "mounted", "remote-fs", "writer-start")}
    replay = "fsck-replay" if src.fstype == "ext4" else "mount-replay"  # fsck.xfs and fsck.btrfs do nothing
    t = order
    fsck = plan.fstab.passno > 0  # passno 0: no check at boot; the mount's replay is what is judged
    in_order = all(t[k] is not None for k in ("mount-begin", "mounted", "remote-fs", "writer-start")) and (
        (not fsck or (t["fsck-end"] is not None and t["fsck-end"] <= t["mount-begin"]))  # type: ignore[operator]
        and t["mount-begin"] <= t["mounted"] <= t["writer-start"]  # type: ignore[operator]
        and t["remote-fs"] <= t["writer-start"])  # type: ignore[operator]
    checks = {
        "power_cut_fired": b1.result.power_cut and b1.result.exit_code is None,
        "dirty_after_cut": cut.needs_recovery if cut is not None else b2.saw(replay),
        ("fsck_replayed_before_mount" if replay == "fsck-replay" else "mount_replayed_the_log"):
            b2.saw(replay) and bool(in_order),
        "service_after_fsck_and_mount": bool(in_order),
        "synced_payload_survived": b2.file("prev.payload") == "ok",
        "clean_after_next_shutdown": not after.damaged,
        **shutdown_checks(init, plan, b2),
    }
    say(f"boot 2: {'replayed the journal' if b2.saw(replay) else 'did not replay'}; order "
        f"{'fsck < mount < writer' if in_order else 'WRONG'}; synced payload {b2.file('prev.payload')}")
    return {"test": "power-cut", **plan.describe(), **src.describe(), "check": after.check,
            "cut": {"fired": b1.result.power_cut, "seconds": b1.result.duration,
                    "host": cut.as_dict() if cut else None,
                    "timeline": [e.as_dict() for e in b1.events]},
            "recovery": {"seconds": b2.result.duration, "error": b2.error,
                         "journal_replayed": b2.saw(replay), "fsck_output": init.fsck_output(b2.result),
                         "order": order, "previous_payload": b2.file("prev.payload"), "timings": b2.timings(),
                         "shutdown": init.shutdown_facts(plan, b2.events, b2.result),
                         "stop_bounds": init.stop_bounds(plan, b2.events),
                         "timeline": [e.as_dict() for e in b2.events]},
            "host_after": after.as_dict(), "checks": checks, "ok": all(checks.values()),
            "seconds": round(time.monotonic() - t0, 1), "workdir": str(workdir)}


# ------------------------------------------------------------------------------------------ target down
def target_down_test(init: ImageInit, plan_for: PlanFor, lun_file: Path | LunSource, workdir: Path,
                     runner: Runner, bound: float = 120.0, deb: Path | None = None) -> dict:
    """Boot with the target down: the boot must end within ``bound`` (guest seconds); then the target
    comes back, `uiscsictl reload` brings the link and the filesystem is checked and mounted."""
    t0 = time.monotonic()
    src = source.of(lun_file)
    workdir = src.prepare(workdir, runner)
    say = runner.say
    port = free_port()  # nothing listens there until the guest asks
    src.relayed = True  # an admin's target is reached through a relay on that port, up when the guest asks
    plan = plan_for(port)
    image = build(init, plan, workdir, runner, deb)
    results = workdir / "boot"
    results.mkdir(parents=True, exist_ok=True)
    say(f"boot with the target down (nothing listens on 10.0.2.2:{port}); fstab: {plan.fstab.line()}")
    with LateTarget(results, port, src.lun_file or workdir, workdir, time.monotonic() + runner.timeout,
                    start=src.late_start(workdir, port)) as late:
        b = boot(init, plan, image, results, runner, command("late.sh"))
    host = src.final(lun.recorded_hash(b.file("new.sha256").encode()), workdir, runner)
    ev = b.events
    reload_at = b.at("late-reload")
    message = init.reload_messages(b.result)
    fsck_late = next((e for e in ev if e.name == "fsck-end" and reload_at is not None and e.guest_t is not None
                      and e.guest_t >= reload_at), None)
    mount_late = next((e for e in ev if e.name == "mounted" and reload_at is not None and e.guest_t is not None
                       and e.guest_t >= reload_at), None)
    boot_done = b.at("boot-done")
    after_late = {"target_started": late.started_at is not None, "target_error": late.error,
                  "reload_exit": _int(b.file("late.reload")), "mount_command_exit": _int(b.file("late.mount")),
                  "mounted": b.file("late.mounted") == "mounted", "writer": b.file("late.writer"),
                  "fsck_end": fsck_late.guest_t if fsck_late else None,
                  "mounted_at": mount_late.guest_t if mount_late else None}
    checks = {
        "boot_finished_within_bound": boot_done is not None and boot_done <= bound,
        "clear_message": b.saw("reload-failed") and any(plan.target.name in m for m in message),
        "nodisk_service_started": b.file("boot.nodisk") == "started",
        # refused by writer.sh, or never run (systemd: the mount it requires failed)
        "disk_service_refused": b.file("boot.writer") in ("refused", "none") and b.file("boot.mounted") == "no",
        "late_reload_ok": after_late["reload_exit"] == 0,
        # passno 0 (an admin's xfs or btrfs line): no check is due, mounted once back is the claim
        ("checked_then_mounted_once_back" if plan.fstab.passno > 0 else "mounted_once_back"):
            mount_late is not None and after_late["mounted"] and (plan.fstab.passno == 0 or (
                fsck_late is not None and fsck_late.guest_t <= mount_late.guest_t)),  # type: ignore[operator]
        "writer_ran_after_mount": after_late["writer"] == "written",
        "clean_after_shutdown": not host.damaged,
        **shutdown_checks(init, plan, b),
    }
    say(f"boot done at {boot_done} s (bound {bound:g} s); reload at boot: "
        f"{message[-1] if message else '(no message)'}")
    say(f"target back: reload exit {after_late['reload_exit']}, checked at {after_late['fsck_end']} s, "
        f"mounted at {after_late['mounted_at']} s, writer {after_late['writer']}")
    return {"test": "target-down", **plan.describe(), **src.describe(), "check": host.check,
            "bound": bound, "seconds_boot": b.result.duration, "error": b.error,
            "boot": {"boot_done": boot_done, "reload_failed_at": b.at("reload-failed"), "message": message,
                     "device_timeout": plan.fstab.option("x-systemd.device-timeout"),
                     "mounted": b.file("boot.mounted") == "mounted", "nodisk_service": b.file("boot.nodisk"),
                     "writer_service": b.file("boot.writer")},
            "after_target_returns": after_late, "timings": b.timings(),
            "shutdown": init.shutdown_facts(plan, ev, b.result), "stop_bounds": init.stop_bounds(plan, ev),
            "timeline": [e.as_dict() for e in ev],
            "host_after": host.as_dict(), "checks": checks, "ok": all(checks.values()),
            "seconds": round(time.monotonic() - t0, 1), "workdir": str(workdir)}


def _int(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None
