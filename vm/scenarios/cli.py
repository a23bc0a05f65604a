"""`bootkit vm reboot-test`, `power-cut-test` and `target-down-test`: the proof, from the command line.

vm/cli.py adds these subcommands with `add_parsers(sub)`; each handler returns the exit status. Every
command takes ``--init`` (vm/scenarios/inits.py): busybox runs the scenarios of reboot.py and
target_down.py in the host-root guest, any other init those of image_proof.py in a Debian image. A new
scenario adds its parser in `add_parsers` (one `sub.add_parser` block, `_common` for the shared options).
An admin's own target, fstab line and LUN come through byo_cli.py; --junit and --report through vm/report.
This module is over 400 lines because it holds the three commands' help texts and their result tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vm.byo.target import ByoError
from vm.fscheck import FsCheckError
from vm.harness import GuestError
from vm.report import html, junit
from vm.report.progress import ConsoleSteps, Progress
from vm.scenarios import byo_cli, image_proof, inits, restart
from vm.scenarios.facts import Runner
from vm.scenarios.lun import LunError
from vm.scenarios.plan import ProofPlan
from vm.scenarios.reboot import power_cut_test, reboot_test
from vm.scenarios.target_down import target_down_test

STATE_DIR = Path("/var/tmp/bootkit-proof")
DEFAULT_LUN = STATE_DIR / "reboot.img"
DEFAULT_LUN_NOSHIM = STATE_DIR / "reboot-noshim.img"
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_HARNESS = 125
DEVICE_TIMEOUT = 30  # target-down on systemd: how long the mount job waits for the device
BOOTS = {"power-cut-test": 2}  # boots a run takes, for the status line (reboot-test: --cycles)

COMMON_EPILOG = """
--init busybox (the default): each boot is a QEMU (TCG) guest running this host's root with the project's
venv and `bootkit rc render --init busybox` output; its rc step log (/results/rc.log) is the timeline.
--init systemd: each boot is a Debian 12 guest with systemd 252 as PID 1 and this checkout's .deb installed
by apt (built with `make deb`'s script; --deb PATH uses a package you built); a reboot is a fresh QEMU on
the same root disk; journald's lines on the console are the timeline. --init sysvinit: the same with
sysvinit-core as PID 1 and Debian's own rcS/rc0/rc6; the package's LSB script's markers, the services' logs
and Debian's messages on the console are the timeline. Either way the LUN is served by a
real tgtd on 127.0.0.1 (10.0.2.2 in the guest), every boot's console and logs stay in --workdir, and
--json reports each boot as a timeline of events (name, guest uptime, host time, detail).
--junit PATH writes JUnit XML (a test case per cycle and property: clean, payload, ordering, shutdown
bound; or per check) and --report PATH.html one self-contained page with every boot's timeline on one
axis and the evidence beside it. On a terminal a status line shows the cycle, its step and an ETA.
Exit status: 0 the expected outcome (a control: the damage shown), 1 not, 2 bad usage or a LUN the test
may not use, 125 the guest or the target could not be run.
"""

REBOOT_EPILOG = (
    """what each cycle proves (busybox):
  boot      uiscsid under the shim, uiscsictl reload --wait, bootkit fsck -N -p, bootkit mount -a -N,
            then the services; the fstab names the LUN /dev/disk/by-iscsi/<iqn>-lun1 with _netdev
  writer    checks the previous payload.bin against payload.sha256, writes a new one (8 MiB of random
            bytes, no fsync) and keeps rewriting churn files, so the shutdown starts with dirty pages
  shutdown  services stop, bootkit shutdown-kill (the flagged daemon is spared), umount -a -N, the
            daemon logs out last
  host      between boots: dumpe2fs -h (no needs_recovery), e2fsck -fn, debugfs 'cat /payload.bin'
            hashed against the digest the writer reported
A cycle is clean when the host saw no needs_recovery before it and fsck -N -p exited 0 without
replaying a journal (e2fsck -p replays a journal and still exits 0). --no-shim runs uiscsid --no-flag:
shutdown-kill takes it down before umount, and the run must show the damage (exit 0 when it does).

what each cycle proves (systemd):
  boot      the package's units: uiscsid (under the shim), uiscsi-reload.service (reload --wait returns
            once udev made the by-iscsi link), then systemd's own fstab units: systemd-fsck@ on the link,
            the .mount unit, remote-fs.target, and the writer service ordered after it
  shutdown  `systemctl reboot`: the writer stops, the mount unit unmounts, uiscsi-logout.service's stop
            logs out of every session nothing uses (uiscsictl detach --unused); uiscsid itself is never
            stopped, and systemd-shutdown's kill rounds spare it ('@'): it serves whatever is still mounted
            until the final unmount. No stop job may take longer than its stated bound (in the JSON).
  --busy    a process holds the filesystem (cwd, open file) through the whole shutdown: the mount unit's
            unmount fails, and only systemd-shutdown's final unmount, after its kill rounds, can flush
            it, through a daemon that must still be there and a device that must still work.
  controls  a --busy run that the design says must fail, and does: --attach ioctl (systemd-shutdown's
            SIGSTOP/SIGCONT ends NBD_DO_IT, the kernel drops the device) or --no-shim (the daemon dies in
            the SIGTERM round). Exit 0 when the LUN was left needing recovery. Without --busy the shim
            changes nothing under systemd (it unmounts first): such a run must be clean.

what each cycle proves (sysvinit):
  boot      rcS: checkfs.sh (fsck -A skips the absent disk: the line has nofail), mountall (no _netdev),
            networking, then the package's /etc/init.d/uiscsid: the daemon under the shim, uiscsictl
            reload --wait, bootkit fsck -N -p, bootkit mount -a -N; the writer ($remote_fs) in runlevel 2
  shutdown  `reboot`: rc6 stops the writer, then sendsigs runs the real killall5 (every process stopped,
            all but /run/sendsigs.omit.d signalled, continued), then uiscsid's stop: bootkit umount -a -N,
            the daemon logs out; umountnfs, networking, umountfs, umountroot, reboot
  --busy    a writer deaf to SIGTERM (sendsigs SIGKILLs it after ~10 s of stop/continue rounds) and a
            holder sendsigs spares: uiscsid's stop remounts the filesystem read-only and keeps the daemon,
            which serves it through umountfs to the end
  controls  --attach ioctl or --no-shim, busy or not: sendsigs kills before the unmount, so either leaves
            the LUN needing recovery (exit 0 when it does)

examples:
  bootkit vm reboot-test                          3 busybox cycles on /var/tmp/bootkit-proof/reboot.img
  bootkit vm reboot-test --cycles 10 --json       more evidence, one JSON report on stdout
  bootkit vm reboot-test --no-shim --cycles 1     the busybox negative control
  bootkit vm reboot-test --init systemd --cycles 3 --busy --lun-file /tmp/lun.img --json
  bootkit vm reboot-test --init systemd --busy --attach ioctl --cycles 1     the systemd control
  bootkit vm reboot-test --init sysvinit --cycles 3 --busy --json
  bootkit vm reboot-test --init sysvinit --no-shim --cycles 1       a sysvinit control
  e2fsck -fn /var/tmp/bootkit-proof/reboot.img    check the LUN yourself afterwards
"""
    + COMMON_EPILOG + byo_cli.EPILOG
)

POWER_EPILOG = (
    """The first boot writes and syncs a payload, keeps writing, and QEMU is SIGKILLed mid-write. The host
checks the LUN needs journal recovery. busybox: the second boot must run fsck -N -p (journal replay:
e2fsck -p exits 0 after a replay, 1 after other repairs; the report shows which) before mount -a -N, and
start no service before both, as read from the guest's timestamped rc and service logs. systemd: the
second boot's systemd-fsck@ must replay the journal before the .mount unit mounts, and the writer service
(After=remote-fs.target) must start after both, as read from the journal's timestamps. sysvinit: the
package's LSB script's bootkit fsck -N -p must replay the journal before its mount -a -N, and the writer
($remote_fs) must start after both, as read from the script's markers. The synced payload
must have survived, and the next clean shutdown must leave the LUN clean.

examples:
  bootkit vm power-cut-test
  bootkit vm power-cut-test --init systemd --json | jq .recovery.order
  bootkit vm power-cut-test --init sysvinit
"""
    + COMMON_EPILOG + byo_cli.EPILOG
)

DOWN_EPILOG = (
    """The guest boots while nothing listens on the target's port. busybox: uiscsictl reload --wait fails
with a message naming the target, fsck -N and mount -N skip the nofail entry, the service that needs no
disk starts and the writer refuses; the boot must end within --bound seconds. Then tgtd starts and the
guest runs uiscsictl reload, bootkit fsck -N -p and bootkit mount -a -N: the LUN attaches and mounts.
systemd: the fstab line has nofail,x-systemd.device-timeout=S (--device-timeout): uiscsi-reload.service
fails naming the target, the mount and the writer (RequiresMountsFor=) give up after S seconds, the
service that needs no disk starts, and multi-user.target must be reached within --bound. Then tgtd starts
and the guest does what an admin does: `uiscsictl reload` (it returns once udev named the device), then
`systemctl start srv-data.mount` (systemd-fsck@ first, then the mount; `mount /srv/data` would skip the
check), then starts the writer again. A target back within S seconds needs no mount command: the mount
job still waits for the device, so systemd checks and mounts it as soon as udev names it (seen in a run
with a 180 s device timeout, whose mount command was `:`).
sysvinit: the LSB script's reload fails naming the target, its fsck -N and mount -N skip the nofail entry,
runlevel 2 must be reached within --bound; once tgtd is back the guest runs `uiscsictl reload`, then
`service uiscsid reload` (the README's command: login, bootkit fsck -N -p, bootkit mount -a -N).

examples:
  bootkit vm target-down-test
  bootkit vm target-down-test --init systemd --bound 120 --json
  bootkit vm target-down-test --init sysvinit --json
"""
    + COMMON_EPILOG + byo_cli.EPILOG
)


def _common(p: argparse.ArgumentParser, *, attach: bool = True, lun_file: bool = True) -> None:
    p.add_argument("--init", choices=inits.names(), default=inits.DEFAULT_INIT,
                   help=f"the guest's init system (default {inits.DEFAULT_INIT}; see below)")
    if attach:
        p.add_argument("--attach", choices=("auto", "netlink", "ioctl"), default=None,
                       help="uiscsid --attach in the guest (default: the daemon's own, auto = netlink there)")
    p.add_argument("--deb", metavar="PATH", help="the .deb to install in a Debian guest (default: build "
                   "this checkout's, as `make deb`)")
    byo_cli.add_arguments(p, lun_file=lun_file)
    _output(p)


def _output(p: argparse.ArgumentParser) -> None:
    """The options of every scenario: the report, the logs, the console and the per-boot bound."""
    p.add_argument("--json", action="store_true", help="one JSON report on stdout (progress stays on stderr)")
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help=f"where the logs of every boot go (default: a new dir under {STATE_DIR})",
    )
    p.add_argument("--console", action="store_true", help="stream the guests' consoles to stderr")
    p.add_argument("--junit", metavar="PATH", help="also write the verdicts as JUnit XML (for CI)")
    p.add_argument("--report", metavar="PATH.html", help="also write one self-contained HTML report")
    p.add_argument(
        "--timeout", type=float, default=420.0, help="hard limit per boot in seconds (default 420)"
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    r = sub.add_parser(
        "reboot-test",
        help="reboot cycles on an iSCSI ext4: clean every time (controls: not)",
        description="Boot and shut down a guest N times on an iSCSI LUN and prove the filesystem "
        "comes back clean with its payload intact.",
        epilog=REBOOT_EPILOG,
        formatter_class=fmt,
    )
    r.add_argument("--cycles", type=int, default=3, help="number of boots (default 3)")
    r.add_argument("--no-shim", action="store_true", help="the daemon is not flagged (busybox: the control)")
    r.add_argument("--busy", action="store_true",
                   help="Debian guests: a process holds the filesystem through the shutdown (the final unmount)")
    r.add_argument("--poweroff", action="store_true", help="Debian guests: end each cycle with poweroff, not reboot")
    r.add_argument(
        "--lun-file",
        metavar="PATH",
        help=f"LUN backing file, created and formatted on first use "
        f"(default {DEFAULT_LUN}, or {DEFAULT_LUN_NOSHIM} with --no-shim; other inits: reboot-INIT.img)",
    )
    r.add_argument("--payload-mb", type=int, default=8, help="payload size in MiB (default 8)")
    _common(r, lun_file=False)
    r.set_defaults(func=cmd_reboot)
    p = sub.add_parser(
        "power-cut-test",
        help="kill QEMU mid-write; the next boot repairs before mounting",
        description="Pull the plug mid-write, then prove the next boot checks and repairs "
        "the filesystem before mounting it and before any service.",
        epilog=POWER_EPILOG,
        formatter_class=fmt,
    )
    _common(p)
    p.set_defaults(func=cmd_power_cut)
    d = sub.add_parser(
        "target-down-test",
        help="boot with the target down; attach and mount when it is back",
        description="Boot with the iSCSI target down, then bring it back.",
        epilog=DOWN_EPILOG,
        formatter_class=fmt,
    )
    d.add_argument(
        "--bound",
        type=float,
        default=120.0,
        help="the boot must end within this many seconds (guest clock; busybox: the rc, systemd: "
        "multi-user.target, sysvinit: runlevel 2 done; default 120)",
    )
    d.add_argument("--device-timeout", type=int, default=DEVICE_TIMEOUT, metavar="S",
                   help=f"systemd: x-systemd.device-timeout= of the fstab line (default {DEVICE_TIMEOUT})")
    _common(d)
    d.set_defaults(func=cmd_target_down)
    restart.register(sub, _output, _run, STATE_DIR)  # a busybox guest only: no --init/--attach/--deb


def _say(text: str) -> None:
    print(f"bootkit vm: {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _workdir(args: argparse.Namespace, name: str) -> Path:
    if args.workdir:
        path = Path(args.workdir)
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=STATE_DIR))


def _run(
    args: argparse.Namespace, name: str, body: Callable[[Path, Runner], dict], table: Callable[[dict], str]
) -> int:
    progress = Progress(getattr(args, "cycles", None) or BOOTS.get(name, 1), stream=sys.stderr,
                        enabled=sys.stderr.isatty() and not args.json,
                        unit="cycle" if hasattr(args, "cycles") else "boot")
    echo = sys.stderr if args.console else None
    runner = Runner(stream=ConsoleSteps(progress, echo=echo) if progress.enabled else echo,
                    say=lambda text: progress.say(f"bootkit vm: {time.strftime('%H:%M:%S')} {text}"),
                    timeout=args.timeout, progress=progress)
    workdir = _workdir(args, name)
    try:
        report = body(workdir, runner)
    except (ByoError, FsCheckError) as exc:  # the admin's setup, or a LUN the test may not use
        progress.close()
        print(f"bootkit vm {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (
        GuestError,
        LunError,
        RuntimeError,
        TimeoutError,
        OSError,
        ValueError,
        subprocess.SubprocessError,
    ) as exc:
        progress.close()
        print(f"bootkit vm {name}: {exc} (logs in {workdir})", file=sys.stderr)
        return EXIT_HARNESS
    progress.close()
    if getattr(args, "junit", None):
        junit.write(args.junit, report)
    if getattr(args, "report", None):
        html.write(args.report, report)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0 if report["ok"] else EXIT_UNEXPECTED


def _usage(name: str, text: str) -> int:
    print(f"bootkit vm {name}: {text}", file=sys.stderr)
    return EXIT_USAGE


def _plan_for(args: argparse.Namespace, *options: str, **kw: object) -> Callable[[int], ProofPlan]:
    """The image guest's plan once the target's port is known: the by-iscsi fstab line and the flags."""
    options = options or inits.image_init(args.init).fstab_options

    def plan(port: int) -> ProofPlan:
        return ProofPlan.default(port, args.init, *options, attach=args.attach or "", **kw)
    return plan


def _own_setup(args: argparse.Namespace, name: str) -> str | None:
    """A usage problem with the own-setup options (busybox guests take none of them), or None."""
    if args.init == inits.DEFAULT_INIT and byo_cli.wanted(args):
        return "--url, --config, --fstab-line and --format need a Debian guest (--init systemd|sysvinit)"
    if args.init == inits.DEFAULT_INIT and name != "reboot-test" and getattr(args, "lun_file", None):
        return "--lun-file needs a Debian guest here (--init systemd|sysvinit)"
    return byo_cli.usage_problem(args)


def _deb(args: argparse.Namespace) -> Path | None:
    return Path(args.deb).resolve() if args.deb else None


def reboot_table(rep: dict) -> str:
    lines = [
        f"reboot-test ({'shim on' if rep['shim'] else 'NO SHIM: negative control'}), LUN {rep['lun_file']}",
        (
            f"{'cycle':>5}  {'fsck':>4}  {'clean at boot':<14} {'prev payload':<12} "
            f"{'daemon at shutdown':<18} {'LUN after':<10} {'secs':>5}"
        ),
    ]
    for c in rep["cycles"]:
        at_boot = "yes" if c["clean"] else ("replayed" if c["journal_replayed"] else "no")
        if c["inherited"]:
            at_boot += "*"
        daemon = "killed" if c["daemon_signalled"] else "spared"
        after = "clean" if c["shutdown_clean"] else "DIRTY"
        lines.append(
            f"{c['cycle']:>5}  {c['fsck_exit']!s:>4}  {at_boot:<14} {c['previous_payload']:<12} "
            f"{daemon:<18} {after:<10} {c['seconds']:>5.0f}"
        )
    f = rep["final"]
    lines.append(
        f"{f['check']}, after the last cycle: exit {f['exit']}, needs_recovery "
        f"{f['needs_recovery']}, debugfs payload {'matches' if f['payload_ok'] else 'DOES NOT match'} "
        "the writer's sha256"
    )
    if any(c["inherited"] for c in rep["cycles"]):
        lines.append("* the LUN was dirty before the run: cycle 1 repaired it and is not counted")
    lines += [f"  - {text}" for text in rep["failures"]]
    verdict = (
        ("CLEAN: every cycle" if rep["ok"] else "NOT CLEAN")
        if rep["shim"]
        else (
            "the control FAILED as it must: the shim is what keeps it clean"
            if rep["ok"]
            else "the control came out CLEAN: it proves nothing"
        )
    )
    lines.append(f"result: {verdict} ({rep['seconds']:.0f} s, logs in {rep['workdir']})")
    return "\n".join(lines)


def image_reboot_table(rep: dict) -> str:
    """The reboot report of a Debian-image guest (systemd...): one line per cycle, then the verdict."""
    control = rep["expected"] == "damage"
    lines = [
        (f"reboot-test --init {rep['init']} (attach {rep['attach']}, shim {'on' if rep['shim'] else 'OFF'}"
         f"{', busy' if rep['busy'] else ''}{': a negative control' if control else ''}), "
         f"LUN {rep['lun_file']}"),
        f"fstab: {rep['fstab_line']}",
        (f"{'cycle':>5}  {'fsck':<9} {'mounted':<7} {'prev payload':<12} {'unmount':<8} {'logout':<6} "
         f"{'daemon':<10} {'LUN after':<9} {'secs':>5}"),
    ]
    for c in rep["cycles"]:
        s = c["shutdown"]
        fsck = "replayed" if c["journal_replayed"] else ("clean" if c["fsck_ran"] else "none")
        lines.append(
            f"{c['cycle']:>5}  {fsck + ('*' if c['inherited'] else ''):<9} {'yes' if c['mounted'] else 'NO':<7} "
            f"{c['previous_payload']:<12} {s.get('unmount', '?'):<8} {'yes' if s.get('logout_ran') else 'no':<6} "
            f"{'spared' if s.get('daemon_spared') else 'not spared':<10} "
            f"{'clean' if c['shutdown_clean'] else 'DIRTY':<9} {c['seconds']:>5.0f}")
        t = c["timings"]
        lines.append("       guest s: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if v is not None))
    f = rep["final"]
    lines.append(f"{f['check']}, after the last cycle: exit {f['exit']}, needs_recovery "
                 f"{f['needs_recovery']}, payload {'matches' if f['payload_ok'] else 'DOES NOT match'}")
    lines += [f"  - {text}" for text in rep["failures"]]
    if control:
        verdict = ("the control FAILED as it must: the LUN was left needing recovery" if rep["ok"]
                   else "the control came out clean (or did not run): it proves nothing")
    else:
        verdict = "CLEAN: every cycle" if rep["ok"] else "NOT CLEAN"
    lines.append(f"result: {verdict} ({rep['seconds']:.0f} s, logs in {rep['workdir']})")
    return "\n".join(lines)


def checks_table(rep: dict) -> str:
    lines = [f"{rep['test']}" + (f" --init {rep['init']}" if "init" in rep else "") + ":"]
    lines += [f"  {'ok  ' if ok else 'FAIL'} {name.replace('_', ' ')}" for name, ok in rep["checks"].items()]
    lines.append(
        f"result: {'PASS' if rep['ok'] else 'FAIL'} ({rep['seconds']:.0f} s, logs in {rep['workdir']})"
    )
    return "\n".join(lines)


def cmd_reboot(args: argparse.Namespace) -> int:
    if args.cycles < 1 or args.payload_mb < 1 or args.payload_mb > 32:
        return _usage("reboot-test", "--cycles must be >= 1 and --payload-mb 1..32")
    if problem := _own_setup(args, "reboot-test"):
        return _usage("reboot-test", problem)
    if args.init == inits.DEFAULT_INIT:
        if args.busy or args.poweroff or args.deb:
            return _usage("reboot-test", "--busy, --poweroff and --deb need a Debian guest (--init systemd|sysvinit)")
        lun_file = Path(args.lun_file) if args.lun_file else (
            DEFAULT_LUN_NOSHIM if args.no_shim else DEFAULT_LUN)
        return _run(args, "reboot-test", lambda w, r: reboot_test(
            lun_file, args.cycles, not args.no_shim, w, r, payload_mb=args.payload_mb, attach=args.attach or ""),
            reboot_table)
    init = inits.image_init(args.init)
    flags = {"shim": not args.no_shim, "busy": args.busy, "shutdown": "poweroff" if args.poweroff else "reboot",
             "payload_mb": args.payload_mb}
    control = init.expects_damage(_plan_for(args, **flags)(0))

    def body(w: Path, r: Runner) -> dict:
        src = byo_cli.source(args, STATE_DIR / byo_cli.default_name(args.init, args, control))
        return image_proof.reboot_test(init, byo_cli.plan_for(args, src, **flags), src, args.cycles, w, r,
                                       deb=_deb(args))
    return _run(args, "reboot-test", body, image_reboot_table)


def cmd_power_cut(args: argparse.Namespace) -> int:
    if problem := _own_setup(args, "power-cut-test"):
        return _usage("power-cut-test", problem)
    if args.init == inits.DEFAULT_INIT:
        if args.deb:
            return _usage("power-cut-test", "--deb needs a Debian guest (--init systemd|sysvinit)")
        return _run(args, "power-cut-test", lambda w, r: power_cut_test(
            w / "lun.img", w, r, attach=args.attach or ""), checks_table)
    init = inits.image_init(args.init)

    def body(w: Path, r: Runner) -> dict:
        src = byo_cli.source(args, w / "lun.img")
        return image_proof.power_cut_test(init, byo_cli.plan_for(args, src, shutdown="poweroff"), src, w, r,
                                          deb=_deb(args))
    return _run(args, "power-cut-test", body, checks_table)


def cmd_target_down(args: argparse.Namespace) -> int:
    if problem := _own_setup(args, "target-down-test"):
        return _usage("target-down-test", problem)
    if args.init == inits.DEFAULT_INIT:
        if args.deb:
            return _usage("target-down-test", "--deb needs a Debian guest (--init systemd|sysvinit)")
        return _run(args, "target-down-test", lambda w, r: target_down_test(
            w / "lun.img", w, r, bound=args.bound, attach=args.attach or ""), checks_table)
    if args.device_timeout < 1:
        return _usage("target-down-test", "--device-timeout must be >= 1")
    init = inits.image_init(args.init)
    options = ("_netdev", "nofail", f"x-systemd.device-timeout={args.device_timeout}")

    def body(w: Path, r: Runner) -> dict:
        src = byo_cli.source(args, w / "lun.img")
        return image_proof.target_down_test(init, byo_cli.plan_for(args, src, *options, shutdown="poweroff"), src,
                                            w, r, bound=args.bound, deb=_deb(args))
    return _run(args, "target-down-test", body, checks_table)
