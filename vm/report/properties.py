"""The four properties a reboot cycle is judged by, each a `Verdict` with its evidence in words.

- clean: the filesystem came up clean (nothing replayed at boot, the host saw no recovery pending before
  it) and mounted, and the shutdown left it clean (the host's or the guest's read-only check).
- payload: the previous boot's payload read back intact at boot, and the one this boot wrote is on the
  LUN after the shutdown, read without replay.
- ordering: on the cycle's timeline, the boot checked before it mounted and started the disk's service
  after both, and the shutdown unmounted before the sessions logged out, all before the power-off.
- shutdown bound: every shutdown step ended within its stated bound (systemd: each stop job and
  systemd-shutdown's rounds; busybox rc.shutdown: the whole shutdown within `BUSYBOX_SHUTDOWN_BOUND`, with
  the daemon spared by the kill and stopped last, umount without errors).

The inputs are the report's dicts (``--json``), so the verdicts here are the ones a saved report shows.
Booleans a scenario already computed (``found_clean``, ``payload_ok``, ``stop_bounds``) are taken as they
are; only the ordering is judged here, from the timeline.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

# The whole busybox rc.shutdown, which has no per-step bound of its own: systemd's DefaultTimeoutStopSec,
# the bound a systemd system gives each stop job.
BUSYBOX_SHUTDOWN_BOUND = 90.0
# The order a boot and a shutdown must pass these events in (those a timeline has; see `ordering`).
# (reload-done is not in it: systemd may start the fsck as soon as udev names the device, before the
# reload unit is logged as finished; logout-begin neither: the logout unit's stop may begin before the
# unmount ends, its end may not)
BOOT_ORDER = ("daemon-ready", "device-found", "fsck-begin", "fsck-end", "mount-begin", "mounted", "writer-start")
BOOT_REQUIRED = ("fsck-end", "mounted", "writer-start")
SHUTDOWN_ORDER = ("shutdown-begin", "services-stopped", "unmounted", "logout-end", "power-off")
PROPERTIES = ("clean", "payload", "ordering", "shutdown bound")


@dataclass(frozen=True)
class Verdict:
    """``ok`` None: not judged (the boot failed before it could be)."""

    name: str
    ok: bool | None
    summary: str
    evidence: list[str] = field(default_factory=list)


def host_check_lines(h: dict | None, when: str) -> list[str]:
    """A host (or guest) check of the LUN in words: which check, its exit, recovery pending, its problems."""
    if not h:
        return [f"{when}: not checked"]
    tool = h.get("check") or "host: e2fsck -fn"
    code = h.get("exit", h.get("e2fsck_exit"))
    rec = h.get("recovery_evidence") or f"needs_recovery {'yes' if h.get('needs_recovery') else 'no'}"
    lines = [f"{when} ({tool}): exit {code}, {rec}"]
    if not h.get("clean", False):
        lines += [f"  {ln}" for ln in (h.get("problems") or h.get("tail") or h.get("e2fsck_tail") or [])[:6]]
    return lines


def _t(e: dict) -> float | None:
    return e.get("guest_t")


def first_at(events: Sequence[dict], name: str, after: float | None = None) -> dict | None:
    """The first event NAME (at or after guest time ``after``)."""
    return next((e for e in events if e["name"] == name and _t(e) is not None
                 and (after is None or _t(e) >= after)), None)  # type: ignore[operator]


def _chain(events: Sequence[dict], names: Sequence[str], after: float | None) -> tuple[list[str], list[str]]:
    """Consecutive present events of NAMES in order: (evidence lines, out-of-order complaints)."""
    found = [(n, e) for n in names if (e := first_at(events, n, after)) is not None]
    lines = [f"{n} at {_t(e):.1f} s" for n, e in found]
    bad = [f"{a} at {_t(x):.1f} s came after {b} at {_t(y):.1f} s"
           for (a, x), (b, y) in itertools.pairwise(found) if _t(x) > _t(y)]  # type: ignore[operator]
    return lines, bad


def ordering(events: Sequence[dict], fsck: bool = True) -> Verdict:
    """Boot: daemon ready, device, fsck, mount, then the disk's service; shutdown: services stopped,
    unmounted, logged out, powered off. Each pair of events the timeline has must be in that order (guest
    clock); without the boot's fsck end, mount and service start there is no order to judge (None).
    ``fsck`` False: the fstab line asks for no check at boot (passno 0), so no fsck end is required."""
    boot_lines, boot_bad = _chain(events, BOOT_ORDER, None)
    start = first_at(events, "shutdown-begin")
    down_lines, down_bad = _chain(events, SHUTDOWN_ORDER, _t(start) if start else None) if start else ([], [])
    missing = [n for n in BOOT_REQUIRED if first_at(events, n) is None and (fsck or n != "fsck-end")]
    evidence = [f"boot: {', '.join(boot_lines) or 'no events'}",
                f"shutdown: {', '.join(down_lines) or 'no events'}"]
    problems = boot_bad + down_bad
    if problems:
        return Verdict("ordering", False, "; ".join(problems), evidence)
    if missing:  # a boot that never mounted fails "clean"; its order cannot be judged
        return Verdict("ordering", None, f"not judged: the timeline has no {', '.join(missing)}", evidence)
    boot = "checked before mounted, mounted before the service" if fsck else \
        "mounted (passno 0: no check at boot) before the service"
    return Verdict("ordering", True, f"{boot}; unmounted before logged out" if down_lines else boot, evidence)


def clean(c: dict, before: dict | None) -> Verdict:
    """Came up clean and mounted, left clean (see the module docstring)."""
    if c.get("error"):
        return Verdict("clean", False, f"the boot failed: {c['error']}")
    h = c.get("host_after") or {}
    replayed = c.get("journal_replayed")
    if "fsck_ran" in c:
        at_boot = "the journal or log was replayed" if replayed else (
            "the fsck ran, nothing replayed" if c["fsck_ran"] else
            "passno 0: no fsck due, nothing replayed at mount" if c.get("fsck_expected") is False else "no fsck ran")
    else:
        at_boot = f"fsck -N -p exit {c.get('fsck_exit')}" + (", journal replayed" if replayed else "")
    evidence = [*host_check_lines(before, "host, before the boot"), f"at boot: {at_boot}",
                f"mounted: {'yes' if c.get('mounted') else 'no'}",
                *host_check_lines(h, "after the shutdown")]
    came_up = bool(c.get("found_clean")) or bool(c.get("inherited"))
    left = bool(h.get("clean"))
    ok = came_up and left and bool(c.get("mounted"))
    if ok:
        summary = "clean at boot and after the shutdown" + (
            " (the LUN was dirty before this run: not held against cycle 1)" if c.get("inherited") else "")
    else:
        summary = "; ".join(s for s, bad in (
            (f"not clean at boot ({at_boot})", not came_up), ("not mounted", not c.get("mounted")),
            ("not clean after the shutdown", not left)) if bad)
    return Verdict("clean", ok, summary, evidence)


def payload(c: dict) -> Verdict:
    """The previous payload intact at boot (guest), this boot's payload on the LUN after it (host)."""
    if c.get("error"):
        return Verdict("payload", None, "not judged: the boot failed")
    h = c.get("host_after") or {}
    prev = c.get("previous_payload", "unknown")
    wrote = c.get("wrote_sha256")
    evidence = [f"at boot, the previous payload against its payload.sha256 (in the guest): {prev}",
                f"written by this boot: sha256 {wrote or 'none'}",
                (f"after the shutdown, read without replay: sha256 {h.get('payload_sha256') or 'none'}, "
                f"payload.sha256 says {h.get('recorded_sha256') or 'none'}")]
    at_boot, after = bool(c.get("payload_ok")), h.get("payload_ok") is True
    if at_boot and after:
        return Verdict("payload", True, "intact at boot and after the shutdown", evidence)
    summary = "; ".join(s for s, bad in ((f"the previous payload was {prev}", not at_boot),
                                         ("the LUN does not hold the payload just written", not after)) if bad)
    return Verdict("payload", False, summary, evidence)


def shutdown_bound(c: dict) -> Verdict:
    """Every shutdown step within its bound (see the module docstring)."""
    if c.get("error"):
        return Verdict("shutdown bound", None, "not judged: the boot failed")
    bounds = c.get("stop_bounds")
    if bounds is not None:  # an init that states its bounds per step (systemd)
        evidence = [f"{b['step']}: {b['seconds']} s (bound {b['bound']:g} s)" for b in bounds]
        late = [f"{b['step']} took {b['seconds']} s (bound {b['bound']:g} s)" for b in bounds if not b["ok"]]
        if not bounds:
            return Verdict("shutdown bound", False, "no shutdown step was seen", evidence)
        return Verdict("shutdown bound", not late, "; ".join(late) or f"{len(bounds)} steps within their bounds",
                       evidence)
    events = c.get("timeline") or []
    begin, off = first_at(events, "shutdown-begin"), first_at(events, "power-off")
    took = round(_t(off) - _t(begin), 1) if begin and off else None  # type: ignore[operator]
    signalled = c.get("daemon_signalled") or []
    checks = [
        (f"the shutdown took {took} s (bound {BUSYBOX_SHUTDOWN_BOUND:g} s)" if took is not None
         else "the shutdown's begin or power-off is missing", took is not None and took <= BUSYBOX_SHUTDOWN_BOUND),
        (f"shutdown-kill sent uiscsid {'+'.join(signalled) or 'nothing'}", not signalled),
        (f"umount -a -N exit {c.get('umount_exit')}, {c.get('umount_io_errors', 0)} I/O error line(s)",
         c.get("umount_exit") == 0 and not c.get("umount_io_errors")),
        (f"stopping uiscsid last: exit {c.get('daemon_stop_exit')}", c.get("daemon_stop_exit") == 0),
    ]
    bad = [text for text, ok in checks if not ok]
    return Verdict("shutdown bound", not bad, "; ".join(bad) or "within the bound, daemon spared and stopped last",
                   [text for text, _ in checks])


def cycle_verdicts(c: dict, before: dict | None) -> list[Verdict]:
    """The four properties of one cycle, in `PROPERTIES` order."""
    order = ordering(c.get("timeline") or [], fsck=c.get("fsck_expected", True)) if not c.get("error") else Verdict(
        "ordering", None, "not judged: the boot failed")
    return [clean(c, before), payload(c), order, shutdown_bound(c)]
