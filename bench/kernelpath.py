"""The kernel data path side by side: uiscsid + /dev/nbdN against open-iscsi's /dev/sdX, in one guest run.

One tgtd on the host serves one LUN from /dev/shm (filled with data). One QEMU guest (TCG, the host's root
read-only, vm/harness.py) attaches that same LUN twice: through ``uiscsid`` (configured by ``uiscsictl
reload`` from a uiscsi.conf, as users do; NBD ioctls, NBD netlink, or one daemon of each) and through
open-iscsi's kernel initiator (``iscsid`` + ``iscsiadm`` login, iscsi_tcp; Debian's stock settings,
written into the guest's tmpfs overlay). ``fio`` then runs each workload on the raw block devices, direct
I/O with libaio, ours then open-iscsi's (A B A B ...) for ``--rounds`` rounds, so load drift on this shared
machine hits both sides alike. The guest side is bench/guest/kernelpath.sh; the plan it runs comes from here.

Per workload it prints both medians, the median of the pairwise ratios ours/open-iscsi and the ratio of
the medians, and says when those two disagree. TCG slows both sides; only the ratio means something.
``--reference qemu-nbd`` adds a third side, qemu-nbd (C) serving a RAM file in the guest through the same
kernel NBD driver with no network at all: the ceiling of any NBD-based design under TCG.
The one-shot path (``uiscsictl perf``, no kernel) against libiscsi is bench/perfbench.py.

Usage (from the repository root; takes about rounds x workloads x sides x (seconds + 4) + 60 s):
    .venv/bin/python bench/kernelpath.py --rounds 3 --seconds 5
    .venv/bin/python bench/kernelpath.py --only rand-read --attach both --json > kernelpath.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GUEST_SCRIPT = HERE / "guest" / "kernelpath.sh"
THEIRS = "open-iscsi"
REFERENCE = "qemu-nbd"   # optional third side: the NBD hop alone, served by C from guest RAM
BASELINE = "baseline"   # optional side: uiscsid from another checkout (--baseline TREE), for A/B of a change
ATTACH = {"nbd": ("nbd",), "netlink": ("netlink",), "both": ("nbd", "netlink")}
BAR = 0.5               # issue 15: ours >= 0.5 x open-iscsi on every workload
DISAGREE = 0.10         # the two ratio estimates differ by more than this (relative): say so
NEEDS = ("tgtd", "tgtadm", "fio", "iscsid", "iscsiadm", "qemu-system-x86_64")

sys.path[:0] = [str(HERE), str(ROOT)]
from perfbench import WORKLOADS, Workload, _prefill  # the same six workloads: one definition


@dataclass(frozen=True)
class Run:
    """One fio run in the guest's plan."""

    id: str
    round: int
    workload: Workload
    side: str           # "nbd", "netlink" (ours), "open-iscsi" or "qemu-nbd"


def unit(w: Workload) -> str:
    return "MB/s" if w.block_size >= 1 << 20 else "IOPS"


def fio_args(w: Workload, seconds: float) -> str:
    rw = ("rand" if w.random else "") + ("write" if w.write else "read")
    return (f"--rw={rw} --bs={w.block_size} --iodepth={w.queue_depth} --ioengine=libaio --direct=1 "
            f"--runtime={seconds:g} --time_based --norandommap --randrepeat=0")


def plan(workloads: list[Workload], rounds: int, ours: tuple[str, ...], reference: bool = False,
         baseline: bool = False) -> list[Run]:
    """Per round and workload: each of our attach modes, with open-iscsi's run after the first (A B A ...),
    then the baseline checkout's uiscsid and the qemu-nbd reference when asked for. With a baseline, it and
    our first mode swap places every other round, so neither always runs first."""
    runs = []
    for rnd in range(1, rounds + 1):
        for w in workloads:
            sides = [ours[0], THEIRS, *ours[1:], *([BASELINE] if baseline else []), *([REFERENCE] if reference else [])]
            if baseline and rnd % 2 == 0:
                i = sides.index(BASELINE)
                sides[0], sides[i] = sides[i], sides[0]
            runs += [Run(f"r{rnd}-{w.name}-{side}", rnd, w, side) for side in sides]
    return runs


def fio_figure(doc: dict, w: Workload) -> float:
    """IOPS, or MB/s (2**20 bytes per second) for the 1 MiB workloads, from fio's JSON."""
    job = doc["jobs"][0]["write" if w.write else "read"]
    return job["bw_bytes"] / (1 << 20) if unit(w) == "MB/s" else job["iops"]


class Progress(threading.Thread):
    """Prints each finished run (and the guest's setup milestones) on stderr while the guest runs."""

    def __init__(self, results: Path, runs: list[Run], seconds: float) -> None:
        super().__init__(name="kernelpath-progress", daemon=True)
        self.results, self.runs, self.seconds = results, runs, seconds
        self.stop = threading.Event()

    def run(self) -> None:
        seen: set[str] = set()
        ready = False
        t0 = time.monotonic()
        while not self.stop.wait(0.5):
            if not ready and (self.results / "ready").exists():
                ready = True
                eta = len(self.runs) * (self.seconds + 4)
                say(f"guest ready after {time.monotonic() - t0:.0f} s: {len(self.runs)} fio runs, about {eta:.0f} s")
            for i, r in enumerate(self.runs, 1):
                if r.id in seen:
                    continue
                out = self.results / "runs" / f"{r.id}.json"
                if out.exists():
                    seen.add(r.id)
                    try:
                        v = f"{fio_figure(json.loads(out.read_text()), r.workload):10,.0f} {unit(r.workload)}"
                    except (ValueError, KeyError, IndexError):
                        v = "(being written)"
                    say(f"run {i}/{len(self.runs)} round {r.round} {r.workload.name:20} {r.side:10} {v}")
                elif (self.results / "runs" / f"{r.id}.err").exists():
                    seen.add(r.id)
                    say(f"run {i}/{len(self.runs)} {r.id} FAILED")


def say(msg: str) -> None:
    print(f"kernelpath: {msg}", file=sys.stderr, flush=True)


def run_guest_plan(args: argparse.Namespace, runs: list[Run], results: Path) -> dict:
    from vm.harness import GuestError, run_guest
    from vm.targets import Tgt

    ours = ATTACH[args.attach]
    (results / "plan").write_text("".join(f"{r.id} {r.side} {fio_args(r.workload, args.seconds)}\n" for r in runs))
    workdir = Path(tempfile.mkdtemp(prefix="kernelpath-", dir="/dev/shm"))
    target = None
    progress = Progress(results, runs, args.seconds)
    try:
        say(f"starting tgtd with a {args.lun_mb} MiB LUN on /dev/shm")
        target = Tgt.start(workdir=workdir, size_mb=args.lun_mb)
        _prefill(target.backing[0], args.lun_mb)
        load_before = os.getloadavg()
        say("booting the guest (TCG)")
        progress.start()
        timeout = len(runs) * (args.seconds + 20) + 300
        try:
            g = run_guest(script=GUEST_SCRIPT.read_text(), net=True, results_dir=results, timeout=timeout,
                          env={"KP_PORT": str(target.port), "KP_IQN": target.iqn, "KP_ATTACH": " ".join(ours),
                               "KP_REFERENCE": REFERENCE if args.reference else "",
                               "KP_BASELINE": str(args.baseline or "")},
                          cpus=args.cpus, stream=sys.stderr if args.console else None)
        except GuestError as e:
            raise RuntimeError(str(e)) from None
        load_after = os.getloadavg()
    finally:
        progress.stop.set()
        if target is not None:
            target.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if (results / "failed").exists():
        raise RuntimeError(f"guest setup failed: {(results / 'failed').read_text().strip()} (logs in {results})")
    if g.exit_code != 0:
        tail = "\n".join(ln.text for ln in g.lines[-25:])
        raise RuntimeError(f"guest run failed ({g.error or g.exit_code}); logs in {results}\n{tail}")
    started, ended = g.event("cmd-begin"), g.event("cmd-end")
    return {"guest_seconds": round(g.duration, 1),
            "guest_command_seconds": round(ended.t - started.t, 1) if started and ended else None,
            "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after]}


def collect(results: Path, runs: list[Run]) -> dict[str, float]:
    figures, missing = {}, []
    for r in runs:
        out = results / "runs" / f"{r.id}.json"
        try:
            figures[r.id] = fio_figure(json.loads(out.read_text()), r.workload)
        except (OSError, ValueError, KeyError, IndexError):
            err = results / "runs" / f"{r.id}.err"
            missing.append(f"{r.id}: {err.read_text().strip()[-200:] if err.exists() else 'no output'}")
    if missing:
        raise RuntimeError("fio runs failed in the guest:\n  " + "\n  ".join(missing))
    return figures


def summarise(workloads: list[Workload], runs: list[Run], figures: dict[str, float], ours: tuple[str, ...],
              rounds: int) -> list[dict]:
    """A row per attach mode and workload: both medians, the median of pairwise ratios, the ratio of medians;
    with the qemu-nbd reference in the plan, its median and its own median ratio to open-iscsi."""
    fig = {(r.round, r.workload.name, r.side): figures[r.id] for r in runs}
    reference = any(r.side == REFERENCE for r in runs)
    baseline = any(r.side == BASELINE for r in runs)
    rows = []
    for side in ours:
        for w in workloads:
            theirs = [fig[rnd, w.name, THEIRS] for rnd in range(1, rounds + 1)]
            mine = [fig[rnd, w.name, side] for rnd in range(1, rounds + 1)]
            pairs = [{"ours": round(a, 1), "open_iscsi": round(b, 1), "ratio": _ratio(a, b)}
                     for a, b in zip(mine, theirs, strict=True)]
            ratio = statistics.median(p["ratio"] for p in pairs)
            rom = _ratio(statistics.median(mine), statistics.median(theirs))
            disagree = abs(ratio - rom) > DISAGREE * max(ratio, rom) or (ratio >= BAR) != (rom >= BAR)
            row = {"workload": w.name, "label": w.label, "attach": side, "unit": unit(w),
                   "ours": round(statistics.median(mine), 1), "open_iscsi": round(statistics.median(theirs), 1),
                   "ratio": round(ratio, 3), "ratio_of_medians": rom, "disagree": disagree,
                   "meets_bar": min(ratio, rom) >= BAR, "rounds": rounds, "samples": pairs}
            if reference:
                ref = [fig[rnd, w.name, REFERENCE] for rnd in range(1, rounds + 1)]
                row["qemu_nbd"] = round(statistics.median(ref), 1)
                row["qemu_nbd_ratio"] = statistics.median(_ratio(a, b) for a, b in zip(ref, theirs, strict=True))
                for p, x in zip(pairs, ref, strict=True):
                    p["qemu_nbd"] = round(x, 1)
            if baseline:
                base = [fig[rnd, w.name, BASELINE] for rnd in range(1, rounds + 1)]
                vs = statistics.median(_ratio(a, b) for a, b in zip(mine, base, strict=True))
                vs_rom = _ratio(statistics.median(mine), statistics.median(base))
                row.update(baseline=round(statistics.median(base), 1),
                           baseline_ratio=statistics.median(_ratio(a, b) for a, b in zip(base, theirs, strict=True)),
                           vs_baseline=vs, vs_baseline_of_medians=vs_rom,
                           vs_baseline_disagree=abs(vs - vs_rom) > DISAGREE * max(vs, vs_rom))
                for p, x in zip(pairs, base, strict=True):
                    p["baseline"] = round(x, 1)
            rows.append(row)
    return rows


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def devices(results: Path) -> dict[str, dict]:
    out = {}
    for line in (results / "devices").read_text().splitlines():
        side, dev, sched, max_kb, nr_requests = line.split()
        out[side] = {"device": dev, "scheduler": sched, "max_sectors_kb": int(max_kb), "nr_requests": int(nr_requests)}
    return out


def table(doc: dict) -> str:
    ref = any("qemu_nbd" in r for r in doc["workloads"])
    base = any("baseline" in r for r in doc["workloads"])
    head = (f"{'workload':34} {'attach':8} {'ours':>13} {'open-iscsi':>13} {'ratio':>6} {'r.o.m.':>6}"
            + (f" {'qemu-nbd':>13} {'ratio':>6}" if ref else "")
            + (f" {'baseline':>13} {'ratio':>6} {'ours/base':>9} {'r.o.m.':>6}" if base else "") + "  note")
    lines = [head, "-" * len(head)]
    for r in doc["workloads"]:
        note = []
        if r["disagree"]:
            note.append("estimates disagree")
        if not r["meets_bar"]:
            note.append(f"below {BAR}")
        refcol = f" {r['qemu_nbd']:>8,.0f} {r['unit']:4} {r['qemu_nbd_ratio']:6.2f}" if ref else ""
        if base:
            refcol += (f" {r['baseline']:>8,.0f} {r['unit']:4} {r['baseline_ratio']:6.2f} {r['vs_baseline']:9.2f} "
                       f"{r['vs_baseline_of_medians']:6.2f}")
            if r["vs_baseline_disagree"]:
                note.append("ours/base estimates disagree")
        lines.append(f"{r['label']:34} {r['attach']:8} {r['ours']:>8,.0f} {r['unit']:4} {r['open_iscsi']:>8,.0f} {r['unit']:4} "
                     f"{r['ratio']:6.2f} {r['ratio_of_medians']:6.2f}{refcol}  {', '.join(note)}")
    devs = ", ".join(f"{k} {v['device']} ({v['scheduler']})" for k, v in doc["devices"].items())
    lines.append(f"ratio = median of pairwise ours/open-iscsi; r.o.m. = ratio of the medians; bar >= {BAR}.")
    if ref:
        lines.append("qemu-nbd = qemu-nbd serving a RAM file in the guest (no network): the NBD hop alone, in C; "
                     "its ratio is to open-iscsi.")
    if base:
        lines.append(f"baseline = uiscsid from {doc['baseline']} ({doc['attach'].split()[0]} attach), its ratio to "
                     "open-iscsi, then ours/baseline: median of pairwise ratios and ratio of the medians.")
    lines.append(f"{doc['rounds']} rounds x {doc['seconds']:g} s per run, fio libaio direct I/O on {devs}; "
                 f"TCG guest, {doc['guest_seconds']:.0f} s; load average {doc['loadavg_before'][0]} before, "
                 f"{doc['loadavg_after'][0]} after, {doc['cpus']} CPUs; {doc['date']}.")
    lines.append("One-shot path (uiscsictl perf, no kernel) against libiscsi: .venv/bin/python bench/perfbench.py")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    workloads = [w for w in WORKLOADS if not args.only or any(o in w.name for o in args.only)]
    if not workloads:
        raise RuntimeError(f"--only {' '.join(args.only)} matches none of: {', '.join(w.name for w in WORKLOADS)}")
    ours = ATTACH[args.attach]
    runs = plan(workloads, args.rounds, ours, args.reference, args.baseline is not None)
    keep = args.results is not None
    results = Path(args.results) if keep else Path(tempfile.mkdtemp(prefix="kernelpath-results-"))
    results.mkdir(parents=True, exist_ok=True)
    for stale in ("runs", "failed", "ready", "devices"):      # a reused --results dir
        shutil.rmtree(results / stale, ignore_errors=True) if stale == "runs" else (results / stale).unlink(True)
    meta = run_guest_plan(args, runs, results)
    figures = collect(results, runs)
    doc = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "rounds": args.rounds,
           "seconds": args.seconds, "guest_cpus": args.cpus, "reference": args.reference,
           "baseline": str(args.baseline) if args.baseline else None, "lun_mb": args.lun_mb, "attach": args.attach, "cpus": os.cpu_count(),
           **meta, "devices": devices(results), "bar": BAR,
           "workloads": summarise(workloads, runs, figures, ours, args.rounds),
           "one_shot_benchmark": "bench/perfbench.py"}
    if not keep:
        shutil.rmtree(results, ignore_errors=True)
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="kernelpath", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="workloads: " + ", ".join(w.name for w in WORKLOADS) + "\n\nexamples:\n"
               "  .venv/bin/python bench/kernelpath.py                          # 3 rounds x 5 s: about 6 minutes\n"
               "  .venv/bin/python bench/kernelpath.py --only qd1 --rounds 5 --json\n"
               "  .venv/bin/python bench/kernelpath.py --attach both --results out/   # keep fio's JSON and logs\n"
               "\nthe one-shot path (no kernel) against libiscsi: .venv/bin/python bench/perfbench.py\n"
               "exit status: 0 when every run finished (whatever the ratios), 1 on any failure.")
    p.add_argument("--rounds", type=int, default=3, help="A/B pairs per workload (default 3)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each fio run (default 5)")
    p.add_argument("--only", action="append", metavar="SUBSTRING", help="run only matching workloads (repeatable)")
    p.add_argument("--attach", choices=tuple(ATTACH), default="nbd",
                   help="how uiscsid gives the LUN to the kernel: nbd (the NBD ioctls, uiscsid's default), "
                        "netlink, or both (one daemon each, two rows per workload)")
    p.add_argument("--cpus", type=int, default=2,
                   help="guest vCPUs (default 2, as the harness). Under TCG a wake-up across vCPUs costs 0.2-10 ms "
                        "with the host's load, which weighs on uiscsid's extra process hops; 1 removes that")
    p.add_argument("--reference", action="store_true",
                   help="add qemu-nbd serving a RAM file in the guest (no network): what the NBD hop alone costs")
    p.add_argument("--baseline", type=Path, metavar="TREE",
                   help="also attach the LUN through uiscsid from another checkout (its initiator package first on "
                        "the path; not under /tmp, which the guest does not see) and report ours/baseline: "
                        "an A/B of a daemon change in one guest")
    p.add_argument("--lun-mb", type=int, default=512, help="LUN size on /dev/shm (default 512)")
    p.add_argument("--results", metavar="DIR", help="keep the guest's outputs (fio JSON, daemon logs) in DIR")
    p.add_argument("--console", action="store_true", help="stream the guest's console to stderr")
    p.add_argument("--json", action="store_true", help="print the result, samples included, as JSON")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1:
        p.error("--rounds and --seconds must be at least 1")
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "initiator" / "daemon").is_dir():
            p.error(f"--baseline {args.baseline}: not a checkout with initiator/daemon")
        if any(str(args.baseline).startswith(h + "/") for h in ("/tmp", "/run", "/dev")):
            p.error(f"--baseline {args.baseline}: the guest does not see that directory; use one under /var/tmp")
    missing = [t for t in (*NEEDS, *(["qemu-nbd"] if args.reference else [])) if shutil.which(t) is None]
    if missing:
        say(f"missing {', '.join(missing)} (run ./scripts/bootstrap.sh)")
        return 1
    start = time.monotonic()
    try:
        doc = run(args)
    except RuntimeError as e:
        say(str(e))
        return 1
    doc["wall_seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(doc, indent=2) if args.json else table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
