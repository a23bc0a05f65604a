"""The target-down proof: the guest boots while the host's tgtd is not there.

The boot must end within a bound with a clear message, the service that does not need the disk must
start and the one that does must refuse. Then the guest asks the host to start tgtd (on the port the
config names) and runs `uiscsictl reload`, `bootkit fsck -N -p` and `bootkit mount -a -N` by hand: the
LUN attaches and mounts, the writer runs, and the normal rc.shutdown leaves the LUN clean.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, Self

from vm.scenarios import guest, lun
from vm.scenarios.facts import Runner, facts, prepare, read, start_target
from vm.targets import free_port

LATE = [f"{guest.GUEST_RC_DIR}/late.sh"]


class Stoppable(Protocol):
    def stop(self) -> None: ...


class LateTarget:
    """Starts tgtd once the guest asks for it (a file in /results), on the port the guest's config names."""

    def __init__(self, results: Path, port: int, lun_file: Path, workdir: Path, deadline: float,
                 start: Callable[[], Stoppable] | None = None) -> None:
        self.results, self.port, self.lun_file, self.workdir = results, port, lun_file, workdir
        self.deadline = deadline
        # what comes up on the port when the guest asks: tgtd on the LUN file, or (an admin's target) a relay
        self.start = start or (lambda: start_target(self.workdir, self.lun_file, port=self.port))
        self.tgt: Stoppable | None = None
        self.error: str | None = None
        self.started_at: float | None = None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="proof-late-target", daemon=True)

    def _run(self) -> None:
        while not (self.results / "target-up.request").exists():
            if self.stop_event.wait(0.2) or time.monotonic() > self.deadline:
                return
        try:
            self.tgt = self.start()
            self.started_at = time.monotonic()
        except (RuntimeError, OSError, TimeoutError) as exc:
            self.error = str(exc)
        (self.results / "target-up.done").write_text("error\n" if self.error else "ok\n")

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
        if self.tgt is not None:
            self.tgt.stop()


def target_down_test(
    lun_file: Path, workdir: Path, runner: Runner, bound: float = 120.0, payload_mb: int = 8, attach: str = ""
) -> dict:
    """Boot with the target down, then bring it back; see the module docstring. Returns the report."""
    t0 = time.monotonic()
    lun_file, workdir, created = prepare(lun_file, workdir, payload_mb)
    say = runner.say
    port = free_port()  # nothing listens there until the guest asks
    plan = guest.GuestPlan(port=port, payload_mb=payload_mb, attach=attach)
    rc_dir = guest.render_dir(plan, workdir / "rc")
    results = workdir / "boot"
    results.mkdir(parents=True, exist_ok=True)
    say(
        f"boot with the target down (nothing listens on 10.0.2.2:{port}); reload waits {plan.reload_wait:g} s"
    )
    with LateTarget(results, port, lun_file, workdir, time.monotonic() + runner.timeout) as late:
        r = runner.boot(rc_dir, results, LATE)
    f = facts(r)
    reload = f.step("reload")
    message = [ln for ln in f.output("reload") if ln.strip()]
    boot = {
        "rc_seconds": f.rc_seconds,
        "bound": bound,
        "reload_exit": reload.rc if reload else None,
        "reload_seconds": round(reload.end - reload.begin, 3) if reload and reload.end else None,
        "message": message,
        "fsck_exit": f.fsck_exit,
        "mount_exit": f.mount_exit,
        "mounted": read(results, "boot.mounted") == "mounted",
        "nodisk_service": read(results, "boot.nodisk", "none"),
        "writer_service": read(results, "boot.writer", "none"),
    }
    after_late = {
        "target_started": late.started_at is not None,
        "target_error": late.error,
        "reload_exit": _int(read(results, "late.reload")),
        "fsck_exit": _int(read(results, "late.fsck")),
        "mount_exit": _int(read(results, "late.mount")),
        "mounted": read(results, "late.mounted") == "mounted",
        "writer": read(results, "late.writer"),
    }
    host = lun.check(lun_file, expected=f.wrote_sha256)
    checks = {
        "boot_finished_within_bound": f.rc_seconds is not None and f.rc_seconds <= bound,
        "clear_message": boot["reload_exit"] not in (0, None) and any("proof" in ln for ln in message),
        "nodisk_service_started": boot["nodisk_service"] == "started",
        "disk_service_refused": boot["writer_service"] == "refused" and not boot["mounted"],
        "late_attach_and_mount": after_late["reload_exit"] == 0
        and after_late["fsck_exit"] == 0
        and after_late["mount_exit"] == 0
        and after_late["mounted"],
        "writer_ran_after_mount": after_late["writer"] == "written",
        "clean_after_shutdown": host.clean and host.payload_ok is True,
    }
    say(
        f"boot finished in {f.rc_seconds} s (bound {bound:g} s), reload exit {boot['reload_exit']}: "
        f"{message[-1] if message else '(no message)'}"
    )
    say(
        f"target back: reload {after_late['reload_exit']}, fsck -N -p {after_late['fsck_exit']}, "
        f"mount -a -N {after_late['mount_exit']}, mounted={after_late['mounted']}"
    )
    return {
        "test": "target-down",
        **guest.describe(plan),
        "lun_file": str(lun_file),
        "created": created,
        "seconds_boot": f.seconds,
        "error": f.error,
        "boot": boot,
        "after_target_returns": after_late,
        "timings": f.timings(),
        "timeline": [e.as_dict() for e in f.timeline],
        "host_after": host.as_dict(),
        "checks": checks,
        "ok": all(checks.values()),
        "seconds": round(time.monotonic() - t0, 1),
        "workdir": str(workdir),
    }


def _int(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None
