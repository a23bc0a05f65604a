"""`bootkit vm reboot-test`, `power-cut-test` and `target-down-test`: the proof, from the command line.

vm/cli.py adds these subcommands with `add_parsers(sub)`; each handler returns the exit status.
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

from vm.harness import GuestError
from vm.scenarios import restart
from vm.scenarios.facts import Runner
from vm.scenarios.lun import LunError
from vm.scenarios.reboot import power_cut_test, reboot_test
from vm.scenarios.target_down import target_down_test

STATE_DIR = Path("/var/tmp/bootkit-proof")
DEFAULT_LUN = STATE_DIR / "reboot.img"
DEFAULT_LUN_NOSHIM = STATE_DIR / "reboot-noshim.img"
EXIT_UNEXPECTED = 1
EXIT_HARNESS = 125

COMMON_EPILOG = """
Each boot is a QEMU (TCG) guest running this host's root with the project's venv; the LUN is served
by a real tgtd on 127.0.0.1 (10.0.2.2 in the guest), and the guest boots with `bootkit rc render --init
busybox` output. Every boot's console, rc step log (/results/rc.log) and service logs stay in --workdir.
Exit status: 0 the expected outcome, 1 not, 125 the guest or the target could not be run.
"""

REBOOT_EPILOG = (
    """what each cycle proves:
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

examples:
  bootkit vm reboot-test                          3 cycles on /var/tmp/bootkit-proof/reboot.img
  bootkit vm reboot-test --cycles 10 --json       more evidence, one JSON report on stdout
  bootkit vm reboot-test --no-shim --cycles 1     the negative control
  e2fsck -fn /var/tmp/bootkit-proof/reboot.img    check the LUN yourself afterwards
"""
    + COMMON_EPILOG
)

POWER_EPILOG = (
    """The first boot writes and syncs a payload, keeps writing, and QEMU is SIGKILLed mid-write. The host
checks the LUN needs journal recovery. The second boot must run fsck -N -p (journal replay: e2fsck -p
exits 0 after a replay, 1 after other repairs; the report shows which) before mount -a -N, and start no
service before both, as read from the guest's timestamped rc and service logs; the synced payload must
have survived, and the next clean shutdown must leave the LUN clean.

examples:
  bootkit vm power-cut-test
  bootkit vm power-cut-test --json | jq .recovery.order
"""
    + COMMON_EPILOG
)

DOWN_EPILOG = (
    """The guest boots while nothing listens on the target's port: uiscsictl reload --wait fails with a
message naming the target, fsck -N and mount -N skip the nofail entry, the service that needs no disk starts
and the writer refuses. The boot must end within --bound seconds. Then tgtd starts on that port and the
guest runs uiscsictl reload, bootkit fsck -N -p and bootkit mount -a -N: the LUN attaches and mounts.

examples:
  bootkit vm target-down-test
  bootkit vm target-down-test --bound 60 --json
"""
    + COMMON_EPILOG
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON report on stdout (progress stays on stderr)")
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help=f"where the logs of every boot go (default: a new dir under {STATE_DIR})",
    )
    p.add_argument("--console", action="store_true", help="stream the guests' consoles to stderr")
    p.add_argument(
        "--timeout", type=float, default=420.0, help="hard limit per boot in seconds (default 420)"
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    r = sub.add_parser(
        "reboot-test",
        help="reboot cycles on an iSCSI ext4: clean every time (--no-shim: not)",
        description="Boot and shut down a guest N times on an iSCSI LUN and prove the filesystem "
        "comes back clean with its payload intact.",
        epilog=REBOOT_EPILOG,
        formatter_class=fmt,
    )
    r.add_argument("--cycles", type=int, default=3, help="number of boots (default 3)")
    r.add_argument("--no-shim", action="store_true", help="negative control: the daemon is not flagged")
    r.add_argument(
        "--lun-file",
        metavar="PATH",
        help=f"LUN backing file, created and formatted on first use "
        f"(default {DEFAULT_LUN}, or {DEFAULT_LUN_NOSHIM} with --no-shim)",
    )
    r.add_argument("--payload-mb", type=int, default=8, help="payload size in MiB (default 8)")
    _common(r)
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
        help="the rc must finish within this many seconds (guest clock, default 120)",
    )
    _common(d)
    d.set_defaults(func=cmd_target_down)
    restart.register(sub, _common, _run, STATE_DIR)


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
    runner = Runner(stream=sys.stderr if args.console else None, say=_say, timeout=args.timeout)
    workdir = _workdir(args, name)
    try:
        report = body(workdir, runner)
    except (
        GuestError,
        LunError,
        RuntimeError,
        TimeoutError,
        OSError,
        ValueError,
        subprocess.SubprocessError,
    ) as exc:
        print(f"bootkit vm {name}: {exc} (logs in {workdir})", file=sys.stderr)
        return EXIT_HARNESS
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0 if report["ok"] else EXIT_UNEXPECTED


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
        f"host, after the last cycle: e2fsck -fn exit {f['e2fsck_exit']}, needs_recovery "
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


def checks_table(rep: dict) -> str:
    lines = [f"{rep['test']}:"]
    lines += [f"  {'ok  ' if ok else 'FAIL'} {name.replace('_', ' ')}" for name, ok in rep["checks"].items()]
    lines.append(
        f"result: {'PASS' if rep['ok'] else 'FAIL'} ({rep['seconds']:.0f} s, logs in {rep['workdir']})"
    )
    return "\n".join(lines)


def cmd_reboot(args: argparse.Namespace) -> int:
    if args.cycles < 1 or args.payload_mb < 1 or args.payload_mb > 32:
        print("bootkit vm reboot-test: --cycles must be >= 1 and --payload-mb 1..32", file=sys.stderr)
        return 2
    lun_file = Path(args.lun_file) if args.lun_file else (DEFAULT_LUN_NOSHIM if args.no_shim else DEFAULT_LUN)
    return _run(
        args,
        "reboot-test",
        lambda w, r: reboot_test(lun_file, args.cycles, not args.no_shim, w, r, payload_mb=args.payload_mb),
        reboot_table,
    )


def cmd_power_cut(args: argparse.Namespace) -> int:
    return _run(args, "power-cut-test", lambda w, r: power_cut_test(w / "lun.img", w, r), checks_table)


def cmd_target_down(args: argparse.Namespace) -> int:
    return _run(
        args,
        "target-down-test",
        lambda w, r: target_down_test(w / "lun.img", w, r, bound=args.bound),
        checks_table,
    )
