"""`bootkit shim`, `bootkit killall5` and `bootkit shutdown-kill`: the no-broadcast-kill flag from a shell."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from dataclasses import asdict

from iscsid_shim import killall, launch, registry

SHIM_EPILOG = """\
The flag is OpenBSD's PS_NOBROADCASTKILL, emulated three ways at once: an entry in
$BOOTKIT_RUNDIR/bootkit/nobroadcastkill/ (default /run; honoured by `bootkit killall5` and
`bootkit shutdown-kill`), the PID in $BOOTKIT_RUNDIR/sendsigs.omit.d/NAME (Debian's sendsigs), and an
argv[0] starting with '@' (systemd's final kill spree).

examples:
  bootkit shim run --name uiscsid -- uiscsid -d     # flag, then exec uiscsid as '@uiscsid -d'
  bootkit shim list --json
  bootkit shim clear 812
"""

KILLALL_EPILOG = """\
Spares pid 1, itself and its ancestors, kernel threads, zombies, flagged processes (`bootkit shim`),
-o PIDs and the PIDs in $BOOTKIT_RUNDIR/sendsigs.omit.d/*. Like sysvinit's killall5 it first stops every
other process with kill(-1, SIGSTOP), the spared ones too, signals the victims, then sends
kill(-1, SIGCONT): a spared daemon is never signalled but is stopped and continued (an NBD device
attached through the ioctl dies of that; `uiscsid --attach netlink` does not). Exit status as
killall5(8): 0 some process was signalled, 2 none was left to signal, 1 error. Only ever run it at
shutdown, in a PID namespace or in a guest: on a live host it stops and kills your session.

examples:
  bootkit killall5 -s TERM -o 812
  bootkit killall5 -15             # sysvinit spelling
  bootkit killall5 --dry-run --json
"""

SHUTDOWN_EPILOG = """\
OpenBSD reboot(8)'s sequence, every step sparing what `bootkit killall5` spares: SIGTERM to all, wait
(up to --term-wait; we go on early once none is left), sync, wait (up to --sync-wait), then SIGKILL up
to --kill-tries times, sleeping --kill-step * i after try i, until nothing is left. Each broadcast
stops and continues every other process first, as Linux's killall5 and systemd-shutdown do. Exit 0
when nothing unflagged is left, 1 when some process would not die.

examples:
  bootkit shutdown-kill
  bootkit shutdown-kill --term-wait 0.5 --sync-wait 0.5 --kill-step 0.2
"""


def _log(prog: str, text: str) -> None:
    sys.stderr.write(f"{prog}: {time.time():.3f} {text}\n")
    sys.stderr.flush()


def parse_signal(text: str) -> int:
    """A signal by number, name or SIG-name (15, TERM, SIGTERM), as kill(1) takes it."""
    if text.isdigit():
        num = int(text)
        if num not in {int(s) for s in signal.valid_signals()}:
            raise argparse.ArgumentTypeError(f"no signal number {num}")
        return num
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def parse_pids(text: str) -> list[int]:
    """-o takes one PID or a comma list, as killall5's -o does."""
    try:
        pids = [int(p) for p in text.split(",") if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad PID list {text!r}") from None
    if not pids or any(p <= 0 for p in pids):
        raise argparse.ArgumentTypeError(f"bad PID list {text!r}")
    return pids


def _omit_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", dest="omit", action="append", type=parse_pids, default=[], metavar="PID[,PID]",
                   help="also spare these PIDs (repeatable)")


def _omitted(args: argparse.Namespace) -> list[int]:
    return [pid for group in args.omit for pid in group]


class _Killall5Parser(argparse.ArgumentParser):
    """killall5(8) reserves exit 2 for "nothing left to signal": a usage error must exit 1 instead."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(killall.EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    return p


def shim_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bootkit shim", description="Run a daemon flagged no-broadcast-kill, "
                                "or list and clear the flags.", epilog=SHIM_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    sub = p.add_subparsers(dest="action", required=True, metavar="{run,list,clear}")
    run = sub.add_parser("run", help="flag this process, then exec CMD in the same PID as '@NAME'",
                         description="Flag this PID, then exec CMD in it with argv[0] '@NAME'. A script's "
                         "interpreter is exec'd directly so that the '@' survives the shebang; a Python "
                         "script of this environment runs through iscsid_shim.launch, which rewrites "
                         "its argv in place (setproctitle) and keeps its venv.",
                         epilog=SHIM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--name", help="flag name and argv[0] after '@' (default: basename of CMD)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    lst = sub.add_parser("list", help="list the live flagged processes (stale entries are pruned)")
    lst.add_argument("--json", action="store_true", help="one JSON array on stdout")
    clr = sub.add_parser("clear", help="remove the flag of PID")
    clr.add_argument("pid", type=int)
    return p


def shim_run(name: str | None, cmd: list[str]) -> int:
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        sys.stderr.write("bootkit shim run: no command given (bootkit shim run --name N -- CMD ...)\n")
        return 2
    name = registry.check_name(name or os.path.basename(cmd[0]))
    plan = launch.plan(name, cmd)
    registry.flag(os.getpid(), name)  # OpenBSD's iscsid treats a failure to flag as fatal; so do we
    if plan.warning:
        _log("bootkit shim run", f"warning: {plan.warning}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(plan.path, plan.argv)
    except OSError:
        registry.unflag(os.getpid())
        raise
    return 1  # not reached: execv does not return


def shim_do(args: argparse.Namespace) -> int:
    if args.action == "run":
        return shim_run(args.name, args.cmd)
    if args.action == "list":
        flags = registry.flagged()
        if args.json:
            print(json.dumps([asdict(f) for f in flags]))
        else:
            for f in flags:
                print(f"{f.pid}\t{f.name}")
        return 0
    if registry.unflag(args.pid):
        return 0
    sys.stderr.write(f"bootkit shim clear: PID {args.pid} is not flagged\n")
    return 1


SYSV_SIGNAL = re.compile(r"^-(\d+|[A-Z][A-Z0-9+-]*)$")


def killall_parser() -> argparse.ArgumentParser:
    p = _Killall5Parser(prog="bootkit killall5", description="Send a signal to every process "
                                "except the flagged ones, like killall5(8).", epilog=KILLALL_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("-s", dest="sig", type=parse_signal, default=int(signal.SIGTERM), metavar="SIG",
                   help="signal by name or number (default TERM); -15 and -TERM work too")
    _omit_arg(p)
    p.add_argument("--dry-run", action="store_true", help="list the PIDs that would get it; send nothing")
    p.add_argument("--json", action="store_true", help="print {signal, dry_run, pids} as JSON on stdout")
    return p


def sysv_signal_args(argv: list[str]) -> list[str]:
    """Rewrite killall5's `-15` / `-TERM` spelling to `-s 15` / `-s TERM`."""
    return [f"-s{a[1:]}" if SYSV_SIGNAL.match(a) else a for a in argv]


def killall_do(args: argparse.Namespace) -> int:
    omit = _omitted(args)
    pids = killall.targets(omit) if args.dry_run else killall.broadcast(args.sig, omit)
    if args.json:
        print(json.dumps({"signal": signal.Signals(args.sig).name, "dry_run": args.dry_run, "pids": pids}))
    elif args.dry_run:
        print(" ".join(map(str, pids)))
    return killall.EXIT_SIGNALLED if pids else killall.EXIT_NONE_LEFT


def shutdown_parser() -> argparse.ArgumentParser:
    p = _Killall5Parser(prog="bootkit shutdown-kill", description="Kill every unflagged process "
                                "the way OpenBSD's reboot(8) does before it syncs and unmounts.",
                                epilog=SHUTDOWN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    d = killall.Timing()
    p.add_argument("--term-wait", type=float, default=d.term_wait, metavar="S",
                   help=f"wait after SIGTERM (default {d.term_wait})")
    p.add_argument("--sync-wait", type=float, default=d.sync_wait, metavar="S",
                   help=f"wait after sync (default {d.sync_wait})")
    p.add_argument("--kill-tries", type=int, default=d.kill_tries, metavar="N",
                   help=f"SIGKILL rounds at most (default {d.kill_tries})")
    p.add_argument("--kill-step", type=float, default=d.kill_step, metavar="S",
                   help=f"sleep S*i after SIGKILL round i (default {d.kill_step})")
    _omit_arg(p)
    return p


def shutdown_do(args: argparse.Namespace) -> int:
    if min(args.term_wait, args.sync_wait, args.kill_step) < 0 or args.kill_tries < 1:
        raise ValueError("waits must be >= 0 and --kill-tries >= 1")
    timing = killall.Timing(args.term_wait, args.sync_wait, args.kill_tries, args.kill_step)
    return killall.shutdown_kill(_omitted(args), timing, lambda t: _log("bootkit shutdown-kill", t))


COMMANDS = {
    "shim": (shim_parser, shim_do),
    "killall5": (killall_parser, killall_do),
    "shutdown-kill": (shutdown_parser, shutdown_do),
}


def main(argv: list[str]) -> int:
    """Entry point from bootkit/cli.py: argv[0] is "shim", "killall5" or "shutdown-kill"."""
    word, rest = argv[0], argv[1:]
    make_parser, do = COMMANDS[word]
    if word == "killall5":
        rest = sysv_signal_args(rest)
    args = make_parser().parse_args(rest)
    try:
        return do(args)
    except (OSError, ValueError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"bootkit {word}: {exc}\n")
        return 1
