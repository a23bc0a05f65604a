"""`bootkit mount -a` and `bootkit umount -a` with the `-N` filter, through the system's mount(8).

mount: fstab order; skips noauto, swap and what is already mounted (per mountinfo); drops the
private `net` option. umount: children before parents, and a busy filesystem is remounted
read-only instead, as systemd-shutdown does, so its data is safe even if it stays mounted.
Exit codes follow mount(8): 0 ok, 1 usage, 2 system error, 32 failure, 64 some succeeded.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from fstab_tools import devices
from fstab_tools.fstab import Entry, Fstab
from fstab_tools.mountinfo import Mount, norm, unmount_order, visible
from fstab_tools.netfs import mount_options, select

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_SYSERR = 2
EXIT_FAILURE = 32
EXIT_SOMEOK = 64

# Kernel filesystems umount -a leaves alone, as util-linux umount -a does.
PSEUDO_FSTYPES = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "rpc_pipefs", "nfsd", "cgroup", "cgroup2", "securityfs",
        "debugfs", "tracefs", "configfs", "mqueue", "hugetlbfs", "pstore", "bpf", "fusectl",
        "binfmt_misc", "autofs", "efivarfs", "selinuxfs",
    }
)  # fmt: skip
_ENV = {**os.environ, "LC_ALL": "C"}


@dataclass
class Action:
    """One mount or unmount: planned, done, skipped or failed, with the command(s) behind it."""

    target: str
    source: str
    fstype: str
    lineno: int | None
    command: list[str] | None = None
    fallback: list[str] | None = None
    device: str | None = None
    options: list[str] | None = None
    status: str = "planned"
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "target": self.target,
            "source": self.source,
            "device": self.device,
            "fstype": self.fstype,
            "command": self.command,
            "status": self.status,
            "reason": self.reason,
            "line": self.lineno,
        }
        if self.options is not None:
            out["options"] = self.options
        if self.fallback is not None:
            out["fallback"] = self.fallback
        return out


def mount_command(entry: Entry, device: str | None) -> tuple[list[str], list[str]]:
    """mount(8) argv for an entry, and the options it passes (without `net`)."""
    opts = mount_options(entry)
    cmd = ["mount"]
    if entry.fstype not in ("auto", ""):
        cmd += ["-t", entry.fstype]
    if opts:
        cmd += ["-o", ",".join(opts)]
    return cmd + [device or entry.source, entry.target], opts


def choose(fstab: Fstab, net: bool, targets: list[str] | None) -> tuple[list[tuple[int, Entry]], list[str]]:
    """Entries to act on: `targets` by name (filter and noauto ignored, as OpenBSD does) or -a."""
    entries = [(line.lineno, e) for line, e in fstab.entries]
    if targets is None:
        chosen = set(map(id, select([e for _, e in entries], net)))
        return [(n, e) for n, e in entries if id(e) in chosen], []
    out, unknown = [], []
    for t in targets:
        hits = [(n, e) for n, e in entries if norm(e.target) == norm(t) or e.source == t]
        if hits:
            out.append(hits[-1])
        else:
            unknown.append(t)
    return out, unknown


def plan_mount(
    fstab: Fstab,
    mounts: list[Mount],
    net: bool,
    targets: list[str] | None = None,
    wait: float = 0.0,
    dev_root: str = "/dev",
    progress: Callable[[str], None] | None = None,
) -> list[Action]:
    """Resolve, wait for devices and build mount(8) commands. Runs nothing."""
    chosen, _ = choose(fstab, net, targets)
    named = targets is not None
    actions: list[Action] = []
    live = visible(mounts)
    todo: list[tuple[Action, Entry]] = []
    for lineno, e in chosen:
        a = Action(e.target, e.source, e.fstype, lineno)
        actions.append(a)
        if e.is_swap or e.target in ("none", "swap") or e.ignored:
            a.status, a.reason = "skipped", "swap or ignored entry: not mounted by mount -a"
        elif e.noauto and not named:
            a.status, a.reason = "skipped", "noauto"
        elif norm(e.target) in live:
            m = live[norm(e.target)]
            a.status, a.reason = "skipped", f"already mounted ({m.source} {m.fstype})"
        else:
            todo.append((a, e))
    needing = [e for _, e in todo if devices.needs_device(e)]
    resolved = devices.wait_for(needing, wait, dev_root=dev_root, progress=progress)
    for a, e in todo:
        device = None
        if e in resolved:
            r = resolved[e]
            if r.device is None:
                if "nofail" in e.options:
                    a.status, a.reason = "skipped", f"{r.reason} (nofail)"
                else:
                    a.status, a.reason = "missing", r.reason
                continue
            device = a.device = r.device
        a.command, a.options = mount_command(e, device)
    return actions


def plan_umount(
    fstab: Fstab, mounts: list[Mount], net: bool, targets: list[str] | None = None
) -> list[Action]:
    """Unmount plan: the selected fstab targets that are mounted, plus their children, deepest first."""
    if targets is None:
        chosen, _ = choose(fstab, net, None)
        wanted = [
            e.target for _, e in chosen
            if not (e.is_swap or e.ignored or e.target in ("none", "swap") or e.fstype in PSEUDO_FSTYPES)
        ]
    else:
        wanted = list(targets)
    lines = {norm(e.target): (line.lineno, e) for line, e in fstab.entries}
    actions = []
    for m in unmount_order(mounts, wanted):
        if m.fstype in PSEUDO_FSTYPES:
            continue
        lineno = lines.get(norm(m.target), (None, None))[0]
        a = Action(m.target, m.source, m.fstype, lineno)
        a.command = ["umount", m.target]
        a.fallback = ["mount", "-o", "remount,ro", m.target]
        actions.append(a)
    return actions


def _run(cmd: list[str]) -> tuple[int, str]:
    try:
        p = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            env=_ENV, check=False,
        )
    except OSError as e:
        return EXIT_SYSERR, f"cannot run {cmd[0]}: {e.strerror or e}"
    return p.returncode, (p.stderr or p.stdout).strip()


def run_mount(actions: list[Action], progress: Callable[[str], None]) -> None:
    """Mount in plan order; report each failure on stderr with mount(8)'s own message."""
    for a in actions:
        if a.status != "planned" or not a.command:
            if a.status == "missing":
                progress(f"{a.target}: {a.reason}")
            continue
        progress(f"mounting {a.target}: {' '.join(a.command)}")
        rc, msg = _run(a.command)
        if rc == 0:
            a.status = "mounted"
        else:
            a.status, a.reason = "failed", msg or f"mount exited {rc}"
            progress(f"{a.target}: {a.reason}")


def run_umount(actions: list[Action], progress: Callable[[str], None]) -> None:
    """Unmount in plan order; when busy, remount read-only and say so."""
    for a in actions:
        assert a.command and a.fallback
        progress(f"unmounting {a.target}")
        rc, msg = _run(a.command)
        if rc == 0:
            a.status = "unmounted"
            continue
        if "busy" not in msg:
            a.status, a.reason = "failed", msg or f"umount exited {rc}"
            progress(f"{a.target}: {a.reason}")
            continue
        rc2, msg2 = _run(a.fallback)
        if rc2 == 0:
            a.status, a.reason = "remounted-ro", "busy; remounted read-only"
        else:
            a.status, a.reason = "failed", f"busy, and remount read-only failed: {msg2}"
        progress(f"{a.target}: {a.reason}")


def exit_code(actions: list[Action]) -> int:
    """mount(8)'s -a status: 0 all fine, 32 nothing succeeded, 64 some succeeded and some failed."""
    failed = sum(a.status in ("failed", "missing") for a in actions)
    ok = sum(a.status in ("mounted", "unmounted", "remounted-ro") for a in actions)
    if not failed:
        return EXIT_OK
    return EXIT_SOMEOK if ok else EXIT_FAILURE

