"""The no-broadcast-kill registry: OpenBSD's per-process PS_NOBROADCASTKILL flag, kept in files.

One file per flagged PID under ``$BOOTKIT_RUNDIR/bootkit/nobroadcastkill/``. Each records the process's
start time and the boot id, so a PID the kernel has since handed to another process is never spared: such
an entry is stale, ignored, and pruned. Flagging also keeps Debian's ``$BOOTKIT_RUNDIR/sendsigs.omit.d/NAME``
listing the live flagged PIDs of that name, for sendsigs and the real killall5.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from iscsid_shim import procinfo, title

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")


@dataclass(frozen=True)
class Flag:
    """One registry entry: the process PID that started at START (clock ticks) in boot BOOT_ID."""

    pid: int
    name: str
    start: int
    boot_id: str

    def is_live(self) -> bool:
        """True while this very process (not a later one with the same PID) is alive."""
        st = procinfo.stat(self.pid)
        if st is None or st.zombie:
            return False
        return st.start == self.start and self.boot_id == procinfo.boot_id()


def rundir() -> Path:
    """``$BOOTKIT_RUNDIR``, /run by default: tests and the guest point it elsewhere."""
    return Path(os.environ.get("BOOTKIT_RUNDIR") or "/run")


def registry_dir() -> Path:
    return rundir() / "bootkit" / "nobroadcastkill"


def sendsigs_dir() -> Path:
    return rundir() / "sendsigs.omit.d"


def check_name(name: str) -> str:
    """A name becomes a file name in sendsigs.omit.d: refuse anything that is not a plain word."""
    if not NAME_RE.match(name):
        raise ValueError(f"bad name {name!r}: use letters, digits and . _ + - (at most 64)")
    return name


def _entry_path(pid: int) -> Path:
    return registry_dir() / str(pid)


def _read_entry(path: Path) -> Flag | None:
    """An entry, or None when it is unreadable or malformed (then it is stale)."""
    try:
        data = json.loads(path.read_text())
        flag = Flag(int(data["pid"]), str(data["name"]), int(data["start"]), str(data["boot_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return flag if flag.pid == int(path.name) else None


def _entries() -> Iterator[tuple[Path, Flag | None]]:
    try:
        names = os.listdir(registry_dir())
    except FileNotFoundError:
        return
    for name in names:
        if name.isdigit():
            path = registry_dir() / name
            yield path, _read_entry(path)


@contextmanager
def _locked() -> Iterator[None]:
    """Serialise writers (flag, unflag, prune) so the sendsigs files match the registry."""
    registry_dir().mkdir(parents=True, exist_ok=True)
    with open(registry_dir() / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sync_sendsigs(name: str) -> None:
    """Make sendsigs.omit.d/NAME list exactly the live flagged PIDs called NAME (remove it if none)."""
    pids = sorted(f.pid for _, f in _entries() if f is not None and f.name == name and f.is_live())
    path = sendsigs_dir() / name
    if pids:
        sendsigs_dir().mkdir(parents=True, exist_ok=True)
        _write_atomic(path, "".join(f"{p}\n" for p in pids))
    else:
        path.unlink(missing_ok=True)


def flag(pid: int, name: str) -> Flag:
    """Flag PID no-broadcast-kill under NAME. Raises ProcessLookupError when PID does not exist."""
    check_name(name)
    start = procinfo.start_time(pid)
    if start is None:
        raise ProcessLookupError(f"no process {pid}")
    entry = Flag(pid, name, start, procinfo.boot_id())
    with _locked():
        old = _read_entry(_entry_path(pid))
        _write_atomic(_entry_path(pid), json.dumps(asdict(entry)) + "\n")
        if old is not None and old.name != name:
            _sync_sendsigs(old.name)
        _sync_sendsigs(name)
    return entry


def unflag(pid: int) -> bool:
    """Remove PID's entry and its sendsigs line. True when there was an entry."""
    path = _entry_path(pid)
    with _locked():
        old = _read_entry(path)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        if old is not None:
            _sync_sendsigs(old.name)
    return True


def prune() -> list[Flag | int]:
    """Delete stale entries (dead or reused PIDs, other boots, garbage); return what was removed."""
    removed: list[Flag | int] = []
    with _locked():
        names: set[str] = set()
        for path, entry in list(_entries()):
            if entry is None or not entry.is_live():
                path.unlink(missing_ok=True)
                removed.append(entry if entry is not None else int(path.name))
                if entry is not None:
                    names.add(entry.name)
        for name in names:
            _sync_sendsigs(name)
    return removed


def flagged() -> list[Flag]:
    """The live flagged processes, by PID. Stale entries are pruned on the way."""
    entries = list(_entries())
    live = sorted((e for _, e in entries if e is not None and e.is_live()), key=lambda f: f.pid)
    if len(live) != len(entries):
        prune()
    return live


def is_flagged(pid: int) -> bool:
    """True when PID is flagged and is still the same process that was flagged."""
    entry = _read_entry(_entry_path(pid))
    return entry is not None and entry.is_live()


_exit_hook_for: int | None = None


def _unflag_at_exit() -> None:
    if _exit_hook_for == os.getpid():  # a forked child inherits atexit hooks: only the flagged PID acts
        unflag(_exit_hook_for)


def flag_self(name: str, at_argv0: bool = True) -> Flag:
    """Flag this process under NAME; remove the flag at a normal exit. Idempotent and cheap.

    With at_argv0 (the default) it also rewrites our argv[0] to '@NAME' unless it already starts with
    '@', so systemd's final kill spree spares us too. Call it once at daemon start-up.
    """
    global _exit_hook_for
    pid = os.getpid()
    entry = _read_entry(_entry_path(pid))
    if entry is None or entry.name != name or not entry.is_live():
        entry = flag(pid, name)
    elif not (sendsigs_dir() / name).exists():
        with _locked():
            _sync_sendsigs(name)
    if _exit_hook_for != pid:
        _exit_hook_for = pid
        atexit.register(_unflag_at_exit)
    if at_argv0 and not title.has_at_argv0():
        title.set_at_argv0(name, sys.argv[1:])
    return entry
