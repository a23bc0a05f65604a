"""`make demo`'s proof: the reboot test told as a story, then its negative control, then a results table;
first with the busybox rc, then on systemd.

`demo()` boots the busybox guest three times (about 40 s each on an idle 2-core host under TCG): two
reboot cycles with the shim on a fresh LUN, and one cycle of the control with it off. Each boot is narrated
from the guest's own timestamped rc step log and service logs. `demo_systemd()` then boots a Debian 12
guest with systemd twice (about 50 s each, plus an image build): one reboot with a filesystem kept busy
through the shutdown, as the package installs it (netlink attach, the shim), and the control with the ioctl
attach, each narrated from its timeline. Every shutdown is judged from the host by reading the LUN file
with e2fsprogs. The scenarios themselves live in vm/scenarios/.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from vm.harness import GuestError
from vm.scenarios import image_proof, inits
from vm.scenarios.facts import BootFacts, Runner
from vm.scenarios.lun import LunError
from vm.scenarios.plan import ProofPlan
from vm.scenarios.reboot import Cycle, reboot_test

STEPS = {
    "uiscsid": "start uiscsid",
    "reload": "uiscsictl reload --wait",
    "fsck-net": "bootkit fsck -N -p",
    "mount-net": "bootkit mount -a -N",
    "services": "start the services (writer, nodisk)",
    "services-stop": "stop the services",
    "shutdown-kill": "bootkit shutdown-kill (SIGTERM all, sync, SIGKILL)",
    "umount-net": "bootkit umount -a -N",
    "uiscsid-stop": "stop uiscsid: it logs out last",
}
SHUTDOWN = ("services-stop", "shutdown-kill", "umount-net", "uiscsid-stop")
_KERNEL = re.compile(r"^\[\s*\d+\.\d+\] ")
_NOISE = re.compile(r"^(rc: |bootkit-vm\[|TARGET\s+STATE|(mounted|unmounted|clean)\t)")


def _interesting(lines: list[str], limit: int = 2) -> list[str]:
    """What to quote from a step's console output: its own messages, then the kernel's errors as a count
    and the one that matters most (the journal that could not be cleaned up, when there is one)."""
    own = [
        ln.strip() for ln in lines if ln.strip() and not _KERNEL.match(ln) and not _NOISE.match(ln.strip())
    ]
    kernel = [_KERNEL.sub("", ln).strip() for ln in lines if _KERNEL.match(ln) and "error" in ln.lower()]
    out = own[:limit]
    if kernel:
        io = sum("I/O error" in ln for ln in kernel)
        worst = next((ln for ln in kernel if "journal" in ln.lower()), kernel[0])
        out.append(f"kernel: {io} I/O error line(s); {worst}")
    return out


def narrate(c: Cycle, f: BootFacts, shim: bool, out: TextIO) -> None:
    """One cycle as a readable timeline (seconds since the rc began, then since the shutdown began)."""

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    starts = {"boot": f.markers.get("boot begin"), "shutdown": f.markers.get("shutdown begin")}
    for s in f.steps:
        if s.name not in STEPS:
            continue
        origin = starts["shutdown" if s.name in SHUTDOWN else "boot"] or s.begin
        if s.name == "services-stop":
            for svc, _t, text in f.services:
                if svc == "writer" and ("payload" in text or "refusing" in text):
                    say(f"    {'':>7}    writer service: {text}")
            if c.dirty_kb is not None:
                say(f"    {'':>7}    page cache just before the shutdown: {c.dirty_kb} kB dirty")
            say("    -- shutdown (rendered rc.shutdown)")
        label = STEPS[s.name]
        if s.name == "uiscsid":
            label += " under the shim, as '@uiscsid' (flagged)" if shim else " UNFLAGGED (--no-flag)"
        rc = "?" if s.rc is None else s.rc
        say(f"    +{s.begin - origin:6.1f} s  {label}: exit {rc}")
        for line in _interesting(f.output(s.name), limit=4 if s.name == "shutdown-kill" else 2):
            say(f"    {'':>7}      {line[:120]}")
    h = c.host_after
    say(
        f"    host, after power-off: needs_recovery={h.needs_recovery}, {h.tool} exit {h.exit}, "
        f"payload on disk {'= what the writer wrote' if h.payload_ok else 'is NOT what the writer wrote'}"
    )


def _table(runs: list[tuple[str, dict]]) -> list[str]:
    lines = [f"{'run':<22} {'cycles':>6}  {'clean at boot':>13}  {'payload intact':>14}  LUN after shutdown"]
    for name, rep in runs:
        cs = rep["cycles"]
        clean = sum(c["clean"] for c in cs)
        payload = sum(c["payload_ok"] for c in cs)
        dirty = [c for c in cs if not c["shutdown_clean"]]
        if not dirty:
            after = "clean every time"
        else:
            c = dirty[0]
            after = (
                f"DIRTY {len(dirty)}/{len(cs)}: needs journal recovery"
                + (", uiscsid killed" if c["daemon_signalled"] else "")
                + (f", {c['umount_io_errors']} I/O error lines at umount" if c["umount_io_errors"] else "")
            )
        lines.append(
            f"{name:<22} {len(cs):>6}  {f'{clean}/{len(cs)}':>13}  {f'{payload}/{len(cs)}':>14}  {after}"
        )
    return lines


def _stage(out: TextIO, workdir: Path | None) -> tuple[Callable[..., None], Path, Runner]:
    """A story's printer, its work dir (a new one under /var/tmp by default) and its guest runner."""

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bootkit-proof-demo-", dir="/var/tmp"))
    return say, base, Runner(say=lambda text: say(f"  {text}"), timeout=420.0)


def demo(cycles: int = 2, out: TextIO | None = None, workdir: Path | None = None, systemd: bool = True) -> int:
    """Run the narrated reboot proof and its control; print the table; then the systemd story. Returns 0
    when all came out as they must (shim: clean; controls: the failure shown), 1 when not, 125 when no
    guest could be run."""
    out = out or sys.stdout
    say, base, runner = _stage(out, workdir)
    say("== The proof: an ext4 on a userland-iSCSI LUN survives reboots only if the daemon outlives the kill")
    say("   The host runs a real tgtd; each boot is a QEMU guest with the rendered busybox rc and")
    say("   rc.shutdown.")
    say("   The fstab names the LUN /dev/disk/by-iscsi/<iqn>-lun1 with _netdev; the writer service writes")
    say("   8 MiB of fresh payload without fsync and keeps MiBs of churn dirty until the shutdown.")
    runs: list[tuple[str, dict]] = []
    t0 = time.monotonic()
    try:
        for shim, n, name in ((True, cycles, "shim on"), (False, 1, "no shim (control)")):
            say()
            say(
                f"== {name}: {n} cycle(s) on a fresh LUN"
                + (
                    ""
                    if shim
                    else ": uiscsid runs --no-flag, so shutdown-kill treats it like any other process"
                )
            )
            rep = reboot_test(
                base / name.split()[0] / "lun.img",
                n,
                shim,
                base / name.split()[0],
                runner,
                on_cycle=lambda c, f, shim=shim: narrate(c, f, shim, out),
            )
            runs.append((name, rep))
    except (GuestError, LunError, RuntimeError, OSError) as exc:
        say(f"demo: the proof could not run: {exc}")
        return 125
    say()
    say("== Results")
    for line in _table(runs):
        say("   " + line)
    shim_ok, control_ok = runs[0][1]["ok"], runs[1][1]["ok"]
    say()
    verdict = (
        "clean every cycle, payload intact" if shim_ok else "NOT CLEAN: " + "; ".join(runs[0][1]["failures"])
    )
    say(f"   with the shim: {verdict}")
    say(
        "   without it:    "
        + (
            "the shutdown kill took the daemon before umount and left the filesystem "
            "dirty: the shim is what makes the difference"
            if control_ok
            else "came out clean, so this run proves nothing"
        )
    )
    say(f"   check it yourself: e2fsck -fn {runs[0][1]['lun_file']}")
    say(f"   ({time.monotonic() - t0:.0f} s, logs in {base})")
    busybox = 0 if shim_ok and control_ok else 1
    if not systemd:
        return busybox
    say()
    sd = demo_systemd(out, base / "systemd")
    return max(busybox, sd)


# The systemd timeline's events worth a line in the story, in the order they come.
SD_BOOT = ("daemon-start", "daemon-ready", "reload-done", "device-found", "fsck-end", "mounted", "remote-fs",
           "writer-start", "boot-done")
SD_SHUTDOWN = ("shutdown-begin", "services-stopped", "unmount-failed", "unmounted", "logout-end", "final-term",
               "nbd-dropped", "final-kill", "final-remount-ro", "io-error", "fs-error", "final-umount",
               "final-done", "power-off")


def narrate_systemd(c: image_proof.Cycle, out: TextIO) -> None:
    """One systemd cycle from its timeline: the boot (guest uptime), then the shutdown (since it began)."""

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    begin = c.timings.get("shutdown-begin")
    said: set[str] = set()
    for e in c.timeline:
        if e.guest_t is None or e.name in said:
            continue
        shutdown = begin is not None and e.guest_t >= begin
        if e.name not in (SD_SHUTDOWN if shutdown else SD_BOOT):
            continue
        said.add(e.name)
        if e.name == "shutdown-begin":
            say(f"    -- shutdown: systemctl reboot ({c.dirty_kb} kB dirty"
                f"{'; a process holds the filesystem' if c.busy else ''})")
            continue
        t = e.guest_t - begin if shutdown and begin is not None else e.guest_t
        say(f"    {'+' if shutdown else ' '}{t:6.1f} s  {e.detail[:104]}")
        if e.name == "logout-end":
            for line in c.shutdown.get("logout", []):
                say(f"    {'':>9}  uiscsictl detach --unused: {line}")
        if e.name == "final-kill" and c.shutdown.get("daemon_spared"):
            say(f"    {'':>9}  uiscsid ('@uiscsid', the shim) spared by both kill rounds")
    h = c.host_after
    say(f"    host, after power-off: needs_recovery={h.needs_recovery}, {h.tool} exit {h.exit}, "
        f"payload on disk {'= what the writer wrote' if h.payload_ok else 'is NOT what the writer wrote'}")


def demo_systemd(out: TextIO | None = None, workdir: Path | None = None) -> int:
    """The systemd story: a busy filesystem at shutdown comes back clean with the package's defaults, and
    the ioctl control does not. 0 when both came out as they must, 1 when not, 125 when no guest ran."""
    out = out or sys.stdout
    say, base, runner = _stage(out, workdir)
    init = inits.image_init("systemd")
    say("== The same proof on systemd: a Debian 12 guest (systemd 252 as PID 1), the .deb installed by apt")
    say("   The fstab line is `/dev/disk/by-iscsi/<iqn>-lun1 /srv/data ext4 _netdev 0 2`: udev names the")
    say("   device from what uiscsid tells it, systemd-fsck@ checks it, the mount unit mounts it. Normally")
    say("   systemd unmounts it before the logout, with or without the shim; here a process keeps it busy")
    say("   through the whole shutdown, so only systemd-shutdown's final unmount, after its kill rounds, can")
    say("   clean it: through a daemon that must still live and a device that must still work.")
    runs: list[tuple[str, dict]] = []
    t0 = time.monotonic()
    try:
        for attach, name, story in (
            ("", "netlink attach, shim on", "as the package installs it"),
            ("ioctl", "ioctl attach (control)", "the same, but the device is attached with the NBD ioctls"),
        ):
            say()
            say(f"== systemd, {name}: 1 cycle, {story}")
            work = base / (attach or "netlink")
            rep = image_proof.reboot_test(
                init, lambda port, a=attach: ProofPlan.default(port, "systemd", attach=a, busy=True),
                work / "lun.img", 1, work, runner, on_cycle=lambda c: narrate_systemd(c, out))
            runs.append((name, rep))
    except (GuestError, LunError, RuntimeError, OSError) as exc:
        say(f"demo: the systemd proof could not run: {exc}")
        return 125
    say()
    say("== Results (systemd, a filesystem busy through the shutdown)")
    for name, rep in runs:
        (c, *_) = rep["cycles"]
        s = c["shutdown"]
        say(f"   {name:<26} unmount {s['unmount']}, daemon {'spared' if s['daemon_spared'] else 'killed'}, "
            f"device {'dropped' if s['nbd_dropped'] else 'kept'}, {s['io_errors']} I/O error line(s): LUN "
            f"{'clean' if c['shutdown_clean'] else 'needs journal recovery'}")
    ok = runs[0][1]["ok"] and runs[1][1]["ok"]
    say()
    say("   what the shim is for under systemd: a filesystem still mounted when systemd-shutdown kills every")
    say("   process ('@uiscsid' is spared, so the final remount/unmount reaches the LUN), and only with the")
    say("   netlink attach, which outlives the SIGSTOP/SIGCONT around those kill rounds"
        + (": shown above." if ok else ": NOT shown by this run."))
    say(f"   ({time.monotonic() - t0:.0f} s, logs in {base})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(demo())
