"""What one proof boot did, read back from its console, the rc step log and the files it left in /results."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vm.harness import BootFiles, GuestResult, PowerCut, run_guest
from vm.scenarios import guest, lun
from vm.scenarios.lun import recorded_hash
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

    def boot(
        self,
        rc_dir: Path,
        results: Path,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        power_cut: PowerCut | None = None,
    ) -> GuestResult:
        shutil.rmtree(results, ignore_errors=True)
        results.mkdir(parents=True)
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
        (results / "console.log").write_text(r.console + "\n")
        return r


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


def facts(r: GuestResult) -> BootFacts:
    res = r.results_dir
    steps, markers = guest.parse_rc_log(read(res, "rc.log"))
    console = [ln.text for ln in r.lines]
    fsck = guest.step(steps, "fsck-net")
    mount = guest.step(steps, "mount-net")
    fsck_out = guest.between(console, "step fsck-net begin", "step fsck-net end")
    logs = "\n".join(read(res, f"{n}.log") for n in ("writer", "nodisk", "cycle", "late"))
    return BootFacts(
        seconds=r.duration,
        error=r.error,
        exit_code=r.exit_code,
        steps=steps,
        markers=markers,
        fsck_exit=fsck.rc if fsck else None,
        fsck_output=fsck_out,
        journal_replayed=any("recovering journal" in line for line in fsck_out),
        mount_exit=mount.rc if mount else None,
        previous_payload=read(res, "prev.payload", "unknown"),
        wrote_sha256=recorded_hash(read(res, "new.sha256").encode()),
        services=sorted(guest.service_events(logs), key=lambda e: e[1]),
        console=console,
    )


def relative(facts_: BootFacts, t: float | None) -> float | None:
    """A guest epoch time as seconds since the rc's "boot begin" marker."""
    b = facts_.markers.get("boot begin")
    return None if t is None or b is None else round(t - b, 3)
