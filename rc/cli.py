"""`bootkit rc render|install|uninstall`: write (or take away) the boot/shutdown ordering for one init system."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rc import render as r

EPILOG = """\
what is written (paths relative to -o DIR or --root DIR):
  systemd   etc/systemd/system/uiscsid.service (Type=notify, '@' argv[0] through `bootkit shim run`
            unless --no-shim), uiscsi-reload.service (oneshot `uiscsictl reload --wait`),
            uiscsi-logout.service (its stop at shutdown: `uiscsictl detach --unused`), and for each
            network fstab entry a MOUNT.mount.d/50-uiscsi.conf ordering it after the reload; install
            also adds the remote-fs.target.wants links; and the udev rule below
  sysvinit  etc/init.d/uiscsid (LSB): start = daemon under the shim, reload, fsck -N -p, mount -a -N;
            stop = umount -a -N, then the daemon; and the udev rule below
  (udev)    etc/udev/rules.d/61-uiscsi.rules: /dev/disk/by-iscsi/<iqn>-lun<N> made by udev from what
            uiscsid writes under /run/uiscsid/udev, so systemd sees the names as device units
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
  bootkit rc install --init systemd && systemctl daemon-reload && udevadm control --reload
  bootkit rc uninstall --init systemd      # removes what install wrote; /etc/uiscsi.conf and fstab stay

The programs default to this installation's (a venv's bin, /usr/bin from the Debian package); the
Debian package ships these files already rendered, enabled, with the units under /lib/systemd/system.
uninstall deletes only files that carry the "Rendered by `bootkit rc render" line and that no Debian
package owns.
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
    sub = p.add_subparsers(dest="action", required=True, metavar="{render,install,uninstall}")
    for name, text in (("render", "write the files under -o DIR"),
                       ("install", "write them DESTDIR-style under --root (default /) and enable them"),
                       ("uninstall", "disable them, remove what install wrote under --root (default /)")):
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
            s.add_argument("--root", default="/", metavar="DIR", help=f"{name} under DIR (default /)")
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


def package_owner(root: str) -> Callable[[Path], str | None]:
    """A `keep` check for r.remove(): the Debian package that owns a path under root, as a reason."""
    admindir = Path(root) / "var/lib/dpkg"
    if shutil.which("dpkg-query") is None or not admindir.is_dir():
        return lambda _path: None

    def owner(path: Path) -> str | None:
        name = "/" + str(path.relative_to(root))
        res = subprocess.run(["dpkg-query", f"--admindir={admindir}", "-S", name], capture_output=True,
                             text=True, timeout=60, check=False)
        if res.returncode != 0:
            return None
        return f"owned by the Debian package {res.stdout.split(':', 1)[0]} (apt remove it instead)"

    return owner


def uninstall(args: argparse.Namespace, rendered: r.Rendered) -> int:
    # Drop-ins of fstab entries removed since install are ours too: find them by name, not by the fstab.
    pattern = f"{r.SYSTEMD_DIR}/*.mount.d/50-uiscsi.conf"
    dropins = Path(args.root).glob(pattern) if args.init == "systemd" else []
    extra = {str(p.relative_to(args.root)): r.RenderedFile("") for p in dropins}
    rendered = r.Rendered({**extra, **rendered.files}, rendered.links)
    removed, kept = r.remove(rendered, args.root, keep=package_owner(args.root))
    for line in kept:
        sys.stderr.write(f"bootkit rc: {line}\n")
    if args.json:
        print(json.dumps({"init": args.init, "removed": [str(p) for p in removed], "kept": kept}))
    else:
        for path in removed:
            print(f"removed {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    entries = None
    if args.init in ("systemd", "openbsd") and args.action != "uninstall":
        entries, errors = r.load_net_entries(settings.fstab, args.init)
        for err in errors:
            sys.stderr.write(f"{err}\n")
    rendered = r.render(args.init, settings, entries)
    if args.action == "uninstall":
        return uninstall(args, rendered)
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
