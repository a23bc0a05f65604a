"""Facts about a process read straight from /proc: what psutil does not expose exactly.

The registry needs the start time in clock ticks (an integer, so a reused PID compares unequal without
float rounding), and the broadcast kill needs the kernel-thread flag and the session id.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
PF_KTHREAD = 0x00200000  # include/linux/sched.h: "I am a kernel thread"


@dataclass(frozen=True)
class ProcStat:
    """The few fields of /proc/PID/stat that the shim uses."""

    pid: int
    state: str
    ppid: int
    session: int
    flags: int
    start: int  # clock ticks after boot: with the boot id, unique for the life of a PID

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD) or self.pid == 2 or self.ppid == 2

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def parse_stat(pid: int, text: str) -> ProcStat:
    """Parse one /proc/PID/stat line. comm may hold spaces and ')', so split after the last ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return ProcStat(
        pid=pid,
        state=rest[0],
        ppid=int(rest[1]),
        session=int(rest[3]),
        flags=int(rest[6]),
        start=int(rest[19]),
    )


def stat(pid: int) -> ProcStat | None:
    """The process's stat fields, or None when it does not exist (or vanished while we read)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    try:
        return parse_stat(pid, text)
    except (ValueError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """Start time of pid in clock ticks after boot, or None when it does not exist."""
    st = stat(pid)
    return None if st is None else st.start


@functools.cache
def boot_id() -> str:
    """This boot's random id: a registry kept on a persistent BOOTKIT_RUNDIR is void after a reboot."""
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def argv0(pid: int) -> bytes:
    """argv[0] as systemd reads it: /proc/PID/cmdline up to the first NUL."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""
    return raw.split(b"\0", 1)[0]

