"""`python -m tests.fuzz`: run fuzz targets for a set number of inputs and report what each did.

Each target runs in its own worker process (tests/fuzz/engine.py under atheris/libFuzzer), starting from
its seeds: the project's own encoder for PDUs, logins recorded from tgtd and istgt, the fstabs in
tests/data, configs and control requests as uiscsictl writes them, and the reproducers of the bugs found. Per target the report gives inputs
run, coverage (libFuzzer's edges and features over the instrumented initiator/ and fstab_tools/ code,
and the statement and branch coverage of the target's modules measured by replaying the final corpus
under coverage.py), crashes with their reproducer files, RSS at start, end and peak, and the
wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .targets import NAMES, load

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RECORDED = HERE / "seeds"           # recorded from real targets by tests/fuzz/capture.py
CRASHES = HERE / "crashes"          # reproducers of the bugs found (fixed ones are regression seeds)
RSS_GROWTH_MB = 64                  # default bound on RSS growth from the end of start-up to the end
_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+ .*?exec/s: (\d+) rss: (\d+)Mb")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")

EPILOG = """\
Coverage: "edges" and "features" are libFuzzer's counts over the instrumented code (atheris instruments
the initiator and fstab_tools packages); "lines" and "branches" are coverage.py's statements and branches
run/total in the target's own modules (tests/fuzz/project.py MODULES), measured by replaying the seeds and
the final corpus without instrumentation.

examples:
  python -m tests.fuzz                                   every target, 10000 inputs each
  python -m tests.fuzz --target pdu --runs 1000000       the PDU path, a million inputs
  python -m tests.fuzz --target config --seconds 60 --corpus ~/fuzz-corpus --json

exit status: 0 no new crash and RSS growth within the bound; 1 otherwise; 2 usage.
Known, not yet fixed bugs (tests/fuzz/known.py) are reported but do not fail the run."""


@dataclass
class Result:
    target: str
    inputs: int = 0
    exec_per_s: int = 0
    edges: int = 0
    features: int = 0
    corpus: int = 0
    line_coverage: dict | None = None
    crashes: list[dict] = field(default_factory=list)
    known: list[dict] = field(default_factory=list)
    rss_start_mb: int = 0
    rss_end_mb: int = 0
    rss_peak_mb: int = 0
    rss_growth_mb: int = 0
    rss_second_half_mb: int = 0     # growth over the second half of the inputs: a leak shows here
    rss_trail: list[tuple[int, int]] = field(default_factory=list)  # (inputs, MB) whenever RSS changed
    rss_bound_mb: int = RSS_GROWTH_MB
    seconds: float = 0.0
    worker_exit: int = 0
    worker_error: str | None = None

    @property
    def ok(self) -> bool:
        return (not self.crashes and self.worker_error is None and self.worker_exit == 0
                and self.rss_growth_mb <= self.rss_bound_mb)


def write_seeds(name: str, dest: Path) -> int:
    """The target's seeds (built ones, then recorded ones) as files in ``dest``; returns how many."""
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for seed_name, data in load(name).seeds():
        (dest / f"{seed_name}.bin").write_bytes(data)
        n += 1
    recorded = RECORDED / name
    if recorded.is_dir():
        for f in sorted(recorded.iterdir()):
            (dest / f"recorded-{f.name}").write_bytes(f.read_bytes())
            n += 1
    for f in reproducers(name):
        (dest / f"reproducer-{f.name}").write_bytes(f.read_bytes())
        n += 1
    return n


def reproducers(name: str) -> list[Path]:
    """The target's files in tests/fuzz/crashes/ (named TARGET-what-it-shows.bin)."""
    return sorted(CRASHES.glob(f"{name}-*.bin"))


def write_dictionary(name: str, path: Path) -> bool:
    """The target's tokens in libFuzzer's -dict format; False when it has none."""
    tokens = load(name).dictionary
    lines = ['"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in tok) + '"'
             for tok in tokens]
    path.write_text("".join(f"{line}\n" for line in lines))
    return bool(tokens)


def _progress(res: Result, line: str, last: list[float], quiet: bool) -> None:
    m = _STATUS.match(line)
    if m:
        res.inputs, kind = int(m[1]), m[2]
        res.edges, res.features, res.corpus = int(m[3]), int(m[4]), int(m[5])
        res.exec_per_s, rss = int(m[6]), int(m[7])
        if kind == "INITED":
            res.rss_start_mb = rss
        if not res.rss_trail or res.rss_trail[-1][1] != rss:
            res.rss_trail.append((res.inputs, rss))
        res.rss_end_mb = rss
        now = time.monotonic()
        if not quiet and (kind in ("INITED", "DONE") or now - last[0] >= 10):
            last[0] = now
            sys.stderr.write(f"fuzz {res.target}: {res.inputs} inputs, {res.edges} edges, {res.features} "
                             f"features, {res.exec_per_s}/s, rss {rss} MB\n")
        return
    m = _STAT.match(line)
    if m and m[1] == "number_of_executed_units":
        res.inputs = int(m[2])
    elif m and m[1] == "peak_rss_mb":
        res.rss_peak_mb = max(res.rss_peak_mb, int(m[2]))
    elif line.startswith("==") and "ERROR" in line:
        res.worker_error = line.strip()


def run_target(name: str, runs: int, seconds: float, corpus: Path, crash_dir: Path, work: Path, *, seed: int,
               line_coverage: bool, rss_bound: int, quiet: bool) -> Result:
    res = Result(name, rss_bound_mb=rss_bound)
    seeds = work / "seeds" / name
    write_seeds(name, seeds)
    corpus.mkdir(parents=True, exist_ok=True)
    crash_dir.mkdir(parents=True, exist_ok=True)
    events = work / f"{name}.events"
    events.unlink(missing_ok=True)
    dictionary = work / f"{name}.dict"
    cmd = [sys.executable, "-m", "tests.fuzz.engine", "fuzz", name, "--crash-dir", str(crash_dir),
           "--events", str(events), "--", f"-runs={runs}", f"-seed={seed}", "-timeout=10", "-rss_limit_mb=2048",
           "-print_final_stats=1", f"-artifact_prefix={crash_dir}/{name}-",
           *([f"-max_total_time={int(seconds)}"] if seconds else []),
           *([f"-dict={dictionary}"] if write_dictionary(name, dictionary) else []), str(corpus), str(seeds)]
    # the worker's temporary files (config files written per input): on tmpfs when there is one, and
    # removed here, since libFuzzer ends the worker without Python's cleanup
    tmp = Path(tempfile.mkdtemp(prefix="bootkit-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    env = {**os.environ, "TMPDIR": str(tmp)}
    try:
        _fuzz(res, cmd, env, quiet)
        if events.exists():
            for line in events.read_text().splitlines():
                ev = json.loads(line)
                (res.known if ev["known"] else res.crashes).append(ev)
        if line_coverage:
            res.line_coverage = _line_coverage(name, [corpus, seeds], env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _fuzz(res: Result, cmd: list[str], env: dict, quiet: bool) -> None:
    """Run the worker, following libFuzzer's status lines; fill in inputs, coverage, RSS and time."""
    start = time.monotonic()
    last = [start]
    tail: list[str] = []
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    assert proc.stderr is not None
    for line in proc.stderr:
        tail = (tail + [line.rstrip()])[-40:]
        _progress(res, line, last, quiet)
    _, status, usage = os.wait4(proc.pid, 0)  # the worker's own rusage: its peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    res.seconds = round(time.monotonic() - start, 1)
    res.worker_exit = proc.returncode
    res.rss_peak_mb = max(res.rss_peak_mb, usage.ru_maxrss // 1024)
    res.rss_growth_mb = res.rss_end_mb - res.rss_start_mb
    half = [mb for n, mb in res.rss_trail if n <= res.inputs // 2]
    res.rss_second_half_mb = res.rss_end_mb - (half[-1] if half else res.rss_start_mb)
    if res.worker_exit and res.worker_error is None:
        res.worker_error = f"worker exited with {res.worker_exit}: " + " | ".join(tail[-5:])


def _line_coverage(name: str, dirs: list[Path], env: dict) -> dict | None:
    """Replay the corpus uninstrumented under coverage.py: statements and branches of the target's modules."""
    replay = subprocess.run([sys.executable, "-m", "tests.fuzz.engine", "replay", name, "--line-coverage",
                             *map(str, dirs)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, check=False)
    return json.loads(replay.stdout)["line_coverage"] if replay.stdout.strip() else None


def table(results: list[Result]) -> str:
    rows = [("target", "inputs", "exec/s", "edges", "features", "lines", "branches", "crashes", "known",
             "RSS MB start/end/peak", "growth/bound", "2nd half", "time s")]
    for r in results:
        lc = r.line_coverage
        lines = f"{lc['hit']}/{lc['lines']} {lc['percent']}%" if lc else "-"
        branches = f"{lc['branches_hit']}/{lc['branches']} {lc['branch_percent']}%" if lc else "-"
        rows.append((r.target, str(r.inputs), str(r.exec_per_s), str(r.edges), str(r.features), lines, branches,
                     str(len(r.crashes)), str(len(r.known)), f"{r.rss_start_mb}/{r.rss_end_mb}/{r.rss_peak_mb}",
                     f"{r.rss_growth_mb}/{r.rss_bound_mb}", str(r.rss_second_half_mb), f"{r.seconds}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
           for row in rows]
    for r in results:
        for c in r.crashes:
            out.append(f"CRASH {r.target}: {c['signature']}: {c['message'][:120]}\n      reproducer: {c['file']}")
        for c in r.known:
            out.append(f"known {r.target}: {c['signature']} (tests/fuzz/known.py)")
        if r.worker_error:
            out.append(f"WORKER {r.target}: {r.worker_error}")
        if r.rss_growth_mb > r.rss_bound_mb:
            out.append(f"MEMORY {r.target}: RSS grew {r.rss_growth_mb} MB, over the bound of {r.rss_bound_mb} MB")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", choices=(*NAMES, "all"),
                    help="a target to run (repeatable; default all): " + ", ".join(NAMES))
    ap.add_argument("--runs", type=int, default=10000, help="inputs per target, seeds included (default 10000)")
    ap.add_argument("--seconds", type=float, default=0, help="also stop each target after this long")
    ap.add_argument("--corpus", type=Path, help="keep each target's corpus in DIR/TARGET (default: a temp dir)")
    ap.add_argument("--crashes", type=Path, help="where reproducers go (default: WORKDIR/crashes)")
    ap.add_argument("--workdir", type=Path, help="seeds, events and temporary files (default: a new temp dir)")
    ap.add_argument("--seed", type=int, default=0, help="libFuzzer's random seed (default 0: a fresh one)")
    ap.add_argument("--rss-growth-mb", type=int, default=RSS_GROWTH_MB,
                    help=f"fail when a worker's RSS grows more than this after start-up (default {RSS_GROWTH_MB})")
    ap.add_argument("--no-line-coverage", action="store_true", help="skip the replay that measures lines and branches")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    opts = ap.parse_args(argv)
    names = NAMES if not opts.target or "all" in opts.target else tuple(dict.fromkeys(opts.target))
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="bootkit-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    crash_dir = opts.crashes or work / "crashes"
    results = []
    for name in names:
        corpus = (opts.corpus / name) if opts.corpus else work / "corpus" / name
        results.append(run_target(name, opts.runs, opts.seconds, corpus, crash_dir, work, seed=opts.seed,
                                  line_coverage=not opts.no_line_coverage, rss_bound=opts.rss_growth_mb,
                                  quiet=opts.quiet))
    ok = all(r.ok for r in results)
    if opts.json:
        print(json.dumps({"ok": ok, "workdir": str(work), "crash_dir": str(crash_dir),
                          "targets": [asdict(r) | {"ok": r.ok} for r in results]}, indent=1))
    else:
        print(table(results))
        print(f"work directory: {work}")
    return 0 if ok else 1
