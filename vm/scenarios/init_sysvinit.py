"""The proof on sysvinit: a Debian 12 guest with sysvinit-core as PID 1, Debian's own /etc/init.d and
rcS/rc0/rc6 sequence, and the project's .deb (its postinst enables /etc/init.d/uiscsid with update-rc.d).

What goes in: /etc/fstab with the root disk and the LUN's line (which must carry ``nofail``: Debian's
checkfs.sh runs ``fsck -A`` in rcS before any daemon has started, and without it fails on the absent disk
and stops the boot in a maintenance shell), /etc/uiscsi.conf, and from vm/guest_sysv two LSB scripts:
bootkit-proof-services (writer and nodisk, ``$remote_fs`` like any Debian service that needs a network
filesystem: started after mountnfs, so after uiscsid's mount, stopped before sendsigs) and
bootkit-proof-logs (at halt, after uiscsid's stop and before umountfs takes /results: the daemon's log
and whether it still runs). Only when the plan asks for another daemon setup (--no-shim, --attach) is
/etc/init.d/uiscsid replaced, by the same script rendered with `--no-shim` / `--set attach=...`.

How it ends: `reboot` or `poweroff` (telinit 6/0). rc6/rc0 stop the services, then sendsigs runs the
real killall5 (every process stopped, all but /run/sendsigs.omit.d signalled, continued; then 10 rounds
of `killall5 -18`, each another stop/continue, and SIGKILL), then uiscsid's stop (umount -a -N, the
logout; the daemon is kept while a filesystem stays mounted), umountnfs, networking (kept up while a
/dev/nbd* is mounted), umountfs (busy: remount read-only), umountroot, reboot/halt. Unlike systemd, the
kill comes before the unmount: the shim's sendsigs.omit.d entry and the netlink attach matter for every
shutdown, busy or not. `--busy` (vm/guest_sysv/busy.sh) adds a writer deaf to SIGTERM that sendsigs has
to SIGKILL, and a holder listed in sendsigs.omit.d that keeps the filesystem mounted through umountfs.

How it is read: the LSB script's `rc: EPOCH step NAME begin|end rc=N` markers and bootkit's output, the
services' log lines and Debian's own messages, all on the console (sysvinit's rc writes to
/dev/console); the kernel's error lines come through at its default console level.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path

from rc import render as rc_render
from vm.console import ConsoleLine
from vm.guest_image import FileSpec
from vm.harness import GuestResult
from vm.scenarios import guest, timeline
from vm.scenarios.facts import read
from vm.scenarios.inits import PROOF_DIR, ImageInit
from vm.scenarios.plan import ProofPlan
from vm.scenarios.timeline import Event, Rule

SERVICES = ("bootkit-proof-services", "bootkit-proof-logs")
GUEST_SCRIPTS = ("busy.sh",)
ROOT_FSTAB = "# the guest's root disk\n/dev/vda / ext4 errors=remount-ro 0 1\n"
PACKAGE_BIN = "/usr/bin"
PACKAGE_SETTINGS = rc_render.Settings(bootkit=f"{PACKAGE_BIN}/bootkit", uiscsid=f"{PACKAGE_BIN}/uiscsid",
                                      uiscsictl=f"{PACKAGE_BIN}/uiscsictl")
# Debian's sendsigs: SIGTERM, then up to 10 rounds of `killall5 -18` one second apart, then SIGKILL.
SENDSIGS_BOUND = 30.0


# The LSB script's markers, and the guest's two clocks side by side (printed by bootkit-proof-services).
_MARKER = re.compile(r"^rc: (\d+\.\d+) step (\S+) (begin|end)")
_CLOCK = re.compile(r"bootkit-proof clock: (\d+\.\d+) (\d+\.\d+)")
OUTPUT = "rc-output: "  # what a step of the LSB script printed, as the timeline rules see it


SYSV_DIR = Path(__file__).resolve().parent.parent / "guest_sysv"  # the proof's sysvinit scripts


def guest_file_sysv(name: str) -> bytes:
    return resources.files("vm").joinpath("guest_sysv", name).read_bytes()


def _step(name: str, what: str) -> str:
    return rf"^rc: \d+\.\d+ step {re.escape(name)} {what}"


def restamp(r: GuestResult) -> list[ConsoleLine]:
    """The console with the LSB script's lines put back at the time they happened.

    sysv-rc runs its scripts through startpar, which holds a script's output until the script ends, so
    a marker reaches the console late; its text carries the guest's epoch time. With the one line that
    shows both the guest's epoch and its uptime, each marker gets its uptime (a kernel-style stamp) and
    the host time the harness's markers say; a step's own output (between its begin and end markers)
    gets the end marker's time and the prefix OUTPUT, so that rules tell it from other scripts' lines.
    """
    texts = [ln.text.strip() for ln in r.lines]
    clock = next((m for t in texts if (m := _CLOCK.search(t))), None)
    if clock is None:
        return r.lines
    offset = float(clock[1]) - float(clock[2])
    anchors = sorted((e.uptime, e.t) for e in r.events if e.uptime >= 0)
    marks = [(i, m) for i, t in enumerate(texts) if (m := _MARKER.match(t))]
    epoch: dict[int, tuple[float, bool]] = {}  # line -> (epoch, is step output)
    for k, (i, m) in enumerate(marks):
        epoch[i] = (float(m[1]), False)
        if m[3] == "begin":
            end = next(((j, e) for j, e in marks[k + 1:] if e[2] == m[2] and e[3] == "end"), None)
            for line in range(i + 1, end[0] if end else i + 1):
                if line not in epoch:
                    epoch[line] = (float(end[1][1]), True)  # type: ignore[index]
    out = []
    for i, ln in enumerate(r.lines):
        if i not in epoch:
            out.append(ln)
            continue
        at, is_output = epoch[i]
        up = round(at - offset, 3)
        host = next((t + up - u for u, t in reversed(anchors) if u <= up), ln.t)
        out.append(ConsoleLine(round(host, 3), f"[{up:.3f}] {OUTPUT if is_output else ''}{texts[i]}"))
    return out


class Sysvinit(ImageInit):
    name = "sysvinit"
    variant = "sysvinit"
    fstab_options = ("_netdev", "nofail")  # checkfs.sh: see the module docstring

    # ------------------------------------------------------------------ what goes into the image
    def files(self, plan: ProofPlan) -> dict[str, FileSpec]:
        if "nofail" not in plan.fstab.options:
            raise ValueError("sysvinit: the fstab line needs nofail (Debian's checkfs.sh runs fsck -A before "
                             "uiscsid and stops the boot in a maintenance shell on the absent disk)")
        out = super().files(plan)
        out["/etc/fstab"] = FileSpec(ROOT_FSTAB + plan.fstab.text())
        for name in SERVICES:
            out[f"/etc/init.d/{name}"] = FileSpec(guest_file_sysv(f"{name}.init"), 0o755)
        for name in GUEST_SCRIPTS:
            out[f"{PROOF_DIR}/{name}"] = FileSpec(guest_file_sysv(name), 0o755)
        if not plan.shim or plan.attach:
            settings = replace(PACKAGE_SETTINGS, shim=plan.shim, attach=plan.attach)
            script = rc_render.render("sysvinit", settings).files["etc/init.d/uiscsid"]
            out["/etc/init.d/uiscsid"] = FileSpec(script.text, 0o755)
        return out

    def enable(self, plan: ProofPlan) -> list[str]:
        return list(SERVICES)

    def env(self, plan: ProofPlan) -> dict[str, str]:
        return {**super().env(plan), "PROOF_BOOTKIT": f"{PACKAGE_BIN}/bootkit", "PROOF_FSTAB": "/etc/fstab",
                "PROOF_PIDFILE": PACKAGE_SETTINGS.pidfile}

    def shutdown_command(self, how: str) -> str:
        if how not in ("reboot", "poweroff"):
            raise ValueError(f"shutdown {how!r}: reboot or poweroff")
        return how  # telinit 6 / 0: rc6 or rc0 runs the K scripts, then reboot or halt

    def busy_command(self, plan: ProofPlan) -> str:
        return f"{PROOF_DIR}/busy.sh"

    def late_mount_command(self, plan: ProofPlan) -> str:
        return "service uiscsid reload"  # README: log in, bootkit fsck -N -p, bootkit mount -a -N

    def writer_start_command(self, plan: ProofPlan) -> str:
        return f"{PROOF_DIR}/writer.sh </dev/null >/dev/console 2>&1 & echo $! >/run/proof/writer.pid"

    def source_command(self, plan: ProofPlan) -> str:
        # what the init mounted from: the fstab's source, when the mounted device is the one it names
        src, mp = plan.fstab.source, plan.fstab.mountpoint
        return (f'[ "$(readlink -f {src})" = "$(findmnt -n -o SOURCE {mp})" ] && echo {src} '
                f"|| findmnt -n -o SOURCE {mp}")

    def expects_damage(self, plan: ProofPlan) -> bool:
        # sendsigs kills before uiscsid's stop unmounts: without the sendsigs.omit.d entry the daemon is
        # signalled, and killall5's SIGSTOP ends an ioctl device's NBD_DO_IT; busy or not.
        return not plan.shim or plan.attach in ("ioctl", "nbd")

    def reload_messages(self, r: GuestResult) -> list[str]:
        texts = [timeline.stamped(line)[1] for line in r.lines]
        return [t for t in guest.between(texts, "step reload begin", "step reload end") if t.startswith("uiscsictl: ")]

    def fsck_output(self, r: GuestResult) -> list[str]:
        texts = [timeline.stamped(line)[1] for line in r.lines]
        return guest.between(texts, "step fsck-net begin", "step fsck-net end")

    # ------------------------------------------------------------------ reading a boot back
    def timeline(self, plan: ProofPlan, r: GuestResult) -> list[Event]:
        return super().timeline(plan, replace(r, lines=restamp(r)))

    def rules(self, plan: ProofPlan) -> Sequence[Rule]:
        mp = re.escape(plan.fstab.mountpoint)
        out = re.escape(OUTPUT)
        return [Rule.of(*r) for r in (
            ("daemon-start", _step("uiscsid", "begin"), True),
            ("daemon-ready", _step("uiscsid", "end rc=0"), True),
            ("reload-done", _step("reload", "end rc=0")),
            ("reload-failed", _step("reload", r"end rc=[1-9]")),
            # reload's table: the LUN attached (reload --wait returns once its by-iscsi link exists)
            ("device-found", rf"^{out}.*\blogged-in\s+\S+\s+\d+\s+/dev/nbd\d+"),
            ("fsck-begin", _step("fsck-net", "begin")),
            ("fsck-replay", rf"^{out}.*recovering journal"),
            ("fsck-end", _step("fsck-net", "end")),
            ("mount-begin", _step("mount-net", "begin")),
            ("mounted", rf"^{out}mounted\t{mp}$"),
            ("mount-failed", rf"^{out}(?:failed|missing)\t{mp}\b"),
            ("remote-fs", _step("mount-net", "end")),
            ("writer-start", r"^writer: \d+\.\d+ start pid"),
            ("nodisk-start", r"^nodisk: \d+\.\d+ start pid"),
            ("boot-done", r"INIT: no more processes left in this runlevel", True),
            ("services-stop", r"INIT: Switching to runlevel: [06]"),
            ("services-stopped", r"^writer: \d+\.\d+ stopped"),
            ("final-term", r"Asking all remaining processes to terminate"),
            ("final-kill", r"Killing all remaining processes"),
            ("unmount-begin", _step("umount-net", "begin")),
            ("unmounted", rf"^{out}unmounted\t{mp}$"),
            ("unmount-failed", rf"^{out}(?:remounted-ro|failed)\t{mp}\b"),
            ("logout-begin", _step("uiscsid-stop", "begin")),
            ("logout-end", _step("uiscsid-stop", "end")),
            ("final-unmount", r"Unmounting local filesystems"),
            ("final-done", r"Will now (?:restart|halt)"),
            ("nbd-dropped", r"block nbd\d+: (?:shutting down sockets|Receive control failed|Dead connection)"),
            ("fs-error", r"EXT4-fs error|JBD2: .*error|Aborting journal|Detected aborted journal"),
            ("io-error", r"I/O error"),
        )]

    def shutdown_facts(self, plan: ProofPlan, events: list[Event], r: GuestResult) -> dict:
        begin = timeline.at(events, "shutdown-begin")
        after = [e for e in events if begin is not None and e.guest_t is not None and e.guest_t >= begin]
        names = [e.name for e in after]
        texts = [timeline.stamped(line)[1] for line in r.lines]
        tail = texts[next((i for i, t in enumerate(texts) if "shutdown-begin" in t), len(texts)):]
        unmount = next((e.name for e in after if e.name in ("unmounted", "unmount-failed")), None)
        kept = [t for t in tail if "uiscsid kept:" in t]
        # the stop's word, and the daemon's own lines (its log, saved at halt by bootkit-proof-logs)
        daemon_log = read(r.results_dir, "uiscsid.log").splitlines()
        stopped = [t for t in tail if re.search(r"uiscsid: PID \d+ logged out and exited", t)]
        logged_out = stopped + [t for t in daemon_log if re.search(r"uiscsid: target \S+: (?:detached|kept)", t)]
        gone = [t for t in tail if t.strip() == "uiscsid: not running"]
        return {
            "unmount": {"unmounted": "ok", "unmount-failed": "failed"}.get(unmount or "", "none"),
            "logout_ran": "logout-begin" in names,
            "logout": logged_out,
            # through sendsigs: it was still there for its own stop, or kept serving
            "daemon_spared": bool(stopped or kept) and not gone,
            "daemon_kept": bool(kept),
            "sendsigs_sigkill": "final-kill" in names,
            "final_umount_ran": "final-unmount" in names,
            "final_done": "final-done" in names,
            "nbd_dropped": names.count("nbd-dropped"),
            "io_errors": names.count("io-error"),
            "fs_errors": names.count("fs-error"),
        }

    def stop_bounds(self, plan: ProofPlan, events: list[Event]) -> list[dict]:
        logout_bound = PACKAGE_SETTINGS.ctl_timeout + PACKAGE_SETTINGS.stop_timeout
        # sendsigs' own lines come late (startpar): from the services' end to uiscsid's stop instead
        spans = (("sendsigs", "services-stopped", ("unmount-begin",), SENDSIGS_BOUND),
                 ("uiscsid stop: logout", "logout-begin", ("logout-end",), logout_bound))
        return timeline.step_bounds(events, spans)

