"""The "your own setup" options of reboot-test, power-cut-test and target-down-test (vm/byo): an admin's
target, fstab line and LUN instead of the built-in tgtd, ext4 and fixed fstab line.

`add_arguments` puts them on a parser; `source` turns them into the scenario's `LunSource` and
`plan_for` into the guest's plan (TargetSpec from the source, FstabSpec from the admin's line).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from initiator.kernel.udev_info import link_path
from vm.byo.fstab import parse_fstab_line
from vm.byo.target import UserTarget, from_config, from_url
from vm.scenarios import inits
from vm.scenarios.plan import FstabSpec, ProofPlan, TargetSpec
from vm.scenarios.source import LunSource

EPILOG = """
your own setup (Debian guests: --init systemd or sysvinit):
  --url iscsi://[user@]HOST[:PORT]/IQN/LUN   your target instead of the built-in tgtd; CHAP secrets from
            LIBISCSI_CHAP_USERNAME/_PASSWORD (and _TARGET_USERNAME/_PASSWORD for mutual CHAP) or from
            --secrets FILE (those KEY=VALUE lines, mode 0600); never on the command line
  --config uiscsi.conf --target NAME [--lun N]   the same from your uiscsi.conf (its secret files)
  --fstab-line '<source> <dir> <type> <options> <freq> <passno>'   your filesystem and options: ext4, xfs
            or btrfs, with _netdev (or net), the LUN's /dev/disk/by-iscsi/<iqn>-lun<N> link as source;
            under sysvinit also nofail (Debian's checkfs.sh runs fsck -A before any daemon has started)
  --lun-file PATH   with your target: the file it serves as the LUN, so the host can check it between
            boots (it is compared with what the target serves first); without it a last guest boot runs
            the read-only check (xfs_repair -n, btrfs check --readonly, e2fsck -fn) and the report says so
  --format  allows the test to make the fstab line's filesystem on a LUN it did not create; without it,
            a LUN that holds anything else (or nothing) is refused before any boot, exit 2
A LUN's recovery state and consistency are judged with its type's own tools, never by mounting on the
host: dumpe2fs -h and e2fsck -fn (ext4), xfs_logprint -t and xfs_repair -n (xfs), btrfs
inspect-internal dump-super and btrfs check --readonly (btrfs).
"""


def add_arguments(p: argparse.ArgumentParser, *, lun_file: bool) -> None:
    g = p.add_argument_group("your own setup (see below)")
    g.add_argument("--url", metavar="URL", help="your target and LUN: iscsi://[user@]host[:port]/IQN/LUN")
    g.add_argument("--secrets", metavar="FILE", help="LIBISCSI_CHAP_*=VALUE lines for --url (mode 0600)")
    g.add_argument("--config", metavar="FILE", help="your uiscsi.conf (with --target NAME)")
    g.add_argument("--target", metavar="NAME", help="the target block of --config")
    g.add_argument("--lun", type=int, metavar="N", help="the LUN of --config's target, if it lists several")
    g.add_argument("--fstab-line", metavar="LINE", help="the guest's fstab line for the LUN (your type, options)")
    g.add_argument("--format", action="store_true", help="allow formatting a LUN this test did not create")
    if lun_file:
        g.add_argument("--lun-file", metavar="PATH",
                       help="the LUN's backing file on this host (default: a new one in the workdir)")


def wanted(args: argparse.Namespace) -> bool:
    """Whether any own-setup option was given."""
    return any(getattr(args, k, None) for k in ("url", "config", "fstab_line", "format", "secrets", "target"))


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of options, in words (None: nothing)."""
    if args.url and args.config:
        return "--url and --config name a target each: give one"
    if args.config and not args.target:
        return "--config needs --target NAME (the target block to use)"
    if (args.target or args.lun is not None) and not args.config:
        return "--target and --lun go with --config"
    if args.secrets and not args.url:
        return "--secrets goes with --url (a uiscsi.conf names its own secret files)"
    if args.fstab_line and getattr(args, "init", "") == "sysvinit" and "nofail" not in _options(args.fstab_line):
        return ("--fstab-line: sysvinit needs nofail in the options (Debian's checkfs.sh runs fsck -A before "
                "uiscsid has started, and stops the boot on the absent disk)")
    return None


def _options(line: str) -> list[str]:
    """The options field of an fstab line as written (empty when the line has fewer fields)."""
    fields = line.split()
    return fields[3].split(",") if len(fields) > 3 else []


def user_target(args: argparse.Namespace) -> UserTarget | None:
    if args.url:
        return from_url(args.url, secrets=args.secrets)
    if args.config:
        return from_config(args.config, args.target, args.lun)
    return None


def source(args: argparse.Namespace, default_lun: Path) -> LunSource:
    """The LUN the run uses: the admin's target (its backing file only if --lun-file names it) or the
    built-in tgtd on --lun-file or DEFAULT_LUN; the type is the --fstab-line's (ext4 without one)."""
    user = user_target(args)
    entry = parse_fstab_line(args.fstab_line, link(user)) if args.fstab_line else None
    lun_file = Path(args.lun_file) if args.lun_file else (None if user else default_lun)
    return LunSource(lun_file=lun_file, user=user, fstype=entry.fstype if entry else "ext4",
                     allow_format=args.format, payload_mb=getattr(args, "payload_mb", 8))


def link(user: UserTarget | None) -> str:
    """The LUN's stable link in the guest."""
    return link_path(user.iqn, user.lun) if user else TargetSpec(port=0).link


def plan_for(args: argparse.Namespace, src: LunSource, *options: str, **kw: object) -> Callable[[int], ProofPlan]:
    """The guest's plan once the port is known: the source's target, the admin's fstab line (or the
    by-iscsi line with OPTIONS), and the flags."""
    entry = parse_fstab_line(args.fstab_line, link(src.user)) if args.fstab_line else None
    options = options or inits.image_init(args.init).fstab_options

    def plan(port: int) -> ProofPlan:
        target = src.target(port)
        fstab = (FstabSpec(entry.source, entry.target, entry.fstype, entry.options, entry.freq, entry.passno)
                 if entry else FstabSpec.by_iscsi(target, *options))
        return ProofPlan(target, fstab, init=args.init, attach=args.attach or "", **kw)  # type: ignore[arg-type]
    return plan


def default_name(init: str, args: argparse.Namespace, control: bool) -> str:
    """The built-in LUN file's name: per init, per filesystem type (an xfs run never meets the ext4 file)."""
    fstype = parse_fstab_line(args.fstab_line, link(None)).fstype if args.fstab_line and not (
        args.url or args.config) else "ext4"
    return f"reboot-{init}{'-control' if control else ''}{'' if fstype == 'ext4' else '-' + fstype}.img"

