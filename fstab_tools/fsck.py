"""`bootkit fsck`: check fstab filesystems as fsck(8) does, with OpenBSD's `-N` network filter.

Selection: passno > 0, not swap, OpenBSD type rw/ro/rq (never sw or xx), and the net filter.
Order: pass by pass in passno order (1, the root, first); inside a pass, different disks in
parallel and one disk's filesystems one after another. Exit codes are ORed as fsck(8) defines them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fstab_tools import devices
from fstab_tools.fstab import Entry, Fstab, Line
from fstab_tools.mountinfo import Mount
from fstab_tools.netfs import is_network_fstype, select

# fsck(8) exit status bits
EXIT_OK = 0
EXIT_CORRECTED = 1
EXIT_REBOOT = 2
EXIT_UNCORRECTED = 4
EXIT_ERROR = 8
EXIT_USAGE = 16
EXIT_CANCELED = 32
EXIT_LIBRARY = 128

SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin")
STATUS_BY_EXIT = {0: "clean", 1: "repaired", 2: "repaired-reboot", 3: "repaired-reboot"}


@dataclass
class Check:
    """One planned or finished check. `command` is None when the entry is skipped or missing."""

    entry: Entry
    lineno: int
    device: str | None = None
    disk: str | None = None
    fstype: str = ""
    command: list[str] | None = None
    status: str = "planned"
    reason: str = ""
    exit: int | None = None
    output: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.entry.target,
            "source": self.entry.source,
            "device": self.device,
            "fstype": self.fstype or self.entry.fstype,
            "passno": self.entry.passno,
            "disk": self.disk,
            "command": self.command,
            "status": self.status,
            "reason": self.reason,
            "exit": self.exit,
            "line": self.lineno,
        }


def combine(codes: list[int]) -> int:
    """fsck(8) reports the OR of every checker's status."""
    out = 0
    for c in codes:
        out |= c
    return out


def status_exit(returncode: int) -> int:
    """A checker's wait status as an fsck(8) code: killed by SIGINT is canceled, other signals fail."""
    if returncode >= 0:
        return returncode
    return EXIT_CANCELED if -returncode == signal.SIGINT else EXIT_ERROR


def find_helper(fstype: str) -> str | None:
    """`fsck.TYPE` on PATH, then in the sbin directories boot scripts may not have on PATH."""
    name = f"fsck.{fstype}"
    found = shutil.which(name)
    if found:
        return found
    return shutil.which(name, path=os.pathsep.join(SBIN_DIRS))


def probe_type(device: str) -> str | None:
    """The filesystem type on a device per blkid, for fstype `auto`."""
    try:
        out = subprocess.run(
            ["blkid", "-c", "/dev/null", "-o", "value", "-s", "TYPE", device],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


def selected(fstab: Fstab, net: bool) -> list[tuple[Line, Entry]]:
    """The entries fsck considers: passno > 0, checkable OpenBSD type, on the chosen side of -N."""
    chosen = set(map(id, select([e for _, e in fstab.entries], net)))
    out = []
    for line, e in fstab.entries:
        if id(e) not in chosen or e.passno <= 0 or e.is_swap:
            continue
        if e.bsd_type not in (None, "rw", "ro", "rq"):
            continue
        out.append((line, e))
    return out


def plan(
    fstab: Fstab,
    net: bool,
    mode: str | None,
    force: bool = False,
    wait: float = 0.0,
    dev_root: str = "/dev",
    progress: Callable[[str], None] | None = None,
    mounts: list[Mount] | None = None,
) -> list[Check]:
    """Resolve devices (waiting up to `wait` s) and build each check's command. Runs no checker.

    A filesystem mounted read-write (per `mounts`) is skipped: checkers refuse it, and a boot script
    run twice must not fail on what it already mounted.
    """
    pairs = selected(fstab, net)
    checks = [Check(e, line.lineno) for line, e in pairs]
    needing = [c.entry for c in checks if not is_network_fstype(c.entry.fstype)]
    resolved = devices.wait_for(needing, wait, dev_root=dev_root, progress=progress)
    for c in checks:
        e = c.entry
        if is_network_fstype(e.fstype):
            c.status, c.reason = "skipped", "network filesystem: nothing to check"
            continue
        r = resolved[e]
        if r.device is None:
            if "nofail" in e.options:
                c.status, c.reason = "skipped", f"{r.reason} (nofail)"
            else:
                c.status, c.reason, c.exit = "missing", r.reason, EXIT_ERROR
            continue
        c.device = r.device
        c.disk = devices.whole_disk(r.device)
        busy = devices.mounted_rw(r.device, mounts or [])
        if busy is not None:
            c.status, c.reason = "skipped", f"mounted read-write on {busy.target}"
            continue
        fstype = e.fstype
        if fstype == "auto":
            fstype = probe_type(r.device) or "auto"
        c.fstype = fstype
        helper = find_helper(fstype) if fstype != "auto" else None
        if helper is None:
            c.status = "skipped"
            c.reason = f"no fsck.{fstype} helper" if fstype != "auto" else "cannot tell the fstype"
            continue
        c.command = [helper] + ([mode] if mode else []) + (["-f"] if force else []) + [r.device]
    return checks


def passes(checks: list[Check]) -> list[list[list[Check]]]:
    """Runnable checks as passes (by passno), each pass a list of per-disk queues in fstab order."""
    out = []
    for passno in sorted({c.entry.passno for c in checks if c.command}):
        queues: dict[str, list[Check]] = {}
        for c in checks:
            if c.command and c.entry.passno == passno:
                queues.setdefault(c.disk or c.device or "", []).append(c)
        out.append(list(queues.values()))
    return out


def _run_one(c: Check, interactive: bool, progress: Callable[[str], None]) -> None:
    assert c.command is not None
    progress(f"checking {c.entry.target} ({c.device}): {' '.join(c.command)}")
    try:
        if interactive:  # prompts on the terminal; stdout stays clean for --json
            proc = subprocess.run(c.command, stdout=sys.stderr.fileno(), check=False)
        else:
            proc = subprocess.run(
                c.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace", check=False,
            )
            c.output = proc.stdout.splitlines()
            for out_line in c.output:
                progress(f"{c.entry.target}: {out_line}")
        c.exit = status_exit(proc.returncode)
    except OSError as e:
        c.exit, c.reason = EXIT_ERROR, f"cannot run {c.command[0]}: {e.strerror or e}"
    c.status = STATUS_BY_EXIT.get(c.exit, "failed" if c.exit & EXIT_ERROR else "errors")


def run(checks: list[Check], interactive: bool = False, progress: Callable[[str], None] | None = None) -> int:
    """Run planned checks pass by pass; disks in parallel unless interactive. Returns the ORed exit."""
    say = progress or (lambda msg: None)
    for queues in passes(checks):
        if interactive or len(queues) == 1:
            for q in queues:
                for c in q:
                    _run_one(c, interactive, say)
            continue
        threads = [
            threading.Thread(target=lambda q=q: [_run_one(c, False, say) for c in q], daemon=True)
            for q in queues
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return combine([c.exit or 0 for c in checks])


def planned_exit(checks: list[Check]) -> int:
    """The exit a dry run reports: only what is already known to fail (missing devices)."""
    return combine([c.exit or 0 for c in checks])


def stderr_progress(prog: str) -> Callable[[str], None]:
    lock = threading.Lock()

    def say(msg: str) -> None:
        with lock:
            sys.stderr.write(f"{prog}: {msg}\n")
            sys.stderr.flush()

    return say
