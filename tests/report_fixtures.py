"""Proof reports as `--json` prints them, built for the report tests (vm/report): a systemd reboot run with
the events and times of a real TCG boot, whose cycles can be slowed down or broken one property at a time.
"""

from __future__ import annotations

import copy

# (event, guest seconds) of one systemd cycle, as a TCG boot on an idle host shows them
SYSTEMD_CYCLE = (
    ("boot", 0.9), ("daemon-start", 14.2), ("daemon-ready", 29.8), ("reload-done", 33.1), ("device-found", 33.4),
    ("fsck-begin", 33.9), ("fsck-end", 35.0), ("mount-begin", 35.2), ("mounted", 35.6), ("remote-fs", 35.7),
    ("writer-start", 36.1), ("boot-done", 37.0), ("cmd-begin", 38.2), ("shutdown-begin", 49.5),
    ("services-stopped", 50.4), ("unmount-begin", 50.6), ("unmounted", 51.9), ("logout-begin", 52.1),
    ("logout-end", 53.0), ("final-term", 54.1), ("final-unmount", 54.6), ("final-done", 55.0), ("power-off", 55.8),
)
HOST_CLEAN = {"needs_recovery": False, "e2fsck_exit": 0, "e2fsck_tail": ["bootkit-proof: 14/16384 files"],
              "payload_sha256": "a" * 64, "recorded_sha256": "a" * 64, "payload_ok": True,
              "expected_sha256": "a" * 64, "clean": True}


def timeline(scale: float = 1.0, host_offset: float = 0.4, drop: tuple[str, ...] = (),
             swap: tuple[str, str] | None = None) -> list[dict]:
    """A cycle's events, stretched by SCALE; DROP leaves events out; SWAP exchanges two events' times."""
    times = {n: round(t * scale, 3) for n, t in SYSTEMD_CYCLE}
    if swap:
        a, b = swap
        times[a], times[b] = times[b], times[a]
    events = [{"name": n, "guest_t": t, "host_t": round(t + host_offset, 3),
               "detail": f"[{t:12.6f}] systemd[1]: {n} <&> \"quoted\""} for n, t in times.items() if n not in drop]
    return sorted(events, key=lambda e: e["guest_t"])


def cycle(n: int, scale: float = 1.0, **kw) -> dict:
    events = kw.pop("events", None) or timeline(scale)
    c = {"cycle": n, "seconds": round(56.0 * scale, 1), "error": None, "exit_code": None, "fsck_ran": True,
         "journal_replayed": False, "fsck_output": ["/dev/nbd0: clean, 14/16384 files"], "found_clean": True,
         "device_found": True, "mounted": True, "mount_source": "/dev/disk/by-iscsi/iqn-lun1",
         "payload_ok": True, "previous_payload": "ok", "wrote_sha256": "a" * 64, "dirty_kb": 4100,
         "busy": None, "shutdown": {"unmount": "ok", "logout_ran": True, "daemon_spared": True},
         "stop_bounds": [{"step": "srv-data.mount stop", "seconds": 1.3, "bound": 90.0, "ok": True},
                         {"step": "uiscsi-logout.service stop", "seconds": 0.9, "bound": 90.0, "ok": True}],
         "timings": {}, "timeline": events, "host_after": copy.deepcopy(HOST_CLEAN), "inherited": False,
         "clean": True, "shutdown_clean": True}
    c.update(kw)
    return c


def reboot_report(cycles: int = 3, slow: int | None = None, **kw) -> dict:
    """A clean N-cycle systemd run; cycle SLOW (1-based) takes twice as long."""
    rep = {"test": "reboot", "init": "systemd", "fstab_line": "/dev/disk/by-iscsi/iqn.2026-11.test.bootkit:proof-lun1 "
           "/srv/data ext4 _netdev 0 2", "fstab_source": "/dev/disk/by-iscsi/iqn.2026-11.test.bootkit:proof-lun1",
           "mountpoint": "/srv/data", "target": "iqn.2026-11.test.bootkit:proof lun 1", "attach": "auto",
           "shim": True, "busy": False, "shutdown": "reboot", "lun_file": "/var/tmp/bootkit-proof/reboot.img",
           "created": False, "initial": copy.deepcopy(HOST_CLEAN),
           "cycles": [cycle(i, 2.0 if i == slow else 1.0) for i in range(1, cycles + 1)],
           "final": copy.deepcopy(HOST_CLEAN), "expected": "clean", "failures": [], "ok": True, "seconds": 240.5,
           "workdir": "/var/tmp/bootkit-proof/reboot-test-x"}
    rep.update(kw)
    return rep


def power_cut_report() -> dict:
    return {"test": "power-cut", "init": "systemd", "fstab_line": "x /srv/data ext4 _netdev 0 2", "ok": False,
            "cut": {"fired": True, "seconds": 40.0, "host": {**HOST_CLEAN, "needs_recovery": True, "clean": False,
                                                              "e2fsck_exit": 4},
                    "timeline": timeline(drop=tuple(n for n, _ in SYSTEMD_CYCLE[13:]))},
            "recovery": {"seconds": 56.0, "previous_payload": "ok", "order": {"fsck-end": 35.0, "mounted": 35.6},
                         "fsck_output": ["/dev/nbd0: recovering journal"], "timeline": timeline()},
            "host_after": HOST_CLEAN, "checks": {"power_cut_fired": True, "dirty_after_cut": True,
                                                 "fsck_replayed_before_mount": False},
            "seconds": 100.0, "workdir": "/tmp/w"}
