"""`bootkit vm ...`: check the host (doctor), fetch the guest kernel (fetch), run a command in a guest."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vm import harness, image_cli  # image_cli: `image` and `boot`, Debian guest images
from vm.initramfs import InitramfsError, busybox_path, ensure_initramfs
from vm.kernel import KernelFetchError, cache_root, cached_kernels, fetch
from vm.qemu import qemu_binary
from vm.scenarios import cli as proof_cli  # reboot-test, power-cut-test, target-down-test (the proof)

EXIT_TIMEOUT = image_cli.EXIT_TIMEOUT  # 124, as timeout(1)
EXIT_HARNESS = image_cli.EXIT_HARNESS  # 125: the guest could not be booted, or died before the command ended

EPILOG = """examples:
  bootkit vm doctor                      what is present, what is missing, and how to get it
  bootkit vm fetch                       download and unpack Debian's kernel into the cache (idempotent)
  bootkit vm run -- uname -a             boot a guest, run the command, exit with its status
  bootkit vm run --net --disk d.img -- sh -c 'mkfs.ext4 -q /dev/vda && echo ok > /results/ok'
  bootkit vm run --results out/ --timeout 60 -- bootkit fstab -N
  bootkit vm image -o build/guest.img    a Debian 12 + systemd root disk with this checkout's .deb
  bootkit vm boot build/guest.img -- systemctl status uiscsid

`run` boots this host's root read-only (tmpfs overlay), so host programs and this venv are there;
`image` and `boot` make and boot a real Debian guest instead (its own init, the project from its .deb).
/results in the guest is the --results dir on the host; disks are /dev/vda, /dev/vdb...; with --net a host
service on 127.0.0.1:PORT is at 10.0.2.2:PORT. Exit status: the command's, 124 on timeout, 125 when the
guest could not run it.
"""


def _progress(msg: str) -> None:
    print(f"bootkit vm: {msg}", file=sys.stderr, flush=True)


def _probe_kvm(seconds: float) -> str:
    """Boot the cached kernel under KVM with no root: it must panic and exit. Here /dev/kvm hangs instead."""
    qemu = qemu_binary()
    kernels = cached_kernels()
    if qemu is None or not Path("/dev/kvm").exists():
        return "absent"
    if not kernels:
        return "not probed: no kernel cached yet"
    args = [qemu, "-accel", "kvm", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-kernel", str(kernels[-1].vmlinuz), "-append", "console=ttyS0 panic=-1"]
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=seconds,
                              check=False)
    except subprocess.TimeoutExpired:
        return f"hangs (no exit in {seconds:g} s): the harness uses TCG"
    if b"Kernel panic" in proc.stdout:
        return "works (the harness still uses TCG)"
    return f"fails (exit {proc.returncode}): the harness uses TCG"


def cmd_doctor(args: argparse.Namespace) -> int:
    checks: list[dict[str, object]] = []

    def add(name: str, ok: bool, detail: str, required: bool = True) -> None:
        checks.append({"check": name, "ok": ok, "required": required, "detail": detail})

    qemu = qemu_binary()
    add("qemu", qemu is not None, qemu or "qemu-system-x86_64 missing: apt-get install qemu-system-x86")
    try:
        add("busybox", True, f"{busybox_path()} (static)")
    except InitramfsError as exc:
        add("busybox", False, str(exc))
    for tool, pkg in (("apt-get", "apt"), ("dpkg", "dpkg"), ("depmod", "kmod")):
        found = shutil.which(tool)
        add(tool, found is not None, found or f"{tool} missing: install {pkg}")
    kernels = cached_kernels()
    add("kernel cache", bool(kernels), f"{kernels[-1].release} in {kernels[-1].root.parent}" if kernels
        else f"empty ({cache_root()}): run `bootkit vm fetch`")
    if kernels:
        try:
            add("initramfs", True, str(ensure_initramfs(kernels[-1])))
        except (InitramfsError, OSError) as exc:
            add("initramfs", False, str(exc))
    # only `bootkit vm image` (Debian guests) and `make deb` need these
    for tool, pkg in (("mmdebstrap", "mmdebstrap"), ("dpkg-buildpackage", "dpkg-dev"), ("dh", "debhelper")):
        found = shutil.which(tool)
        add(pkg, found is not None, found or f"{tool} missing (for Debian guest images): install {pkg}",
            required=False)
    if args.kvm:
        add("kvm", True, _probe_kvm(10.0), required=False)
    else:
        add("kvm", True, "not probed (the harness always uses -accel tcg; --kvm to probe)", required=False)
    ok = all(c["ok"] for c in checks if c["required"])
    if args.json:
        print(json.dumps({"ok": ok, "checks": checks}, indent=2))
    else:
        for c in checks:
            print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']:<13} {c['detail']}")
    return 0 if ok else 1


def cmd_fetch(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        tree = fetch(progress=_progress, force=args.force)
        initrd = ensure_initramfs(tree)
    except (KernelFetchError, InitramfsError, OSError) as exc:
        print(f"bootkit vm fetch: {exc}", file=sys.stderr)
        return 1
    info = {"package": tree.package, "release": tree.release, "vmlinuz": str(tree.vmlinuz),
            "modules": str(tree.modules_dir), "initramfs": str(initrd),
            "seconds": round(time.monotonic() - t0, 2)}
    print(json.dumps(info, indent=2) if args.json else f"{tree.release}: {tree.vmlinuz}\ninitramfs: {initrd}")
    return 0


def _pairs(option: str, pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} {pair!r}: expected LEFT=RIGHT")
        out[key] = value
    return out


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command and args.script is None:
        print("bootkit vm run: give a command after -- or --script FILE", file=sys.stderr)
        return 2
    try:
        script = Path(args.script).read_text() if args.script else None
        result = harness.run_guest(
            None if script is not None else command, script=script, disks=args.disk, net=args.net,
            rc_dir=args.rc_dir, env=_pairs("--env", args.env),
            shares=_pairs("--share", args.share), results_dir=args.results, timeout=args.timeout,
            mem=args.mem, cpus=args.cpus, stream=sys.stderr if args.json else sys.stdout,
            kernel_quiet=not args.kernel_log)
    except (harness.GuestError, ValueError, OSError) as exc:
        print(f"bootkit vm run: {exc}", file=sys.stderr)
        return EXIT_HARNESS
    return image_cli.report(result, args.json)


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Boot a QEMU (TCG) guest that runs this project "
                                "from the host's root, for every kernel-side test.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = sub.add_parser("doctor", help="check qemu, busybox, the kernel cache; explain what is missing")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--kvm", action="store_true", help="also probe KVM (10 s timeout; it hangs on some hosts)")
    d.set_defaults(func=cmd_doctor)
    f = sub.add_parser("fetch", help="download and unpack the guest kernel, build the initramfs")
    f.add_argument("--force", action="store_true", help="download again even when cached")
    f.add_argument("--json", action="store_true", help="machine-readable output")
    f.set_defaults(func=cmd_fetch)
    r = sub.add_parser("run", help="boot a guest, run CMD, exit with its status",
                       description="Boot a guest and run CMD as root; the console streams to stdout.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--mem", type=int, default=1024, help="guest RAM in MiB (default 1024)")
    r.add_argument("--cpus", type=int, default=2, help="guest CPUs (default 2)")
    r.add_argument("--disk", action="append", default=[], metavar="FILE",
                   help="attach FILE as the next virtio disk (/dev/vda, /dev/vdb, ...); repeatable")
    r.add_argument("--net", action="store_true", help="user networking: host 127.0.0.1:P is 10.0.2.2:P")
    r.add_argument("--timeout", type=float, default=300.0, help="hard limit in seconds (default 300)")
    r.add_argument("--results", metavar="DIR", help="host dir shown as /results (default: a new temp dir)")
    r.add_argument("--rc-dir", metavar="DIR", help="run DIR/rc before CMD and DIR/rc.shutdown after it")
    r.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="guest env; repeatable")
    r.add_argument("--share", action="append", default=[], metavar="GUESTPATH=HOSTDIR",
                   help="export HOSTDIR read-write at GUESTPATH in the guest; repeatable")
    r.add_argument("--script", metavar="FILE", help="run this script instead of CMD")
    r.add_argument("--kernel-log", action="store_true", help="do not pass 'quiet' to the kernel")
    r.add_argument("--json", action="store_true", help="console to stderr, a JSON summary to stdout")
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    r.set_defaults(func=cmd_run)
    proof_cli.add_parsers(sub)  # the proof's three subcommands live in vm/scenarios/cli.py
    image_cli.add_parsers(sub)  # Debian guest images: vm/image_cli.py
    return p


def main(argv: list[str]) -> int:
    parser = build_parser(f"bootkit {argv[0]}")
    args = parser.parse_args(argv[1:])
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"bootkit vm: {exc} (run with --debug for a traceback)", file=sys.stderr)
        return EXIT_HARNESS
