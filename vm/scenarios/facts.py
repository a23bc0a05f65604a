"""What one proof boot did, read back from its console, the rc step log and the files it left in /results."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from vm.guest_image import GuestImage
from vm.harness import BootFiles, GuestResult, PowerCut, run_guest
from vm.image_boot import run_image
from vm.report.progress import Progress
from vm.scenarios import guest, lun, timeline
from vm.scenarios.lun import recorded_hash
from vm.scenarios.timeline import Event
from vm.targets import Tgt

Say = Callable[[str], None]
_IO_ERROR = re.compile(r"I/O error", re.IGNORECASE)


@dataclass
class Runner:
    """How the scenarios boot guests and talk to the user (progress on stderr, the console optional)."""

    boot_files: BootFiles | None = None
    stream: TextIO | None = None
    say: Say = lambda text: None
    timeout: float = 420.0
    progress: Progress | None = None  # told when each boot begins and ends (the terminal's status line)

    def _begin(self, results: Path) -> None:
        """A fresh RESULTS directory for the next boot; the status line's next cycle begins."""
        shutil.rmtree(results, ignore_errors=True)
        results.mkdir(parents=True)
        if self.progress:
            self.progress.begin()

    def _end(self, results: Path, r: GuestResult) -> GuestResult:
        """The boot's console kept in RESULTS; the status line's cycle ends."""
        (results / "console.log").write_text(r.console + "\n")
        if self.progress:
            self.progress.end()
        return r

    def boot(
        self,
        rc_dir: Path,
        results: Path,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        power_cut: PowerCut | None = None,
    ) -> GuestResult:
        self._begin(results)
        r = run_guest(
            list(command),
            rc_dir=rc_dir,
            net=True,
            results_dir=results,
            timeout=self.timeout,
            env=env,
            power_cut=power_cut,
            stream=self.stream,
            boot_files=self.boot_files,
        )
        return self._end(results, r)

    def boot_image(
        self,
        image: GuestImage,
        results: Path,
        script: str,
        *,
        kernel_args: Sequence[str] = (),
        journal_to_console: bool = False,
        power_cut: PowerCut | None = None,
    ) -> GuestResult:
        """One boot of a Debian guest image (vm/image_boot.py); ``script`` shuts the guest down itself."""
        self._begin(results)
        r = run_image(
            image,
            script=script,
            after="none",
            net=True,
            results_dir=results,
            power_cut=power_cut,
            timeout=self.timeout,
            stream=self.stream,
            kernel_args=kernel_args,
            journal_to_console=journal_to_console,
            kernel=self.boot_files.kernel if self.boot_files else None,
        )
        return self._end(results, r)


class CycleVerdict:
    """What every scenario's reboot cycle (a dataclass with these fields) concludes from its fields."""

    error: str | None
    found_clean: bool
    mounted: bool
    host_after: lun.HostCheck | None  # None: the host cannot read the LUN; the next boot judges the shutdown
    timeline: list[Event]

    @property
    def shutdown_clean(self) -> bool:
        return self.host_after is None or not self.host_after.damaged

    @property
    def clean(self) -> bool:
        return self.error is None and self.found_clean and self.mounted

    def as_dict(self) -> dict:
        d = asdict(self)  # type: ignore[call-overload]
        d.update(clean=self.clean, shutdown_clean=self.shutdown_clean,
                 host_after=self.host_after.as_dict() if self.host_after is not None else None,
                 timeline=[e.as_dict() for e in self.timeline])
        return d


def prepare(lun_file: Path, workdir: Path, payload_mb: int) -> tuple[Path, Path, bool]:
    """Every scenario's opening: absolute paths, the work dir made, and the LUN file created, formatted
    and seeded on first use. Returns (lun_file, workdir, created)."""
    lun_file, workdir = Path(lun_file).resolve(), Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return lun_file, workdir, lun.ensure(lun_file, payload_mb=payload_mb)


def start_target(workdir: Path, lun_file: Path, port: int | None = None) -> Tgt:
    """A tgtd serving LUN_FILE as LUN 1 of the proof's IQN (a failed launch is retried: `Tgt.start_retrying`)."""
    return Tgt.start_retrying(workdir=workdir, backing=[lun_file], iqn=guest.TARGET_IQN, port=port)


def read(results: Path, name: str, default: str = "") -> str:
    try:
        return (results / name).read_text(errors="replace").strip()
    except OSError:
        return default


@dataclass
class BootFacts:
    """One boot, summarised; times are the guest's epoch seconds (one clock for rc and services)."""

    seconds: float
    error: str | None
    exit_code: int | None
    steps: list[guest.Step]
    markers: dict[str, float]
    fsck_exit: int | None
    fsck_output: list[str]
    journal_replayed: bool
    mount_exit: int | None
    previous_payload: str
    wrote_sha256: str | None
    services: list[tuple[str, float, str]]
    console: list[str] = field(repr=False, default_factory=list)
    timeline: list[Event] = field(default_factory=list)

    def timings(self) -> dict[str, float | None]:
        """Guest seconds since the kernel started, for the events a report sums up."""
        return {e.name: e.guest_t for e in reversed(self.timeline) if e.guest_t is not None}

    def step(self, name: str) -> guest.Step | None:
        return guest.step(self.steps, name)

    def output(self, name: str) -> list[str]:
        """Console lines printed during rc step NAME."""
        return guest.between(self.console, f"step {name} begin", f"step {name} end")

    @property
    def rc_seconds(self) -> float | None:
        b, e = self.markers.get("boot begin"), self.markers.get("boot end")
        return round(e - b, 3) if b is not None and e is not None else None

    def service_start(self, name: str) -> float | None:
        return next((t for svc, t, text in self.services if svc == name and text.startswith("start")), None)

    def io_errors(self, step_name: str) -> int:
        return sum(1 for line in self.output(step_name) if _IO_ERROR.search(line))


# The busybox rc's steps as timeline events: step -> (event at its begin, event at its end when rc=0,
# event at its end otherwise); None: no event.
STEP_EVENTS = {
    "uiscsid": ("daemon-start", "daemon-ready", None),
    "reload": (None, "reload-done", "reload-failed"),
    "fsck-net": ("fsck-begin", "fsck-end", "fsck-end"),
    "mount-net": ("mount-begin", "mounted", "mount-failed"),
    "services": ("services", None, None),
    "services-stop": ("services-stop", "services-stopped", "services-stopped"),
    "shutdown-kill": ("final-term", None, None),
    "umount-net": ("unmount-begin", "unmounted", "unmount-failed"),
    "uiscsid-stop": ("logout-begin", "logout-end", "logout-end"),
}
MARKER_EVENTS = {"boot end": "boot-done", "shutdown begin": "shutdown-begin"}
HARNESS_EVENTS = {"boot": "boot", "cmd-begin": "cmd-begin", "cmd-end": "cmd-end", "poweroff": "power-off"}


def busybox_timeline(r: GuestResult, steps: list[guest.Step], markers: dict[str, float],
                     services: list[tuple[str, float, str]], replayed: bool) -> list[Event]:
    """The rc's step markers and the services' log lines (guest epoch times) as timeline events, put on
    the guest's uptime through the harness's rc-begin marker (printed just before the rc's "boot begin")."""
    rc_begin, boot_begin = r.event("rc-begin"), markers.get("boot begin")
    offset = rc_begin.uptime - boot_begin if rc_begin and boot_begin is not None else None
    raw: list[tuple[str, float, str]] = []
    for st in steps:
        begin, ok, failed = STEP_EVENTS.get(st.name, (None, None, None))
        if begin:
            raw.append((begin, st.begin, f"step {st.name} begin"))
        end = ok if st.rc == 0 else failed
        if end and st.end is not None:
            raw.append((end, st.end, f"step {st.name} end rc={st.rc}"))
            if st.name == "fsck-net" and replayed:
                raw.append(("fsck-replay", st.end, "fsck -N -p replayed the journal"))
    raw += [(MARKER_EVENTS[m], t, f"rc: {m}") for m, t in markers.items() if m in MARKER_EVENTS]
    raw += [(f"{svc}-start", t, text) for svc, t, text in services
            if svc in ("writer", "nodisk") and text.startswith("start")]
    events = [Event(name, round(t + offset, 3) if offset is not None else None, None, detail)
              for name, t, detail in raw]
    events += timeline.from_markers(r.events, HARNESS_EVENTS)
    anchors = [e for e in r.events if e.uptime >= 0]
    return timeline.ordered(timeline.fill_clocks(events, anchors))


def facts(r: GuestResult) -> BootFacts:
    res = r.results_dir
    steps, markers = guest.parse_rc_log(read(res, "rc.log"))
    console = [ln.text for ln in r.lines]
    fsck = guest.step(steps, "fsck-net")
    mount = guest.step(steps, "mount-net")
    fsck_out = guest.between(console, "step fsck-net begin", "step fsck-net end")
    logs = "\n".join(read(res, f"{n}.log") for n in ("writer", "nodisk", "cycle", "late"))
    services = sorted(guest.service_events(logs), key=lambda e: e[1])
    replayed = any("recovering journal" in line for line in fsck_out)
    return BootFacts(
        seconds=r.duration,
        error=r.error,
        exit_code=r.exit_code,
        steps=steps,
        markers=markers,
        fsck_exit=fsck.rc if fsck else None,
        fsck_output=fsck_out,
        journal_replayed=replayed,
        mount_exit=mount.rc if mount else None,
        previous_payload=read(res, "prev.payload", "unknown"),
        wrote_sha256=recorded_hash(read(res, "new.sha256").encode()),
        services=services,
        console=console,
        timeline=busybox_timeline(r, steps, markers, services, replayed),
    )


def relative(facts_: BootFacts, t: float | None) -> float | None:
    """A guest epoch time as seconds since the rc's "boot begin" marker."""
    b = facts_.markers.get("boot begin")
    return None if t is None or b is None else round(t - b, 3)
