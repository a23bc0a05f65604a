"""Scale: uiscsid with 1, 8, 32 and 64 LUNs of one target, in one QEMU guest boot (issue 15).

The host starts one tgtd target with as many disk LUNs as the largest size (sparse files on /dev/shm). One
guest (TCG, the host's root read-only, vm/harness.py) loads nbd with enough devices, runs systemd-udevd
with the package's rendered 61-uiscsi.rules and one uiscsid, as an installed host does. For each size N in
turn (bench/guest/scale.py) it measures:

- ``attach_seconds``: from `uiscsictl reload` of a uiscsi.conf naming LUNs 1..N until every
  /dev/disk/by-iscsi/<iqn>-lun<i> link (made by udev) is there;
- ``rss_mib``: uiscsid's resident memory (VmRSS) with the N LUNs attached;
- ``show_ms``: the daemon's answer time to the request `uiscsictl show --json` sends (median of 7 on one
  control connection; ``show_command_ms`` is the whole command once, Python's start-up under TCG included).

A reload naming no target detaches everything before the next size. Growth should be roughly linear: the
table gives each figure's growth per doubling of the LUN count (a step from 1 to 8 LUNs is three doublings)
and flags any over 2.2x. TCG makes absolute times slow; the growth is the figure to read.

Usage (from the repository root; one boot, about 3-6 minutes):
    .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --json > scale.json      # a list of rows
    .venv/bin/python bench/scale.py --sizes 1 8 --console     # a quick look, the guest's console on stderr
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GUEST_SCRIPT = HERE / "guest" / "scale.py"
SIZES = (1, 8, 32, 64)
STEP_BAR = 2.2          # issue 15: no step over 2.2x per doubling of the LUN count
FIGURES = ("attach_seconds", "rss_mib", "show_ms")
NEEDS = ("tgtd", "tgtadm", "qemu-system-x86_64")

sys.path[:0] = [str(ROOT)]


def say(msg: str) -> None:
    print(f"scale: {msg}", file=sys.stderr, flush=True)


def per_doubling(rows: list[dict]) -> list[dict]:
    """For each step between consecutive sizes: each figure's growth factor per doubling of the LUN count."""
    steps = []
    for a, b in itertools.pairwise(rows):
        doublings = math.log2(b["luns"] / a["luns"])
        step = {"from": a["luns"], "to": b["luns"]}
        for k in FIGURES:
            step[k] = round((b[k] / a[k]) ** (1 / doublings), 2) if a[k] > 0 and doublings > 0 else None
        steps.append(step)
    return steps


def table(rows: list[dict], meta: dict) -> str:
    lines = [f"{'LUNs':>5} {'attach s':>9} {'RSS MiB':>8} {'show ms':>8} {'show command ms':>16}"]
    for r in rows:
        lines.append(f"{r['luns']:>5} {r['attach_seconds']:>9.2f} {r['rss_mib']:>8.1f} {r['show_ms']:>8.2f} "
                     f"{r.get('show_command_ms', 0):>16.0f}")
    lines.append("")
    lines.append(f"growth per doubling of the LUN count (bar: none over {STEP_BAR}x)")
    for s in per_doubling(rows):
        over = [k for k in FIGURES if s[k] is not None and s[k] > STEP_BAR]
        figs = "  ".join(f"{k} {s[k]:.2f}x" if s[k] is not None else f"{k} -" for k in FIGURES)
        lines.append(f"  {s['from']:>2} -> {s['to']:>2}: {figs}" + (f"  OVER: {', '.join(over)}" if over else ""))
    lines.append(f"one TCG guest ({meta['guest_cpus']} vCPUs), {meta['guest_seconds']:.0f} s; load average "
                 f"{meta['loadavg_before'][0]} before, {meta['loadavg_after'][0]} after, {os.cpu_count()} CPUs; "
                 f"{meta['date']}.")
    return "\n".join(lines)


def run(args: argparse.Namespace, results: Path) -> tuple[list[dict], dict]:
    from vm.harness import GuestError, run_guest
    from vm.targets import Tgt

    workdir = Path(tempfile.mkdtemp(prefix="scale-", dir="/dev/shm"))
    target = None
    try:
        say(f"starting tgtd with {max(args.sizes)} LUNs of {args.lun_mb} MiB (sparse, on /dev/shm)")
        target = Tgt.start_retrying(workdir=workdir, size_mb=args.lun_mb, luns=max(args.sizes))
        load_before = os.getloadavg()
        say(f"booting the guest (TCG); sizes {' '.join(map(str, args.sizes))}")
        try:
            g = run_guest(script=GUEST_SCRIPT.read_text(), net=True, results_dir=results, timeout=args.timeout,
                          env={"SC_PORT": str(target.port), "SC_IQN": target.iqn,
                               "SC_SIZES": " ".join(map(str, args.sizes))},
                          cpus=args.cpus, mem=1536, stream=sys.stderr if args.console else None)
        except GuestError as e:
            raise RuntimeError(str(e)) from None
        load_after = os.getloadavg()
    finally:
        if target is not None:
            target.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if (results / "failed").exists():
        raise RuntimeError(f"guest: {(results / 'failed').read_text().strip()} (logs in {results})")
    if g.exit_code != 0:
        tail = "\n".join(ln.text for ln in g.lines[-25:])
        raise RuntimeError(f"guest run failed ({g.error or g.exit_code}); logs in {results}\n{tail}")
    rows = json.loads((results / "rows.json").read_text())
    meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "guest_cpus": args.cpus,
            "guest_seconds": round(g.duration, 1), "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after]}
    return rows, meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scale", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  .venv/bin/python bench/scale.py\n  .venv/bin/python bench/scale.py --json\n"
               "\n--json prints a list of rows {luns, attach_seconds, rss_mib, show_ms, show_command_ms}.\n"
               "exit status: 0 when every size was measured (whatever the growth), 1 on any failure.")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N",
                   help=f"LUN counts, measured in this order in one boot (default {' '.join(map(str, SIZES))})")
    p.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default 2, as the harness)")
    p.add_argument("--lun-mb", type=int, default=16, help="size of each LUN (sparse; default 16)")
    p.add_argument("--timeout", type=float, default=1200, help="bound on the guest run, seconds (default 1200)")
    p.add_argument("--results", metavar="DIR", help="keep the guest's outputs (rows, daemon and udev logs) in DIR")
    p.add_argument("--console", action="store_true", help="stream the guest's console to stderr")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.sizes) or args.sizes != sorted(set(args.sizes)):
        p.error("--sizes must be increasing LUN counts of at least 1")
    if max(args.sizes) > 255:
        p.error("--sizes: at most 255 LUNs")
    missing = [t for t in NEEDS if shutil.which(t) is None]
    if missing:
        say(f"missing {', '.join(missing)} (run ./scripts/bootstrap.sh)")
        return 1
    keep = args.results is not None
    results = Path(args.results) if keep else Path(tempfile.mkdtemp(prefix="scale-results-"))
    results.mkdir(parents=True, exist_ok=True)
    for stale in ("rows.json", "failed"):
        (results / stale).unlink(missing_ok=True)
    start = time.monotonic()
    try:
        rows, meta = run(args, results)
    except RuntimeError as e:
        say(str(e))
        return 1
    if not keep:
        shutil.rmtree(results, ignore_errors=True)
    say(f"done in {time.monotonic() - start:.0f} s")
    print(json.dumps(rows, indent=2) if args.json else table(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
