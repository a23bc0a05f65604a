"""Give the running process an argv[0] that starts with '@', the mark systemd's final kill spree spares.

systemd reads /proc/PID/cmdline, so the bytes in the process's own argv area must change: setproctitle
rewrites them in place. setproctitle also renames the thread (comm); we put comm back, because `pidof`,
`ps -C` and the kernel's own messages name the daemon by comm.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from iscsid_shim import procinfo

PR_SET_NAME = 15
COMM_MAX = 15  # TASK_COMM_LEN - 1


def has_at_argv0() -> bool:
    """True when this process's /proc/self/cmdline already starts with '@'."""
    return procinfo.argv0(os.getpid()).startswith(b"@")


def set_comm(comm: str) -> None:
    """Rename this thread (what /proc/self/comm shows); the kernel keeps 15 bytes."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, ctypes.c_char_p(comm.encode()[:COMM_MAX]), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NAME): {os.strerror(err)}")


def set_at_argv0(name: str, args: list[str] | None = None, comm: str | None = None) -> None:
    """Rewrite our cmdline to '@NAME ARGS...' and set comm (default: keep the current one)."""
    keep = comm if comm is not None else Path("/proc/self/comm").read_text().rstrip("\n")
    title = " ".join([f"@{name}", *(args or [])])
    # SPT_NOENV: write only into the argv area and leave /proc/PID/environ readable.
    before = os.environ.get("SPT_NOENV")
    os.environ["SPT_NOENV"] = "1"
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    finally:
        if before is None:
            del os.environ["SPT_NOENV"]
        else:
            os.environ["SPT_NOENV"] = before
    set_comm(keep)
