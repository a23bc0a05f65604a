"""`bootkit fstab|fsck|mount|umount`: argv in, exit code out; results on stdout, progress on stderr."""

from __future__ import annotations

import argparse
import json
import sys

from fstab_tools import fsck as fsck_mod
from fstab_tools import mount as mount_mod
from fstab_tools import verify as verify_mod
from fstab_tools.fstab import Entry, Fstab, FstabError, Line, mangle
from fstab_tools.mountinfo import PROC_MOUNTINFO, MountinfoError, load_mountinfo, norm, visible
from fstab_tools.netfs import NETWORK_FSTYPES, is_network, select

DEFAULT_FSTAB = "/etc/fstab"
# what each word exits with on bad usage and on an operational error (fsck(8), mount(8))
USAGE_EXIT = {"fstab": 2, "fsck": fsck_mod.EXIT_USAGE, "mount": mount_mod.EXIT_USAGE, "umount": 1}
ERROR_EXIT = {"fstab": 1, "fsck": fsck_mod.EXIT_ERROR, "mount": mount_mod.EXIT_SYSERR, "umount": 2}

NET_HELP = (
    "network entries only: the whole option `net` (OpenBSD) or `_netdev`, or a network fstype. "
    "Without -N, only the local entries."
)
NETLIST = ", ".join(sorted(NETWORK_FSTYPES))

EPILOGS = {
    "fstab": f"""\
A network entry has the whole option `net` or `_netdev` (`netdev` does not count), or one of
these fstypes (also as fuse.TYPE): {NETLIST}.

examples:
  bootkit fstab list                 local entries, as fstab lines
  bootkit fstab list -N --json       network entries for scripts
  bootkit fstab verify --fstab ./fstab.new
""",
    "fsck": """\
Checks entries with passno > 0: passno 1 first, then the rest, different disks in parallel.
Filesystems already mounted read-write are skipped (checkers refuse them).
Unlike util-linux fsck, -N means network entries (OpenBSD); use --dry-run to only show commands.
Exit status is the OR of the checkers': 0 clean, 1 repaired, 2 reboot, 4 errors left,
8 operational error (also: a device that never appeared), 16 usage, 32 canceled.

examples:
  bootkit fsck -p                    preen the local filesystems at boot
  bootkit fsck -N -p --wait 30       after iSCSI login: wait for the disks, then preen them
  bootkit fsck -N -p --dry-run --json --fstab ./fstab
""",
    "mount": """\
Mounts in fstab order, skipping noauto and what is already mounted; the private `net` option is
dropped before calling mount(8). Named targets are mounted even if noauto or on the other side of -N.
Exit: 0 ok, 1 usage, 2 system error, 32 all failed, 64 some failed.

examples:
  bootkit mount -a                   local filesystems
  bootkit mount -a -N --wait 30      network filesystems, once iscsid has logged in
  bootkit mount -a -N --dry-run --json --fstab ./fstab --mountinfo ./mountinfo
""",
    "umount": """\
Unmounts mounted fstab targets (and anything mounted below them) children first. A busy
filesystem is remounted read-only instead, so its data is on disk before the session goes away.
Exit: 0 ok (including a read-only fallback), 1 usage, 2 system error, 32 all failed, 64 some failed.

examples:
  bootkit umount -a -N               network filesystems, before iSCSI logout
  bootkit umount -a -N --dry-run --json --fstab ./fstab --mountinfo ./mountinfo
""",
}


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fstab", default=DEFAULT_FSTAB, metavar="F", help="fstab file (default /etc/fstab)")
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    p.add_argument("--debug", action="store_true", help="show a traceback on internal errors")


def _parser(word: str) -> argparse.ArgumentParser:
    descriptions = {
        "fstab": "List or verify fstab entries; -N selects network (net/_netdev) entries.",
        "fsck": "Check filesystems listed in fstab as fsck(8) -A does, with OpenBSD's -N filter.",
        "mount": "Mount filesystems listed in fstab (mount -a), with OpenBSD's -N filter.",
        "umount": "Unmount filesystems listed in fstab (umount -a), children first, with -N.",
    }
    p = argparse.ArgumentParser(
        prog=f"bootkit {word}", description=descriptions[word], epilog=EPILOGS[word],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    _common_args(common)
    if word == "fstab":
        sub = p.add_subparsers(dest="action", required=True, metavar="{list,verify}")
        lst = sub.add_parser("list", parents=[common], help="print the selected entries")
        lst.add_argument("-N", dest="net", action="store_true", help=NET_HELP)
        sub.add_parser("verify", parents=[common], help="report errors and risky entries; exit 1 on errors")
        return p
    _common_args(p)
    p.add_argument("-N", dest="net", action="store_true", help=NET_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the plan; run no fsck, mount or umount")
    if word in ("fsck", "mount"):
        p.add_argument("--wait", type=float, default=0.0, metavar="S",
                       help="wait up to S seconds for missing devices to appear (default 0)")
    if word == "fsck":
        mode = p.add_mutually_exclusive_group()
        for flag, text in (("-p", "preen: repair what is safe"), ("-n", "check only, change nothing"),
                           ("-y", "answer yes to every repair")):
            mode.add_argument(flag, dest="mode", action="store_const", const=flag, help=text)
        p.add_argument("-f", dest="force", action="store_true", help="check even filesystems marked clean")
    else:
        p.add_argument("-a", dest="all", action="store_true", help="every selected entry")
    p.add_argument("--mountinfo", default=PROC_MOUNTINFO, metavar="FILE",
                   help="what is mounted now (default /proc/self/mountinfo)")
    if word != "fsck":
        p.add_argument("targets", nargs="*", metavar="TARGET", help="mount point or source in fstab")
    return p


def _emit(args: argparse.Namespace, payload: dict[str, object], text_lines: list[str]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in text_lines))


def _load(path: str, report_errors: bool = True) -> Fstab:
    fstab = Fstab.load(path)
    if report_errors:
        for err in fstab.errors:
            sys.stderr.write(f"{err}\n")
    return fstab


def entry_json(line: Line, e: Entry) -> dict[str, object]:
    return {
        "source": e.source, "target": e.target, "fstype": e.fstype, "options": list(e.options),
        "freq": e.freq, "passno": e.passno, "net": is_network(e), "noauto": e.noauto, "line": line.lineno,
    }


def cmd_fstab(args: argparse.Namespace) -> int:
    if args.action == "verify":
        fstab = _load(args.fstab, report_errors=False)
        findings = verify_mod.verify(fstab)
        code = verify_mod.exit_code(findings)
        payload = {"fstab": args.fstab, "findings": [f.to_json() for f in findings], "exit": code}
        _emit(args, payload, [f.format(args.fstab) for f in findings])
        return code
    fstab = _load(args.fstab)
    chosen = set(map(id, select([e for _, e in fstab.entries], args.net)))
    pairs = [(line, e) for line, e in fstab.entries if id(e) in chosen]
    if args.json:
        sys.stdout.write(json.dumps([entry_json(line, e) for line, e in pairs], indent=2) + "\n")
    else:
        sys.stdout.write("".join(line.raw.strip(" \t\r") + "\n" for line, _ in pairs))
    return 0


def cmd_fsck(args: argparse.Namespace, prog: str) -> int:
    say = fsck_mod.stderr_progress(prog)
    fstab = _load(args.fstab)
    mounts = load_mountinfo(args.mountinfo)
    checks = fsck_mod.plan(fstab, args.net, args.mode, args.force, args.wait, progress=say, mounts=mounts)
    for c in checks:
        if c.status == "missing":
            say(f"{c.entry.target}: {c.reason}")
    if args.dry_run:
        code = fsck_mod.planned_exit(checks)
    else:
        code = fsck_mod.combine([fsck_mod.run(checks, interactive=args.mode is None, progress=say)] +
                                [c.exit or 0 for c in checks])
    text = []
    for c in checks:
        if c.command and args.dry_run:
            text.append(f"pass {c.entry.passno}\t{mangle(c.entry.target)}\t{' '.join(c.command)}")
        else:
            detail = c.reason or ("" if c.exit is None else f"exit {c.exit}")
            text.append(f"{c.status}\t{mangle(c.entry.target)}\t{detail}")
    payload = {"fstab": args.fstab, "net": args.net, "dry_run": args.dry_run,
               "checks": [c.to_json() for c in checks], "exit": code}
    _emit(args, payload, text)
    return code


def cmd_mount(args: argparse.Namespace, word: str, prog: str) -> int:
    if not args.all and not args.targets:
        sys.stderr.write(f"{prog}: give -a or at least one TARGET (see --help)\n")
        return USAGE_EXIT[word]
    say = fsck_mod.stderr_progress(prog)
    fstab = _load(args.fstab)
    targets = None if args.all else args.targets
    mounts = load_mountinfo(args.mountinfo)
    if word == "mount":
        _, unknown = mount_mod.choose(fstab, args.net, targets)
        why = f"not found in {args.fstab}"
    else:  # umount needs no fstab line for a named mount point, only a mount
        live = visible(mounts)
        unknown = [t for t in targets or [] if norm(t) not in live]
        why = "not mounted"
    for t in unknown:
        say(f"{t}: {why}")
    if word == "mount":
        actions = mount_mod.plan_mount(fstab, mounts, args.net, targets, args.wait, progress=say)
        if not args.dry_run:
            mount_mod.run_mount(actions, say)
        else:
            for a in actions:
                if a.status == "missing":
                    say(f"{a.target}: {a.reason}")
    else:
        actions = mount_mod.plan_umount(fstab, mounts, args.net, targets)
        if not args.dry_run:
            mount_mod.run_umount(actions, say)
    code = mount_mod.exit_code(actions)
    if unknown:
        code |= mount_mod.EXIT_FAILURE
    text = []
    for a in actions:
        detail = " ".join(a.command) if a.status == "planned" and a.command else a.reason
        text.append(f"{a.status}\t{mangle(a.target)}\t{detail}".rstrip("\t"))
    key = "mounts" if word == "mount" else "unmounts"
    payload = {"fstab": args.fstab, "net": args.net, "dry_run": args.dry_run,
               key: [a.to_json() for a in actions], "exit": code}
    _emit(args, payload, text)
    return code


def main(argv: list[str]) -> int:
    """Entry point from bootkit/cli.py: argv[0] is one of fstab, fsck, mount, umount."""
    word = argv[0] if argv else ""
    if word not in USAGE_EXIT:
        sys.stderr.write(f"fstab_tools: unknown command {word!r}\n")
        return 2
    prog = f"bootkit {word}"
    try:
        args = _parser(word).parse_args(argv[1:])
    except SystemExit as e:
        return 0 if e.code in (0, None) else USAGE_EXIT[word]
    try:
        if word == "fstab":
            return cmd_fstab(args)
        if word == "fsck":
            return cmd_fsck(args, prog)
        return cmd_mount(args, word, prog)
    except (FstabError, MountinfoError) as e:
        sys.stderr.write(f"{prog}: {e}\n")
        return ERROR_EXIT[word]
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return fsck_mod.EXIT_CANCELED if word == "fsck" else ERROR_EXIT[word]
    except Exception as e:  # no traceback for users; --debug shows it
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(f"{prog}: internal error: {e!r} (run with --debug for a traceback)\n")
        return ERROR_EXIT[word]
