"""A broadcast kill that honours the no-broadcast-kill flag: killall5(8) and OpenBSD reboot(8)'s sequence.

Every broadcast is wrapped as Linux's real ones are (sysvinit's killall5, busybox's killall5 and
systemd-shutdown alike): ``kill(-1, SIGSTOP)`` first stops every other process, the spared ones
included, the victims are chosen and signalled while nothing can fork or exit, and ``kill(-1, SIGCONT)``
lets everything run again. A spared process is never signalled, but it is stopped and continued: a
process blocked in the NBD_DO_IT ioctl sees the stop as a pending signal and the kernel shuts its device
down ("block nbdN: shutting down sockets"), which the netlink attach does not suffer. Like the real
killall5 we lock ourselves into memory for that window, so that no page fault of ours can wait on a
stopped process's storage.

Spared, always: pid 1, this process and its ancestors (the rc script that runs us must go on to unmount;
killall5 spares its whole session for that reason, but an rc run from init's own session would then
spare the services too), kernel threads, zombies (a signal cannot make them go), flagged processes
(PID-reuse checked), ``-o`` PIDs, and every PID listed under ``$BOOTKIT_RUNDIR/sendsigs.omit.d/``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from iscsid_shim import procinfo, registry

# killall5(8) exit codes
EXIT_SIGNALLED = 0
EXIT_ERROR = 1
EXIT_NONE_LEFT = 2


def sendsigs_pids() -> set[int]:
    """PIDs listed in sendsigs.omit.d files (whitespace-separated, as Debian's sendsigs reads them)."""
    pids: set[int] = set()
    try:
        files = sorted(registry.sendsigs_dir().iterdir())
    except FileNotFoundError:
        return pids
    for path in files:
        try:
            words = path.read_text(errors="replace").split()
        except OSError:
            continue
        pids.update(int(w) for w in words if w.isdigit())
    return pids


def ancestors(pid: int) -> set[int]:
    """pid and every process above it, up to pid 1."""
    chain: set[int] = set()
    while pid > 0 and pid not in chain:
        chain.add(pid)
        st = procinfo.stat(pid)
        if st is None:
            break
        pid = st.ppid
    return chain


def spared(omit: Iterable[int] = ()) -> set[int]:
    """The PIDs a broadcast from this process must not signal (besides kernel threads and zombies)."""
    flagged = {f.pid for f in registry.flagged()}  # first: it prunes stale PIDs from sendsigs.omit.d too
    return {1} | ancestors(os.getpid()) | set(omit) | flagged | sendsigs_pids()


def targets(omit: Iterable[int] = ()) -> list[int]:
    """The PIDs a broadcast kill would signal now."""
    keep = spared(omit)
    out = []
    for pid in psutil.pids():
        if pid in keep:
            continue
        st = procinfo.stat(pid)
        if st is None or st.kernel_thread or st.zombie:
            continue
        out.append(pid)
    return out


MCL_CURRENT, MCL_FUTURE = 1, 2  # <sys/mman.h>
# Held back while the world is stopped, so that the SIGCONT always follows the SIGSTOP.
DEFERRED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


def _libc() -> ctypes.CDLL | None:
    """The C library already loaded in this process (no ldconfig run, as find_library would do)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _kill_all(sig: int) -> None:
    """kill(-1, sig): every process we may signal except pid 1 and ourselves (none: no error)."""
    try:
        os.kill(-1, sig)
    except ProcessLookupError:
        pass


@contextmanager
def world_stopped() -> Iterator[None]:
    """killall5's window: memory locked, every other process stopped; continued again on the way out."""
    libc = _libc()
    locked = libc is not None and libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0  # best effort, as killall5
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED)
    try:
        _kill_all(signal.SIGSTOP)
        yield
    finally:
        _kill_all(signal.SIGCONT)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if locked and libc is not None:
            libc.munlockall()


def broadcast(sig: int, omit: Iterable[int] = ()) -> list[int]:
    """Stop the world, send sig to every target, continue the world; return the PIDs that got it
    (empty: OpenBSD's ESRCH, killall5's exit 2)."""
    omit = list(omit)
    sent = []
    with world_stopped():
        for pid in targets(omit):
            try:
                psutil.Process(pid).send_signal(sig)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue  # gone, or not ours to signal (kill(-1) by a non-root caller skips those too)
            sent.append(pid)
    return sent


@dataclass(frozen=True)
class Timing:
    """reboot(8)'s waits, in seconds. OpenBSD: 2 s after TERM, 3 s after sync, KILL 6 times sleeping 2*i."""

    term_wait: float = 2.0
    sync_wait: float = 3.0
    kill_tries: int = 6
    kill_step: float = 2.0
    poll: float = 0.1


def wait_gone(omit: Iterable[int], seconds: float, poll: float) -> bool:
    """Wait up to seconds for every target to exit; True as soon as none is left (we need not sleep on)."""
    omit = list(omit)
    deadline = time.monotonic() + seconds
    while True:
        if not targets(omit):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(poll, left))


def shutdown_kill(omit: Iterable[int] = (), timing: Timing = Timing(),
                  log: Callable[[str], None] = print) -> int:
    """OpenBSD reboot(8): TERM all, wait, sync, wait, then KILL with growing sleeps until none is left.

    Returns 0 when nothing unflagged is left, 1 when some process would not die.
    """
    omit = list(omit)
    sent = broadcast(signal.SIGTERM, omit)
    log(f"SIGTERM to {len(sent)} process(es): {' '.join(map(str, sent))}".rstrip(": "))
    if sent:
        wait_gone(omit, timing.term_wait, timing.poll)
    os.sync()
    log("sync")
    if targets(omit):
        wait_gone(omit, timing.sync_wait, timing.poll)
    for i in range(1, timing.kill_tries + 1):
        sent = broadcast(signal.SIGKILL, omit)
        if not sent:
            log("no process left to kill")
            return 0
        log(f"SIGKILL #{i} to {len(sent)} process(es): {' '.join(map(str, sent))}")
        if i < timing.kill_tries:
            wait_gone(omit, timing.kill_step * i, timing.poll)
    left = targets(omit)
    if not left:
        return 0
    log(f"WARNING: some process(es) wouldn't die: {' '.join(map(str, left))}")
    return 1
