"""The proof on systemd: a Debian 12 guest with systemd 252 as PID 1 and the project's .deb.

What goes in: the fstab line (systemd's fstab-generator makes the mount unit and its systemd-fsck@
dependency from it), /etc/uiscsi.conf, two proof services (proof-writer.service after
remote-fs.target, proof-nodisk.service), and, only when the plan asks for another daemon setup
(--no-shim, --attach), /etc/systemd/system/uiscsid.service rendered as `bootkit rc install --init systemd
--no-shim --set attach=...` would write it over the package's unit.

How it ends: `systemctl reboot` (or poweroff). `--busy` first starts a transient service with
DefaultDependencies=no (so the shutdown transaction never stops it) whose cwd and open file are on the
filesystem: the mount unit's stop fails, and only systemd-shutdown's final unmount, after its kill
rounds, gets the filesystem clean, through a daemon that must still be serving it.

How it is read: journald forwards every journal line to the console with the guest's uptime, and
``loglevel=7`` lets systemd-shutdown's own lines (kmsg, info) through to the console; `RULES` turn them
into timeline events.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import replace

from rc import render as rc_render
from vm.guest_image import FileSpec
from vm.harness import GuestResult
from vm.scenarios import timeline
from vm.scenarios.inits import ImageInit, guest_file_proof
from vm.scenarios.plan import ProofPlan
from vm.scenarios.timeline import Event, Rule

UNITS = ("proof-writer.service", "proof-nodisk.service")
BUSY_UNIT = "proof-busy.service"
# systemd's bounds, as systemd 252 has them: DefaultTimeoutStopSec for a unit's stop job (the mount's
# unless x-systemd.mount-timeout= says otherwise), and systemd-shutdown's wait per kill round and per
# unmount attempt (DEFAULT_TIMEOUT_USEC in src/shutdown).
DEFAULT_STOP = 90.0
FINAL_ROUND = 90.0
PACKAGE_BIN = "/usr/bin"
# The daemon as the package runs it; the proof changes only what its plan asks for.
PACKAGE_SETTINGS = rc_render.Settings(bootkit=f"{PACKAGE_BIN}/bootkit", uiscsid=f"{PACKAGE_BIN}/uiscsid",
                                      uiscsictl=f"{PACKAGE_BIN}/uiscsictl")


def _unit(name: str, desc: str) -> str:
    """A unit in systemd's log lines, which name it "NAME - DESCRIPTION" (or by one of them)."""
    return f"(?:{re.escape(name)}|{re.escape(desc)})"


class Systemd(ImageInit):
    name = "systemd"
    variant = "systemd"
    # rw: the root read-write, as on any host, so systemd-shutdown remounts it read-only at the end with
    # '@uiscsid' still running from it; loglevel=7: its last words are info-level kmsg lines
    kernel_args = ("rw", "loglevel=7")
    journal_to_console = True

    # ------------------------------------------------------------------ what goes into the image
    def files(self, plan: ProofPlan) -> dict[str, FileSpec]:
        out = super().files(plan)
        for unit in UNITS:
            text = guest_file_proof(unit).decode().replace("@MOUNTPOINT@", plan.fstab.mountpoint)
            out[f"/etc/systemd/system/{unit}"] = FileSpec(text)
        if not plan.shim or plan.attach:
            settings = replace(PACKAGE_SETTINGS, shim=plan.shim, attach=plan.attach)
            unit = rc_render.render("systemd", settings).files[f"{rc_render.SYSTEMD_DIR}/uiscsid.service"]
            out["/etc/systemd/system/uiscsid.service"] = FileSpec(unit.text)
        return out

    def enable(self, plan: ProofPlan) -> list[str]:
        return list(UNITS)

    def shutdown_command(self, how: str) -> str:
        if how not in ("reboot", "poweroff"):
            raise ValueError(f"shutdown {how!r}: reboot or poweroff")
        # From a transient timer a second later, outside the harness's job unit: the command ends (the
        # harness marks cmd-end), then the shutdown stops the job with everything else.
        return f"systemd-run --on-active=1 --timer-property=AccuracySec=100ms systemctl {how}"

    def busy_command(self, plan: ProofPlan) -> str:
        # A transient service the shutdown transaction never stops (DefaultDependencies=no, so no
        # Conflicts=shutdown.target) and that does not require the mount: no WorkingDirectory= (which
        # implies RequiresMountsFor=, whose stop would be propagated to it). Its cwd and fd 3 are on the fs.
        mp = shlex.quote(plan.fstab.mountpoint)
        return (f"systemd-run --unit={BUSY_UNIT} --property=DefaultDependencies=no "
                f"/bin/sh -c 'cd {mp} && exec 3<payload.bin && exec sleep infinity' "
                f"&& sleep 1 && systemctl is-active {BUSY_UNIT}")

    def late_mount_command(self, plan: ProofPlan) -> str:
        # The mount unit's job gave up at x-systemd.device-timeout; starting it runs its systemd-fsck@ and
        # mounts (`mount /srv/data` would skip the check). Within the timeout systemd does it by itself.
        return f"systemctl start {self.names(plan)['mount']}"

    def writer_start_command(self, plan: ProofPlan) -> str:
        return "systemctl restart proof-writer.service"

    def source_command(self, plan: ProofPlan) -> str:
        # the mount unit as fstab-generator wrote it (once mounted, What= shows the kernel's /dev/nbdN)
        return f"systemctl cat {self.names(plan)['mount']} | sed -n 's/^What=//p'"

    def expects_damage(self, plan: ProofPlan) -> bool:
        # Proven by the controls: a filesystem still mounted at systemd-shutdown's final unmount needs a
        # daemon that lives through the kill rounds ('@', the shim) and a device that lives through their
        # SIGSTOP/SIGCONT (netlink). Without a busy filesystem systemd unmounts first: clean either way.
        return plan.busy and (not plan.shim or plan.attach in ("ioctl", "nbd"))

    def fsck_output(self, r: GuestResult) -> list[str]:
        return [m[1] for line in r.lines if (m := re.search(r"systemd-fsck\[\d+\]: (.*)", line.text))]

    # ------------------------------------------------------------------ reading a boot back
    def names(self, plan: ProofPlan) -> dict[str, str]:
        link, mp = plan.fstab.source, plan.fstab.mountpoint
        return {"mount": rc_render.systemd_escape_path(mp) + ".mount", "mountpoint": mp, "link": link,
                "device": rc_render.systemd_escape_path(link) + ".device",
                "fsck": "systemd-fsck@" + rc_render.systemd_escape_path(link) + ".service"}

    def rules(self, plan: ProofPlan) -> Sequence[Rule]:
        n = self.names(plan)
        mount = _unit(n["mount"], n["mountpoint"])
        fsck = _unit(n["fsck"], f"File System Check on {n['link']}")
        daemon = _unit("uiscsid.service", "uiscsid userland iSCSI initiator")
        reload = _unit("uiscsi-reload.service", "uiscsid: log in to the iSCSI targets")
        logout = _unit("uiscsi-logout.service", "uiscsid: log out of the iSCSI sessions")
        writer = _unit("proof-writer.service", "bootkit proof writer")
        mp = re.escape(n["mountpoint"])
        return [Rule.of(*r) for r in (
            ("daemon-start", rf"systemd\[1\]: Starting {daemon}", True),
            ("daemon-ready", rf"systemd\[1\]: Started {daemon}", True),
            ("reload-done", rf"systemd\[1\]: Finished {reload}"),
            ("reload-failed", rf"systemd\[1\]: Failed to start {reload}"),
            ("device-found", rf"systemd\[1\]: Found device {_unit(n['device'], n['link'])}"),
            ("device-timeout", rf"Timed out waiting for device {_unit(n['device'], n['link'])}"),
            ("fsck-begin", rf"systemd\[1\]: Starting {fsck}"),
            ("fsck-replay", r"systemd-fsck\[\d+\]: .*recovering journal"),
            ("fsck-end", rf"systemd\[1\]: (?:Finished|Failed to start) {fsck}"),
            ("mount-begin", rf"systemd\[1\]: Mounting {mount}"),
            ("mounted", rf"systemd\[1\]: Mounted {mount}"),
            ("mount-failed", rf"systemd\[1\]: (?:Dependency failed for|Failed to mount) {mount}"),
            ("remote-fs", r"systemd\[1\]: Reached target (?:remote-fs\.target|Remote File Systems)"),
            ("writer-start", r"writer: \d+\.\d+ start pid"),
            ("nodisk-start", r"nodisk: \d+\.\d+ start pid"),
            ("boot-done", r"systemd\[1\]: Reached target (?:multi-user\.target|Multi-User System)"),
            ("services-stop", rf"systemd\[1\]: Stopping {writer}"),
            ("services-stopped", rf"systemd\[1\]: Stopped {writer}"),
            ("unmount-begin", rf"systemd\[1\]: Unmounting {mount}"),
            ("unmounted", rf"systemd\[1\]: Unmounted {mount}"),
            ("unmount-failed", rf"systemd\[1\]: Failed unmounting {mount}"),
            ("logout-begin", rf"systemd\[1\]: Stopping {logout}"),
            ("logout-end", rf"systemd\[1\]: Stopped {logout}"),
            ("final-sync", r"systemd-shutdown\[1\]: Syncing filesystems and block devices"),
            ("final-term", r"systemd-shutdown\[1\]: Sending SIGTERM to remaining processes"),
            ("final-kill", r"systemd-shutdown\[1\]: Sending SIGKILL to remaining processes"),
            ("final-unmount", r"systemd-shutdown\[1\]: Unmounting file systems"),
            ("final-remount-ro", rf"Remounting '{mp}' read-only"),
            ("final-umount", rf"Unmounting '{mp}'"),
            ("final-done", r"systemd-shutdown\[1\]: All filesystems unmounted"),
            ("nbd-detached", r"block nbd\d+: Disconnected due to user request"),
            ("nbd-dropped", r"block nbd\d+: (?:shutting down sockets|Connection timed out|Dead connection)"),
            ("fs-error", r"EXT4-fs error|JBD2: .*error|Aborting journal|Detected aborted journal"),
            ("io-error", r"I/O error"),
            ("power-off", r"^reboot: (?:Power down|Restarting system)"),
        )]

    def timeline(self, plan: ProofPlan, r: GuestResult) -> list[Event]:
        # the kernel says "shutting down sockets" after every disconnect: a drop only without a request;
        # the kernel's own power-off line has its uptime, the harness's marker made of it only the host's
        events = super().timeline(plan, r)
        stamped_end = any(e.name == "power-off" and e.detail.startswith("reboot: ") for e in events)
        out: list[Event] = []
        for e in events:
            if e.name == "nbd-dropped" and out and out[-1].name == "nbd-detached":
                continue
            if e.name == "power-off" and stamped_end and not e.detail.startswith("reboot: "):
                continue
            out.append(e)
        return out

    def shutdown_facts(self, plan: ProofPlan, events: list[Event], r: GuestResult) -> dict:
        begin = timeline.at(events, "shutdown-begin")
        after = [e for e in events if begin is not None and e.guest_t is not None and e.guest_t >= begin]
        names = [e.name for e in after]
        unmount = next((e.name for e in after if e.name in ("unmounted", "unmount-failed")), None)
        texts = [timeline.stamped(line)[1] for line in r.lines]
        tail = texts[next((i for i, t in enumerate(texts) if "shutdown-begin" in t), len(texts)):]
        spared = [t for t in tail if "excluded from killing" in t and "uiscsid" in t]
        killed = re.findall(r"Sending SIGKILL to PID \d+ \(([^)]*)\)", "\n".join(tail))
        logout = [t.split(": ", 1)[-1] for t in tail if re.search(r"uiscsictl\[\d+\]: .*(detached|kept, )", t)]
        root_ro = any("Remounting '/' read-only" in t for t in tail) and not any(
            re.search(r"Failed to remount '/'|Failed to unmount '/'", t) for t in tail)
        return {
            "unmount": {"unmounted": "ok", "unmount-failed": "failed"}.get(unmount or "", "none"),
            "logout_ran": "logout-begin" in names,
            "logout": logout,
            "daemon_spared": bool(spared),
            "root_read_only": root_ro,  # the root remounted read-only at the end, '@uiscsid' running from it
            "sigkilled": killed,
            "final_remount_ro": "final-remount-ro" in names,
            "final_umount": "final-umount" in names,
            "final_done": "final-done" in names,
            "nbd_dropped": names.count("nbd-dropped"),
            "io_errors": names.count("io-error"),
            "fs_errors": names.count("fs-error"),
        }

    def stop_bounds(self, plan: ProofPlan, events: list[Event]) -> list[dict]:
        mount_bound = float(plan.fstab.option("x-systemd.mount-timeout") or DEFAULT_STOP)
        logout_bound = PACKAGE_SETTINGS.ctl_timeout + PACKAGE_SETTINGS.stop_timeout
        spans = (("writer stop", "services-stop", ("services-stopped",), DEFAULT_STOP),
                 ("unmount (mount unit stop)", "unmount-begin", ("unmounted", "unmount-failed"), mount_bound),
                 ("logout (uiscsi-logout stop)", "logout-begin", ("logout-end",), logout_bound),
                 ("final SIGTERM round", "final-term", ("final-kill",), FINAL_ROUND),
                 ("final unmount", "final-unmount", ("final-done", "power-off"), FINAL_ROUND))
        return timeline.step_bounds(events, spans)

