"""`bootkit vm image` and `bootkit vm boot`: build a Debian guest image with this checkout's package
installed, and boot one. vm/cli.py adds them with `add_parsers(sub)`; each handler returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vm import image as base_image
from vm.deb import DebBuildError, ensure_deb
from vm.guest_image import make_image
from vm.harness import GuestError, GuestResult
from vm.image_boot import AFTER, run_image

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_HARNESS = 125  # the guest could not be booted, or it died before the command ended

IMAGE_EPILOG = """examples:
  bootkit vm image -o build/guest.img                      systemd guest with `make deb`'s package
  bootkit vm image --variant sysvinit -o build/sysv.img    Debian's sysvinit and initscripts instead
  bootkit vm image --no-deb --file /etc/motd=motd.txt -o plain.img

The first build of a variant runs mmdebstrap (about a minute; Debian's mirror must be reachable) and
caches the root under ~/.cache/iscsi-bootkit/images, keyed by its package list; later builds copy it,
install the package with apt in a chroot and write the image with mke2fs -d (about 10 s).
"""

BOOT_EPILOG = """examples:
  bootkit vm boot build/guest.img -- systemctl --failed
  bootkit vm boot build/guest.img --net --after none -- systemctl reboot     # one shutdown, then exit
  bootkit vm boot build/guest.img --timeout 120                              # boot only, no command

The image is /dev/vda and keeps what the guest writes, so boots in a row are a reboot cycle. Exit
status: the command's, 124 on timeout, 125 when the guest could not run it.
"""


def _progress(msg: str) -> None:
    print(f"bootkit vm: {msg}", file=sys.stderr, flush=True)


def _files(pairs: list[str]) -> dict[str, bytes]:
    out = {}
    for pair in pairs:
        guest, sep, host = pair.partition("=")
        if not sep or not guest.startswith("/"):
            raise ValueError(f"--file {pair!r}: expected /GUEST/PATH=HOSTFILE")
        out[guest] = Path(host).read_bytes()
    return out


def cmd_image(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        debs = [Path(args.deb)] if args.deb else ([] if args.no_deb else [ensure_deb(progress=_progress)])
        img = make_image(args.output, args.variant, debs=debs, files=_files(args.file), dirs=args.dir,
                         enable_units=args.enable, progress=_progress)
    except (base_image.ImageError, DebBuildError, ValueError, OSError) as exc:
        print(f"bootkit vm image: {exc}", file=sys.stderr)
        return 1
    info = {"image": str(img.path), "variant": img.variant, "init": img.init, "kernel": img.kernel_release,
            "debs": [str(d) for d in debs], "timings": img.timings, "seconds": round(time.monotonic() - t0, 1)}
    print(json.dumps(info, indent=2) if args.json else f"{img.path} ({img.variant}, {info['seconds']} s)")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    command = list(args.command)
    shares = {}
    for pair in args.share:
        guest, sep, host = pair.partition("=")
        if not sep:
            print(f"bootkit vm boot: --share {pair!r}: expected GUESTPATH=HOSTDIR", file=sys.stderr)
            return 2
        shares[guest] = host
    try:
        result = run_image(args.image, command or None, after=args.after, init=args.init, net=args.net,
                           shares=shares, results_dir=args.results, timeout=args.timeout, mem=args.mem,
                           stream=sys.stderr if args.json else sys.stdout,
                           journal_to_console=args.journal, kernel_quiet=not args.kernel_log)
    except (GuestError, ValueError, OSError) as exc:
        print(f"bootkit vm boot: {exc}", file=sys.stderr)
        return EXIT_HARNESS
    return report(result, args.json, has_command=bool(command))


def report(result: GuestResult, as_json: bool, has_command: bool = True) -> int:
    """Print a boot's outcome (JSON, or one progress line) and return the exit status of `vm run|boot`."""
    if as_json:
        print(json.dumps(result.summary(), indent=2))
    else:
        _progress(f"{result.duration:.1f} s, results in {result.results_dir}"
                  + (f", {result.error}" if result.error else ""))
    if result.timed_out:
        return EXIT_TIMEOUT
    if not has_command:
        return 0 if result.error is None else EXIT_HARNESS
    return EXIT_HARNESS if result.exit_code is None else result.exit_code


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    i = sub.add_parser("image", help="build a Debian guest root disk with this checkout's .deb installed",
                       description="Build a raw ext4 Debian 12 root (mmdebstrap, cached) with the package "
                       "installed by apt, as an admin installs it.", epilog=IMAGE_EPILOG, formatter_class=fmt)
    i.add_argument("-o", "--output", required=True, metavar="IMG", help="the image file to write")
    i.add_argument("--variant", choices=("systemd", "sysvinit"), default="systemd",
                   help="PID 1: systemd-sysv (default) or sysvinit-core with Debian's initscripts")
    i.add_argument("--deb", metavar="FILE", help="install this .deb (default: build this checkout's)")
    i.add_argument("--no-deb", action="store_true", help="install no package")
    i.add_argument("--file", action="append", default=[], metavar="/GUEST=HOST",
                   help="copy HOST into the image at /GUEST; repeatable")
    i.add_argument("--dir", action="append", default=[], metavar="/GUEST",
                   help="create a directory (a mount point for --share at boot); repeatable")
    i.add_argument("--enable", action="append", default=[], metavar="UNIT",
                   help="enable a unit (systemd) or init script (sysvinit); repeatable")
    i.add_argument("--json", action="store_true", help="print the path, variant and timings as JSON")
    i.set_defaults(func=cmd_image)
    b = sub.add_parser("boot", help="boot a Debian guest image and run CMD once it is up",
                       description="Boot IMG with its own init; run CMD after multi-user (or runlevel 2).",
                       epilog=BOOT_EPILOG, formatter_class=fmt)
    b.add_argument("image", metavar="IMG")
    b.add_argument("--net", action="store_true", help="user networking: host 127.0.0.1:P is 10.0.2.2:P")
    b.add_argument("--after", choices=AFTER, default="poweroff", help="once CMD ends (default poweroff)")
    b.add_argument("--init", metavar="PATH", help="boot another init (default: the image's own)")
    b.add_argument("--share", action="append", default=[], metavar="GUESTPATH=HOSTDIR",
                   help="export HOSTDIR read-write at GUESTPATH (the mount point must be in the image)")
    b.add_argument("--results", metavar="DIR", help="host dir shown as /results (default: a new temp dir)")
    b.add_argument("--timeout", type=float, default=300.0, help="hard limit in seconds (default 300)")
    b.add_argument("--mem", type=int, default=1024, help="guest RAM in MiB (default 1024)")
    b.add_argument("--journal", action="store_true", help="forward the journal to the console")
    b.add_argument("--kernel-log", action="store_true", help="do not pass 'quiet' to the kernel")
    b.add_argument("--json", action="store_true", help="console to stderr, a JSON summary to stdout")
    b.add_argument("command", nargs="*", metavar="-- CMD", help="the command and its arguments, after --")
    b.set_defaults(func=cmd_boot)
