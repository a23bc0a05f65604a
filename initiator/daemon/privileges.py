"""uiscsid's capabilities: keep the one it needs, drop the rest at start-up (any init system).

Run as root, the daemon needs a single capability, CAP_SYS_ADMIN: the kernel checks it for the NBD ioctls
(nbd_ioctl) and for NBD netlink's connect, reconfigure and disconnect (nbd_netlink). Everything else it
does works for uid 0 without capabilities: its files under /run, /dev/nbdN and the uevent files are
root's, and TCP to the targets needs none. With --attach none it needs no capability at all.

`drop` removes every other capability from the effective, permitted, inheritable and ambient sets and
from the bounding set (so no program it could exec gets one back), with libcap-ng's Python binding
(Debian's python3-cap-ng, ``import capng``). Capabilities are per thread: call it before the daemon
starts any thread (before the event loop). Under systemd the unit's CapabilityBoundingSet= has already
left only the kept set; `drop` then finds nothing to do and needs no capset(2) (which the unit's
system call filter denies). Without the library it changes nothing and says why, once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# The kept capabilities and why: the one definition `--help` and the tests read.
NEEDED = {"CAP_SYS_ADMIN": "the NBD ioctls and NBD netlink's connect, reconfigure and disconnect"}
CAP_NUMBERS = {"CAP_SYS_ADMIN": 21}
SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")   # the lines of /proc/PID/status


@dataclass(frozen=True)
class Outcome:
    """What `drop` did: ``changed`` when it applied a smaller set; ``message`` is one log line."""

    changed: bool
    message: str


def kept(attach: str) -> tuple[str, ...]:
    """The capabilities uiscsid keeps for an --attach mode: none when it attaches nothing."""
    return () if attach == "none" else tuple(NEEDED)


def mask(names: tuple[str, ...]) -> int:
    return sum(1 << CAP_NUMBERS[n] for n in names)


def parse_status(text: str) -> dict[str, int]:
    """The capability sets of a /proc/PID/status text, as bit masks ({"CapEff": 0x200000, ...})."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in SETS:
            out[key] = int(value.strip(), 16)
    return out


def current(pid: int | str = "self") -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return parse_status(f.read())


def excess(sets: dict[str, int], keep: int) -> dict[str, int]:
    """The capabilities beyond ``keep`` in each set (only the sets that have some)."""
    return {k: v & ~keep for k, v in sets.items() if v & ~keep}


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def drop(names: tuple[str, ...]) -> Outcome:
    """Keep only ``names`` (in the effective and permitted sets and the bounding set); drop the rest."""
    keep = mask(names)
    what = ", ".join(names) or "no capability"
    if not excess(current(), keep):
        return Outcome(False, f"capabilities: {what} (nothing else to drop)")
    try:
        import capng  # Debian's python3-cap-ng: libcap-ng's own binding
    except ImportError:
        return Outcome(False, f"capabilities: all kept: libcap-ng's Python binding (python3-cap-ng) is "
                              f"not installed; uiscsid needs only {what}")
    if threads() != 1:
        return Outcome(False, f"capabilities: all kept: {threads()} threads run already (a drop is per thread)")
    every = getattr(capng, "CAPNG_SELECT_ALL", capng.CAPNG_SELECT_BOTH)  # ALL: the ambient set too
    capng.capng_clear(every)
    where = capng.CAPNG_EFFECTIVE | capng.CAPNG_PERMITTED | capng.CAPNG_BOUNDING_SET
    for name in names:
        capng.capng_update(capng.CAPNG_ADD, where, CAP_NUMBERS[name])
    if capng.capng_apply(every) != 0:
        return Outcome(False, "capabilities: all kept: libcap-ng could not apply the smaller set")
    left = excess(current(), keep)
    if left:
        return Outcome(True, f"capabilities: some not dropped: {left}")
    return Outcome(True, f"capabilities: kept {what}, dropped the rest")


def help_text() -> str:
    """The paragraph of `uiscsid --help` that says what is kept and why."""
    rows = "".join(f"  {name:<15} {reason}\n" for name, reason in NEEDED.items())
    return ("capabilities: run as root, uiscsid keeps only these (none with --attach none) and drops every other\n"
            "one at start-up from all its sets, the bounding set included, with libcap-ng (python3-cap-ng;\n"
            "without it, it keeps them and logs so once):\n" + rows +
            "Its files under /run, /dev/nbdN and /sys/block/nbdN/uevent are root's: uid 0 needs no capability\n"
            "for them. The systemd unit bounds it to the same set and sandboxes it (systemd-analyze security).")
