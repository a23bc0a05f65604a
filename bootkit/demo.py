"""`make demo`: a real tgtd on loopback, and the userland initiator at work on it, narrated.

Part 1 runs the real `uiscsictl` tools (as a user would type them) against a tgtd with a 64 MiB LUN on
/dev/shm: discovery, inquiry, capacity, a copy verified by sha256 on both sides, and a short perf run
beside libiscsi's iscsi-perf on the same LUN (well under a minute). Part 2 is the boot/shutdown proof in
QEMU guests (`vm.proof.demo`): with the busybox rc, two reboot cycles with the shim and the no-shim
control; then on systemd (a Debian 12 guest with the .deb), a reboot with a filesystem busy through the
shutdown and its ioctl-attach control; each ends with a results table (about 5 minutes on an idle host).
It removes what it made.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LUN_MB = 64
COPY_MB = 32
PERF_SECONDS = 3
NEEDS = ("tgtd", "tgtadm", "iscsi-perf")


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"== {text}")


def uiscsictl(*args: str, show: bool = True) -> str:
    """Run the real CLI; echo the command line and its output."""
    if show:
        say("$ uiscsictl " + " ".join(shlex.quote(a) for a in args))
    r = subprocess.run([sys.executable, "-m", "initiator.ctl", *args], capture_output=True, text=True,
                       timeout=120, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"uiscsictl {args[0]} failed: {r.stderr.strip()}")
    if show:
        say(r.stdout.rstrip())
    return r.stdout


def iscsi_perf(url: str, block_size: int, qd: int, random: bool, seconds: int) -> float:
    """libiscsi's iscsi-perf on the same LUN; returns its average IOPS."""
    cmd = ["iscsi-perf", "-b", str(block_size // 512), "-m", str(qd), "-t", str(seconds)]
    cmd += ["-r"] if random else []
    r = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 30, check=False)
    m = re.findall(r"iops average (\d+)", r.stdout.replace("\r", "\n"))
    if not m:
        raise RuntimeError(f"iscsi-perf printed no result: {r.stdout[-200:]} {r.stderr[-200:]}")
    return float(m[-1])


def sha256_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bootkit.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--perf-seconds", type=int, default=PERF_SECONDS, metavar="S",
                        help=f"length of each perf run (default {PERF_SECONDS})")
    parser.add_argument("--no-vm", action="store_true",
                        help="stop after the initiator part: skip the QEMU boot/shutdown proofs (about 5 minutes)")
    parser.add_argument("--no-systemd", action="store_true",
                        help="tell the busybox proof only, not the systemd one (about 2 minutes less)")
    opts = parser.parse_args(argv)
    seconds = max(1, opts.perf_seconds)
    missing = [tool for tool in NEEDS if shutil.which(tool) is None]
    if missing:
        sys.stderr.write(f"demo: {', '.join(missing)} not installed; `make demo` installs them\n")
        return 1
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from vm.targets import Tgt  # the same target launcher the test-suite uses

    workdir = Path(tempfile.mkdtemp(prefix="bootkit-demo-", dir="/dev/shm"))
    started = time.monotonic()
    target = None
    try:
        heading(f"starting tgtd on 127.0.0.1 with a {LUN_MB} MiB LUN on /dev/shm")
        target = Tgt.start_retrying(workdir=workdir, size_mb=LUN_MB, iqn="iqn.2026-11.demo.bootkit:disk")
        url = target.url(1)
        say(f"tgtd -C {target.control} listening on 127.0.0.1:{target.port}; target {target.iqn}, disk LUN 1")
        say(f"URL (libiscsi form, works with qemu-img too): {url}")

        heading("discovery (SendTargets)")
        uiscsictl("discover", f"127.0.0.1:{target.port}")

        heading("what is on LUN 1 (INQUIRY and VPD pages)")
        uiscsictl("inquiry", url)

        heading("how big is it (READ CAPACITY)")
        uiscsictl("capacity", url)
        uiscsictl("capacity", "--json", url)

        heading(f"copy {COPY_MB} MiB of random data in, then the whole LUN back out")
        src, back = workdir / "source.img", workdir / "back.img"
        src.write_bytes(os.urandom(COPY_MB << 20))
        uiscsictl("cp", str(src), url)
        uiscsictl("cp", url, str(back))
        size = COPY_MB << 20
        sums = {"source file": sha256_file(src, size), "tgtd's backing file": sha256_file(target.backing[0], size),
                "copied back": sha256_file(back, size)}
        for name, digest in sums.items():
            say(f"  sha256 of the first {COPY_MB} MiB, {name:20} {digest}")
        if len(set(sums.values())) != 1:
            raise RuntimeError("the copies differ")
        say("  all three agree")

        heading(f"performance beside libiscsi's iscsi-perf, {seconds} s each, same LUN")
        rows = []
        for label, bs, qd, rnd in (("sequential 1 MiB reads, QD16", 1 << 20, 16, False),
                                   ("random 4 KiB reads, QD32", 4096, 32, True)):
            args = ["perf", url, "--block-size", str(bs), "--queue-depth", str(qd), "--seconds",
                    str(seconds), "--json"] + (["--random"] if rnd else [])
            ours = json.loads(uiscsictl(*args, show=False))["iops"]
            theirs = iscsi_perf(url, bs, qd, rnd, seconds)
            rows.append((label, ours, theirs, bs))
        say(f"  {'workload':32} {'uiscsictl':>16} {'iscsi-perf':>16} {'ratio':>6}")
        for label, ours, theirs, bs in rows:
            say(f"  {label:32} {_rate(ours, bs):>16} {_rate(theirs, bs):>16} {ours / theirs:6.2f}")
        say("  (one short run each on a shared machine: bench/ alternates runs and reports medians)")

        heading("stopping tgtd")
        target.stop()
        target = None
        say(f"initiator part done in {time.monotonic() - started:.0f} s")
        if opts.no_vm:
            return 0
        from vm.proof import demo as boot_proof  # the QEMU part: imported only when it runs

        say()
        rc = boot_proof(systemd=not opts.no_systemd)
        say(f"\ndemo done in {time.monotonic() - started:.0f} s")
        return rc
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        sys.stderr.write(f"demo: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("demo: interrupted; stopping tgtd and cleaning up\n")
        return 130
    finally:
        if target is not None:
            target.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _rate(iops: float, block_size: int) -> str:
    if block_size >= 1 << 20:
        return f"{iops * block_size / (1 << 20):,.0f} MB/s"
    return f"{iops:,.0f} IOPS"


if __name__ == "__main__":
    sys.exit(main())
