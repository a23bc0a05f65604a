"""Side-by-side benchmark: `uiscsictl perf` against libiscsi on the same tgtd LUN (issue 7).

Runs each workload as pairs, ours then libiscsi's (A B A B ...), for ``--rounds`` rounds, and reports the
median of each side, the median of the pairwise ratios ours/libiscsi (machines here are noisy: a ratio of
two runs made back to back is steadier than a ratio of two medians) and the ratio of the medians.

``--baseline TREE`` adds another checkout's `uiscsictl perf` (TREE/.venv/bin/python, as `make bootstrap`
makes it there) to every round, on the same LUN, alternating which of the two goes first, and reports
ours/baseline the same two ways: an A/B of two versions of the initiator in one run.

The libiscsi side:
- reads: ``iscsi-perf`` (libiscsi's own tool), the reference the issue names;
- writes: iscsi-perf cannot write, so ``qemu-img bench -w`` through qemu's libiscsi driver. It has no
  random mode: "random" write runs use a large odd stride over the LUN (every access lands far from the
  previous one), and its request count is sized from our run of the same round to last about as long.
  ``--read-reference qemu-img`` measures reads the same way, for a like-for-like write/read comparison.

Usage (from the repository root; takes about rounds x 12 x seconds):
    .venv/bin/python bench/perfbench.py --rounds 3 --seconds 5
    .venv/bin/python bench/perfbench.py --json > bench.json
    .venv/bin/python bench/perfbench.py --png bench.png     # needs matplotlib
    .venv/bin/python bench/perfbench.py --baseline ../old-checkout --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISAGREE = 0.10        # the two ratio estimates differ by more than this (relative): say so
STRIDE_BLOCKS = 40503  # odd, so the stride visits every block-size slot of a power-of-two LUN


@dataclass(frozen=True)
class Workload:
    name: str
    block_size: int
    queue_depth: int
    random: bool
    write: bool
    bar: float | None  # the issue's target ratio for reads; writes are judged against the reads' ratio

    @property
    def label(self) -> str:
        size = "1 MiB" if self.block_size == 1 << 20 else f"{self.block_size // 1024} KiB"
        return (f"{'random' if self.random else 'sequential'} {size} {'writes' if self.write else 'reads'}, "
                f"QD{self.queue_depth}")


WORKLOADS = [
    Workload("seq-read-1m-qd16", 1 << 20, 16, False, False, 0.9),
    Workload("rand-read-4k-qd32", 4096, 32, True, False, 0.5),
    Workload("rand-read-4k-qd1", 4096, 1, True, False, 0.7),
    Workload("seq-write-1m-qd16", 1 << 20, 16, False, True, None),
    Workload("rand-write-4k-qd32", 4096, 32, True, True, None),
    Workload("rand-write-4k-qd1", 4096, 1, True, True, None),
]


def ours(url: str, w: Workload, seconds: float, connections: int, event_loop: str, tree: Path = ROOT) -> float:
    """IOPS of `uiscsictl perf` from checkout ``tree`` (its own .venv, or ours)."""
    python = sys.executable if tree == ROOT else str(tree / ".venv" / "bin" / "python")
    cmd = [python, "-m", "initiator.ctl", "perf", url, "--block-size", str(w.block_size),
           "--queue-depth", str(w.queue_depth), "--seconds", str(seconds), "--json",
           "--connections", str(connections)]
    cmd += ["--random"] if w.random else []
    cmd += ["--write"] if w.write else []
    env = {**os.environ, "UISCSI_EVENT_LOOP": event_loop}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False, cwd=tree, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"uiscsictl perf ({tree}) failed: {r.stderr.strip()}")
    return float(json.loads(r.stdout)["iops"])


def iscsi_perf(url: str, w: Workload, seconds: float) -> float:
    cmd = ["iscsi-perf", "-b", str(w.block_size // 512), "-m", str(w.queue_depth), "-t", str(max(1, round(seconds)))]
    cmd += ["-r"] if w.random else []
    r = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60, check=False)
    found = re.findall(r"iops average (\d+)", r.stdout.replace("\r", "\n"))
    if not found:
        raise RuntimeError(f"iscsi-perf gave no result: {(r.stdout + r.stderr)[-300:]}")
    return float(found[-1])


def qemu_bench(url: str, w: Workload, seconds: float, lun_bytes: int, expected_iops: float) -> float:
    count = max(200, int(expected_iops * seconds))
    step = w.block_size * STRIDE_BLOCKS if w.random else w.block_size
    cmd = ["qemu-img", "bench", "-f", "raw", "-t", "none", "-c", str(count), "-d", str(w.queue_depth),
           "-s", str(w.block_size), "-S", str(step % lun_bytes or w.block_size)]
    cmd += ["-w"] if w.write else []
    r = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds * 20 + 60, check=False)
    m = re.search(r"Run completed in ([\d.]+) seconds", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"qemu-img bench failed: {(r.stdout + r.stderr)[-300:]}")
    return count / max(float(m.group(1)), 1e-6)


def _callgrind(cmd: list[str], out: Path, cwd: Path | None = None, env: dict | None = None,
               timeout: float = 600) -> tuple[int, str]:
    """Run ``cmd`` under valgrind's callgrind; (instructions executed in user space, its stdout)."""
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd], capture_output=True,
                       text=True, timeout=timeout, check=False, cwd=cwd, env=env)
    total = next((int(line.split()[1]) for line in out.read_text().splitlines()
                  if line.startswith(("summary:", "totals:"))), 0) if out.exists() else 0
    if r.returncode != 0 or not total:
        raise RuntimeError(f"{cmd[0]} under valgrind failed: {(r.stdout + r.stderr)[-300:]}")
    out.unlink()
    return total, r.stdout


def instructions_per_io(side: str, url: str, w: Workload, args: argparse.Namespace, tree: Path,
                        workdir: Path) -> int:
    """User-space instructions per command: two runs under callgrind, 1 s and 1 + ``--callgrind`` s long,
    and the difference of their counts over the difference of their commands (start-up and login cancel)."""
    counts = []
    for seconds in (1.0, 1.0 + args.callgrind):
        out = workdir / f"{side}.callgrind"
        if side == "iscsi-perf":
            cmd = ["iscsi-perf", "-b", str(w.block_size // 512), "-m", str(w.queue_depth), "-t", f"{seconds:g}",
                   *(["-r"] if w.random else []), url]
            total, stdout = _callgrind(cmd, out)
            found = re.findall(r"iops average (\d+)", stdout.replace("\r", "\n"))
            ios = int(found[-1]) * seconds if found else 0
        else:
            python = sys.executable if tree == ROOT else str(tree / ".venv" / "bin" / "python")
            cmd = [python, "-m", "initiator.ctl", "perf", url, "--block-size", str(w.block_size), "--queue-depth",
                   str(w.queue_depth), "--seconds", f"{seconds:g}", "--json", "--timeout", "120",
                   *(["--random"] if w.random else []), *(["--write"] if w.write else [])]
            total, stdout = _callgrind(cmd, out, cwd=tree, env={**os.environ, "UISCSI_EVENT_LOOP": args.event_loop})
            ios = json.loads(stdout)["ios"]
        counts.append((total, ios))
    (i1, n1), (i2, n2) = counts
    if n2 <= n1:
        raise RuntimeError(f"{side}: the longer run under valgrind did no more commands ({n1} then {n2})")
    return round((i2 - i1) / (n2 - n1))


def run_callgrind(args: argparse.Namespace) -> dict:
    """--callgrind: instructions per command for ours (and the baseline, and iscsi-perf for reads)."""
    sys.path.insert(0, str(ROOT))
    from vm.targets import Tgt

    workloads = [w for w in WORKLOADS if not args.only or any(o in w.name for o in args.only)]
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir="/dev/shm"))
    rows = []
    target = None
    try:
        target = Tgt.start_retrying(workdir=workdir, size_mb=args.lun_mb)
        _prefill(target.backing[0], args.lun_mb)
        url = target.url(1)
        for w in workloads:
            row = {"name": w.name, "label": w.label, "ours": instructions_per_io("ours", url, w, args, ROOT, workdir)}
            if args.baseline is not None:
                row["baseline"] = instructions_per_io("baseline", url, w, args, args.baseline, workdir)
                row["vs_baseline"] = round(row["ours"] / row["baseline"], 3)
            if not w.write:
                row["iscsi_perf"] = instructions_per_io("iscsi-perf", url, w, args, ROOT, workdir)
                row["vs_iscsi_perf"] = round(row["ours"] / row["iscsi_perf"], 3)
            rows.append(row)
            print(f"{w.name:20} " + "  ".join(f"{k} {v:,}" for k, v in row.items() if k in
                                              ("ours", "baseline", "iscsi_perf")), file=sys.stderr, flush=True)
    finally:
        if target is not None:
            target.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "callgrind": True,
            "seconds": args.callgrind, "event_loop": args.event_loop,
            "baseline": str(args.baseline) if args.baseline is not None else None, "workloads": rows}


def callgrind_table(result: dict) -> str:
    base = result.get("baseline") is not None
    head = f"{'workload':34} {'ours instr/IO':>14}" + (f" {'baseline':>12} {'ours/base':>9}" if base else "")
    head += f" {'iscsi-perf':>12} {'ours/it':>8}"
    lines = [head, "-" * len(head)]
    for r in result["workloads"]:
        line = f"{r['label']:34} {r['ours']:>14,}"
        if base:
            line += f" {r['baseline']:>12,} {r['vs_baseline']:>9.3f}"
        if "iscsi_perf" in r:
            line += f" {r['iscsi_perf']:>12,} {r['vs_iscsi_perf']:>8.2f}"
        lines.append(line)
    lines.append(f"user-space instructions per command under valgrind callgrind (the difference of a 1 s and a "
                 f"{1 + result['seconds']:g} s run, so start-up cancels); system calls not counted; {result['date']}")
    if base:
        lines.append(f"baseline: {result['baseline']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT))
    from vm.targets import Tgt

    workloads = [w for w in WORKLOADS if not args.only or any(o in w.name for o in args.only)]
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir="/dev/shm"))
    samples: dict[str, list[dict]] = {w.name: [] for w in workloads}
    target = None
    try:
        target = Tgt.start_retrying(workdir=workdir, size_mb=args.lun_mb,
                                    params={"MaxConnections": str(max(args.connections, 1))})
        _prefill(target.backing[0], args.lun_mb)
        url = target.url(1)
        lun_bytes = args.lun_mb << 20
        load_before = os.getloadavg()
        for rnd in range(1, args.rounds + 1):
            for w in workloads:
                trees = {"ours": ROOT, "baseline": args.baseline}
                # with a baseline, who goes first alternates, so neither always meets a warmer (or busier) target
                order = ["ours"] if args.baseline is None else ["ours", "baseline"][::1 if rnd % 2 else -1]
                sample = {side: ours(url, w, args.seconds, args.connections, args.event_loop, trees[side])
                          for side in order}
                a = sample["ours"]
                use_qemu = w.write or args.read_reference == "qemu-img"
                b = qemu_bench(url, w, args.seconds, lun_bytes, a) if use_qemu else iscsi_perf(url, w, args.seconds)
                sample.update(libiscsi=b, ratio=a / b if b else 0.0)
                line = (f"round {rnd}/{args.rounds} {w.name:20} ours {a:10,.0f} IOPS   "
                        f"{'qemu-img' if use_qemu else 'iscsi-perf'} {b:10,.0f} IOPS   ratio {a / b:5.2f}")
                if "baseline" in sample:
                    sample["vs_baseline"] = a / sample["baseline"] if sample["baseline"] else 0.0
                    line += f"   baseline {sample['baseline']:10,.0f} IOPS   ours/baseline {sample['vs_baseline']:5.2f}"
                samples[w.name].append(sample)
                print(line, file=sys.stderr, flush=True)
    finally:
        if target is not None:
            target.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return _summarise(args, workloads, samples, load_before)


def _prefill(path: Path, size_mb: int) -> None:
    """Real data on the LUN, so reads are not served from tmpfs holes."""
    block = os.urandom(1 << 20)
    with open(path, "r+b") as f:
        f.writelines(block for _ in range(size_mb))


def _disagree(ratio: float, of_medians: float, bar: float | None) -> bool:
    """The median of pairwise ratios and the ratio of medians differ by more than DISAGREE, or fall on
    either side of the bar: then neither is to be quoted alone."""
    return (abs(ratio - of_medians) > DISAGREE * max(ratio, of_medians)
            or (bar is not None and (ratio >= bar) != (of_medians >= bar)))


def _summarise(args, workloads, samples, load_before) -> dict:
    rows = []
    for w in workloads:
        s = samples[w.name]
        ours_iops = statistics.median(x["ours"] for x in s)
        lib_iops = statistics.median(x["libiscsi"] for x in s)
        rows.append({**asdict(w), "label": w.label,
                     "reference": "qemu-img bench" if w.write or args.read_reference == "qemu-img" else "iscsi-perf",
                     "ours_iops": round(ours_iops, 1), "libiscsi_iops": round(lib_iops, 1),
                     "ours_mb_per_s": round(ours_iops * w.block_size / (1 << 20), 1),
                     "libiscsi_mb_per_s": round(lib_iops * w.block_size / (1 << 20), 1),
                     "ratio": round(statistics.median(x["ratio"] for x in s), 3),
                     "ratio_of_medians": round(ours_iops / lib_iops, 3) if lib_iops else 0.0, "samples": s})
        rows[-1]["disagree"] = _disagree(rows[-1]["ratio"], rows[-1]["ratio_of_medians"], w.bar)
        if args.baseline is not None:
            base_iops = statistics.median(x["baseline"] for x in s)
            rows[-1].update(baseline_iops=round(base_iops, 1),
                            vs_baseline=round(statistics.median(x["vs_baseline"] for x in s), 3),
                            vs_baseline_of_medians=round(ours_iops / base_iops, 3) if base_iops else 0.0)
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        if r["write"]:
            read = by_name.get(r["name"].replace("write", "read"))
            r["read_ratio"] = read["ratio"] if read else None
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
            "seconds": args.seconds, "lun_mb": args.lun_mb,
            "connections": args.connections, "event_loop": args.event_loop, "cpus": os.cpu_count(),
            "baseline": str(args.baseline) if args.baseline is not None else None,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()], "workloads": rows}


def table(result: dict) -> str:
    head = f"{'workload':34} {'ours':>14} {'libiscsi':>14}  {'reference':15} {'ratio':>6} {'of med':>6}  {'bar':12}"
    base = result.get("baseline") is not None
    if base:
        head += f" {'baseline':>14} {'ours/base':>9} {'of med':>6}"
    lines = [head, "-" * len(head)]
    for r in result["workloads"]:
        unit = (lambda x: f"{x:,.0f} MB/s") if r["block_size"] >= 1 << 20 else (lambda x: f"{x:,.0f} IOPS")
        ours_v = r["ours_mb_per_s"] if r["block_size"] >= 1 << 20 else r["ours_iops"]
        lib_v = r["libiscsi_mb_per_s"] if r["block_size"] >= 1 << 20 else r["libiscsi_iops"]
        if r["write"]:
            bar = f"reads {r['read_ratio']:.2f}" if r.get("read_ratio") is not None else "-"
        else:
            bar = f">= {r['bar']}"
        line = (f"{r['label']:34} {unit(ours_v):>14} {unit(lib_v):>14}  {r['reference']:15} "
                f"{r['ratio']:6.2f} {r['ratio_of_medians']:6.2f}{'!' if r.get('disagree') else ' '} {bar:12}")
        if base:
            base_v = r["baseline_iops"] * r["block_size"] / (1 << 20) if r["block_size"] >= 1 << 20 else r["baseline_iops"]
            line += f" {unit(base_v):>14} {r['vs_baseline']:9.2f} {r['vs_baseline_of_medians']:6.2f}"
        lines.append(line)
    lines.append(f"medians of {result['rounds']} rounds x {result['seconds']:g} s; ratio = median of pairwise "
                 f"ours/libiscsi, of med = ratio of the medians (! = they disagree: more than {DISAGREE:.0%} apart "
                 f"or on either side of the bar); load average before {result['loadavg_before'][0]}, "
                 f"after {result['loadavg_after'][0]} on {result['cpus']} CPUs; {result.get('date', '')}")
    if base:
        lines.append(f"baseline: {result['baseline']} (ours/base: median of pairwise ratios; of med: ratio of medians)")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("perfbench: --png needs matplotlib (.venv/bin/pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["workloads"]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar([r["name"] for r in rows], [r["ratio"] for r in rows], color=["#4c72b0" if not r["write"] else "#dd8452"
                                                                       for r in rows])
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_ylabel("ours / libiscsi (median of pairs)")
    ax.set_title(f"uiscsictl perf vs libiscsi, tgtd on /dev/shm, {result['rounds']} rounds")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="perfbench", description=__doc__.split("\n\n")[0],
                                epilog="example: .venv/bin/python bench/perfbench.py --rounds 3 --seconds 5 --json")
    p.add_argument("--rounds", type=int, default=3, help="A/B pairs per workload (default 3)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each run (default 5)")
    p.add_argument("--lun-mb", type=int, default=512, help="LUN size on /dev/shm (default 512)")
    p.add_argument("--connections", type=int, default=1, help="our MC/S connections (default 1)")
    p.add_argument("--read-reference", choices=("iscsi-perf", "qemu-img"), default="iscsi-perf",
                   help="libiscsi tool for the read workloads (default iscsi-perf)")
    p.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="our event loop (default auto: uvloop when installed, as uiscsictl does)")
    p.add_argument("--only", action="append", metavar="SUBSTRING", help="run only matching workloads")
    p.add_argument("--baseline", type=Path, metavar="TREE",
                   help="also run another checkout's uiscsictl perf (TREE/.venv/bin/python) in every round, "
                        "alternating with ours, and report ours/baseline")
    p.add_argument("--callgrind", type=float, metavar="SECONDS",
                   help="count user-space instructions per command under valgrind instead of timing (ours, the "
                        "baseline, iscsi-perf for reads): a 1 s and a 1+SECONDS s run each; the load does not "
                        "move it (slow: SECONDS 2 takes about a minute per workload)")
    p.add_argument("--json", action="store_true", help="print the full result, samples included, as JSON")
    p.add_argument("--png", metavar="FILE", help="also plot the ratios to FILE (needs matplotlib)")
    args = p.parse_args(argv)
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / ".venv" / "bin" / "python").exists():
            print(f"perfbench: {args.baseline}/.venv/bin/python is missing (run make bootstrap there)", file=sys.stderr)
            return 1
    missing = [t for t in ("tgtd", "iscsi-perf", "qemu-img", *(["valgrind"] if args.callgrind else []))
               if shutil.which(t) is None]
    if missing:
        print(f"perfbench: missing {', '.join(missing)} (run ./scripts/bootstrap.sh)", file=sys.stderr)
        return 1
    start = time.monotonic()
    try:
        result = run_callgrind(args) if args.callgrind else run(args)
    except RuntimeError as e:
        print(f"perfbench: {e}", file=sys.stderr)
        return 1
    result["wall_seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(result, indent=2) if args.json else callgrind_table(result) if args.callgrind else table(result))
    if args.png:
        plot(result, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
