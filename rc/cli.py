"""`bootkit rc render` and `bootkit rc install`: write the boot/shutdown ordering for one init system."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from rc import render as r

EPILOG = """\
what is written (paths relative to -o DIR or --root DIR):
  systemd   etc/systemd/system/uiscsid.service (Type=notify, '@' argv[0] through `bootkit shim run`),
            uiscsi-reload.service (oneshot `uiscsictl reload --wait`), and for each network fstab
            entry a MOUNT.mount.d/50-uiscsi.conf ordering it after the reload; install also adds the
            remote-fs.target.wants links
  sysvinit  etc/init.d/uiscsid (LSB): start = daemon under the shim, reload, fsck -N -p, mount -a -N;
            stop = umount -a -N, then the daemon
  busybox   etc/rc, etc/rc.shutdown and etc/inittab, in OpenBSD's order; every step prints
            `rc: EPOCH.MS step NAME begin` and `... end rc=N` on the console and into the log
  openbsd   etc/rc.d/iscsid, etc/fstab.net, etc/rc.conf.local.iscsid and notes on /etc/rc's order

settings (--set KEY=VALUE, repeatable):
{settings}

examples:
  bootkit rc render --init systemd --fstab /etc/fstab -o /tmp/units
  bootkit rc render --init busybox --set network='ip link set eth0 up' \\
      --set services_start='/etc/rc.local' -o out
  bootkit rc render --init busybox --no-shim -o control        # the negative control of the reboot proof
  bootkit rc install --init sysvinit --root /tmp/image
"""


def _settings_help() -> str:
    d = r.Settings().resolved()
    return "\n".join(f"  {f.name:<19} {r.HELP[f.name]} (default {getattr(d, f.name)!r})"
                     for f in dataclasses.fields(r.Settings))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bootkit rc", description="Render the boot and shutdown ordering "
                                "(daemon, logins, fsck -N, mount -a -N, and back) for one init system.",
                                epilog=EPILOG.format(settings=_settings_help()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, metavar="{render,install}")
    for name, text in (("render", "write the files under -o DIR"),
                       ("install", "write them DESTDIR-style under --root (default /) and enable them")):
        s = sub.add_parser(name, help=text, description=text, epilog=p.epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_argument("--init", required=True, choices=r.INIT_SYSTEMS)
        s.add_argument("--fstab", metavar="F", help="the fstab the scripts use and the renderer reads "
                       f"(default {r.Settings.fstab})")
        s.add_argument("--config", metavar="C",
                       help=f"uiscsi.conf for `uiscsictl reload` (default {r.Settings.config})")
        s.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                       help="any setting listed below")
        s.add_argument("--no-shim", action="store_true", help="same as --set shim=false")
        s.add_argument("--json", action="store_true", help="print {init, files, links} as JSON on stdout")
        s.add_argument("--debug", action="store_true", help="show a traceback on errors")
        if name == "render":
            s.add_argument("-o", dest="out", required=True, metavar="DIR", help="output directory")
        else:
            s.add_argument("--root", default="/", metavar="DIR", help="install under DIR (default /)")
    return p


def settings_from(args: argparse.Namespace) -> r.Settings:
    s = r.Settings()
    for a in args.assignments:
        s = r.parse_setting(s, a)
    if args.fstab:
        s = dataclasses.replace(s, fstab=args.fstab)
    if args.config:
        s = dataclasses.replace(s, config=args.config)
    if args.no_shim:
        s = dataclasses.replace(s, shim=False)
    return s


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    entries = None
    if args.init in ("systemd", "openbsd"):
        entries, errors = r.load_net_entries(settings.fstab, args.init)
        for err in errors:
            sys.stderr.write(f"{err}\n")
    rendered = r.render(args.init, settings, entries)
    install = args.action == "install"
    written = r.write(rendered, args.root if install else args.out, links=install)
    if args.json:
        print(json.dumps({"init": args.init, "files": [str(p) for p in written],
                          "links": sorted(rendered.links) if install else []}))
    else:
        for path in written:
            print(path)
    return 0


def main(argv: list[str]) -> int:
    """Entry point from bootkit/cli.py: argv[0] == "rc"."""
    args = build_parser().parse_args(argv[1:])
    try:
        return run(args)
    except (r.RenderError, OSError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"bootkit rc: {exc}\n")
        return 1
