"""A proof boot as a list of timeline events: what happened, when in the guest and when on the host.

Every scenario and every init system reports its boots the same way, so a report can draw them on one
axis (issue 16's SVG timeline) and a check can compare them: ``Event(name, guest_t, host_t, detail)``,
where ``guest_t`` is the guest's uptime in seconds (its kernel clock, as in dmesg) and ``host_t`` the host's
seconds since QEMU started (the harness stamps every console line). Either may be None when the source
has only one clock; `fill_clocks` then derives it from the harness's marker events, which carry both.

The names are one vocabulary across init systems (EVENTS, in the order a boot and its shutdown pass
them). Each init module maps its own sources (console lines, rc step logs) onto it with `Rule`s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

from vm.console import ConsoleLine, GuestEvent

# name -> what it means, in the order a boot and its shutdown pass them
EVENTS = {
    "boot": "the initramfs starts (harness marker)",
    "daemon-start": "uiscsid is started",
    "daemon-ready": "uiscsid is ready (control socket, READY=1)",
    "reload-done": "uiscsictl reload --wait returned: sessions up, links made",
    "reload-failed": "uiscsictl reload --wait failed (target down?)",
    "device-found": "the by-iscsi device is there (systemd: its device unit is active)",
    "device-timeout": "the device did not appear within its timeout",
    "fsck-begin": "the network filesystem's check starts",
    "fsck-replay": "fsck replays the filesystem's journal",
    "fsck-end": "the check is done",
    "mount-begin": "mounting the network filesystem",
    "mount-replay": "the kernel replays the filesystem's log as it mounts it (xfs, btrfs: their fsck does nothing)",
    "mounted": "the network filesystem is mounted",
    "mount-failed": "the mount did not happen (dependency failed, or mount error)",
    "remote-fs": "network filesystems done (remote-fs.target reached)",
    "services": "the services start",
    "writer-start": "the service that needs the disk starts",
    "nodisk-start": "the service that needs no disk starts",
    "boot-done": "the boot is over (multi-user.target reached / rc done)",
    "cmd-begin": "the proof's command starts (harness marker)",
    "cmd-end": "the proof's command ends (harness marker)",
    "late-reload": "the admin's uiscsictl reload once the target is back (target-down test)",
    "late-reloaded": "that reload returned",
    "shutdown-begin": "the shutdown starts",
    "services-stop": "the services are being stopped",
    "services-stopped": "the service that needs the disk has stopped",
    "unmount-begin": "unmounting the network filesystem",
    "unmounted": "the network filesystem is unmounted",
    "unmount-failed": "the unmount failed (busy, or I/O error)",
    "logout-begin": "the sessions start logging out",
    "logout-end": "the logout is done",
    "final-sync": "the last sync before the kill rounds (systemd-shutdown)",
    "final-term": "the final SIGTERM round",
    "final-kill": "the final SIGKILL round",
    "final-unmount": "the final unmount loop (systemd-shutdown) begins",
    "final-remount-ro": "a filesystem is remounted read-only by the final loop",
    "final-umount": "a filesystem is unmounted by the final loop",
    "final-done": "every filesystem unmounted",
    "nbd-detached": "an NBD device was disconnected on request (a detach)",
    "nbd-dropped": "the kernel dropped an NBD device without a request (its server went away)",
    "io-error": "the kernel reported an I/O error",
    "fs-error": "the filesystem reported an error (journal, superblock)",
    "power-off": "the kernel powers off (or restarts)",
    "cut": "the host cut the power",
}


@dataclass(frozen=True)
class Event:
    name: str
    guest_t: float | None
    host_t: float | None
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    """Console lines matching ``pattern`` become events ``name``; ``first``: only the first such line."""

    name: str
    pattern: re.Pattern[str]
    first: bool = False

    @classmethod
    def of(cls, name: str, pattern: str, first: bool = False) -> Rule:
        if name not in EVENTS:
            raise ValueError(f"unknown timeline event {name!r}")
        return cls(name, re.compile(pattern), first)


def kernel_rules() -> list[Rule]:
    """The kernel's lines every init's console has, whatever the init: a log replayed at mount (xfs says
    "Starting recovery", btrfs "start tree-log replay", ext4 "recovery complete" when no fsck ran first)."""
    return [Rule.of("mount-replay", r"XFS \(\S+\): Starting recovery|BTRFS info \(device \S+\): start tree-log "
                    r"replay|EXT4-fs \(\S+\): recovery complete")]


# "[   12.345678] ident[pid]: message": the kernel's lines and journald's console forwarding alike
_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # systemd's status lines clear the line before a message


def stamped(line: ConsoleLine) -> tuple[float | None, str]:
    """The guest uptime a console line carries (None without one) and the text after it."""
    text = _ANSI.sub("", line.text)
    m = _STAMP.match(text)
    return (float(m[1]), m[2]) if m else (None, text)


def from_console(lines: Iterable[ConsoleLine], rules: Sequence[Rule]) -> list[Event]:
    """Events from console lines by the first matching rule; the detail is the line's text."""
    seen: set[str] = set()
    out = []
    for line in lines:
        uptime, text = stamped(line)
        for rule in rules:
            if rule.pattern.search(text):
                if not (rule.first and rule.name in seen):
                    seen.add(rule.name)
                    out.append(Event(rule.name, uptime, round(line.t, 3), text.strip()[:200]))
                break
    return out


def from_markers(events: Iterable[GuestEvent], names: dict[str, str]) -> list[Event]:
    """The harness's marker events (both clocks) under timeline names (marker name -> event name)."""
    return [Event(names[e.name], e.uptime if e.uptime >= 0 else None, round(e.t, 3),
                  f"harness marker {e.name}" + ("" if e.status is None else f" {e.status}"))
            for e in events if e.name in names]


def fill_clocks(events: Sequence[Event], anchors: Sequence[GuestEvent]) -> list[Event]:
    """Derive a missing clock from the nearest earlier anchor (a harness marker with both), so every
    event has both where possible; the guest's and the host's clocks advance together under TCG."""
    pairs = sorted((a.uptime, a.t) for a in anchors if a.uptime >= 0)
    if not pairs:
        return list(events)

    def host_of(g: float) -> float:
        u, t = next(((u, t) for u, t in reversed(pairs) if u <= g), pairs[0])
        return round(t + (g - u), 3)

    def guest_of(h: float) -> float:
        by_host = sorted(pairs, key=lambda p: p[1])
        u, t = next(((u, t) for u, t in reversed(by_host) if t <= h), by_host[0])
        return round(u + (h - t), 3)

    out = []
    for e in events:
        if e.guest_t is None and e.host_t is not None:
            e = replace(e, guest_t=guest_of(e.host_t))
        elif e.host_t is None and e.guest_t is not None:
            e = replace(e, host_t=host_of(e.guest_t))
        out.append(e)
    return out


def ordered(events: Iterable[Event]) -> list[Event]:
    """By guest time (events without one keep their place after the last timed one)."""
    return sorted(events, key=lambda e: (e.guest_t is None, e.guest_t or 0.0))


def first(events: Iterable[Event], name: str) -> Event | None:
    return next((e for e in events if e.name == name), None)


def last(events: Iterable[Event], name: str) -> Event | None:
    found = [e for e in events if e.name == name]
    return found[-1] if found else None


def at(events: Iterable[Event], name: str, which: str = "first") -> float | None:
    """The guest time of the first (or last) event ``name``, or None."""
    e = first(events, name) if which == "first" else last(events, name)
    return e.guest_t if e else None


def step_bounds(events: Sequence[Event], spans: Iterable[tuple[str, str, Sequence[str], float]]) -> list[dict]:
    """How long each shutdown step took against its bound, on the host's clock: per ``(step, start event,
    end events, bound)``, from the first start after "shutdown-begin" to the first end after it. A step whose
    start is absent is left out; one that never ended has ``seconds`` None and is not ok."""
    begin = at(events, "shutdown-begin")
    out = []
    for step, start, ends, bound in spans:
        s = next((e for e in events if e.name == start and begin is not None and e.guest_t is not None
                  and e.guest_t >= begin), None)
        if s is None:
            continue
        end = next((e for e in events if e.name in ends and e.host_t is not None and s.host_t is not None
                    and e.host_t >= s.host_t), None)
        seconds = round(end.host_t - s.host_t, 2) if end and end.host_t is not None and s.host_t is not None \
            else None
        out.append({"step": step, "seconds": seconds, "bound": bound,
                    "ok": seconds is not None and seconds <= bound})
    return out
