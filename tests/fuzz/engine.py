"""The fuzz worker: one target in one process, under atheris (libFuzzer), or replaying files.

    python -m tests.fuzz.engine fuzz TARGET --crash-dir DIR --events FILE -- [libFuzzer flags] CORPUS
    python -m tests.fuzz.engine replay TARGET [--line-coverage] FILE|DIR...   (JSON out, tracebacks on stderr)
    python -m tests.fuzz.engine minimize TARGET FILE [--out FILE]

`fuzz` catches what escapes the target itself, so one run counts every distinct crash instead of stopping
at the first: a crash is any exception outside the target's ``clean`` types, identified by a signature
(exception type and the innermost project function it came from, or the oracle's check name). The
first input of each signature is saved to the crash directory and announced as a JSON line in the
events file. libFuzzer itself reports inputs run, coverage (edges, features) and RSS on stderr, which
the runner (tests/fuzz/runner.py) reads. `replay` runs files through the target without instrumentation
and can measure its modules' statement and branch coverage with coverage.py. `minimize` shrinks a
reproducer while its signature stays the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .known import KNOWN
from .targets import NAMES, OracleFailure, Target, load

if TYPE_CHECKING:
    import coverage

INSTRUMENT = ["initiator", "fstab_tools"]
PROJECT_DIRS = tuple(f"{os.sep}{d}{os.sep}" for d in INSTRUMENT)


def signature(exc: BaseException) -> str:
    """Stable name of a crash: the oracle check, or the exception type and the innermost project function."""
    if isinstance(exc, OracleFailure):
        return f"oracle:{exc.check}"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if any(d in f.filename for d in PROJECT_DIRS)] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].name}" if ours else "?"
    return f"{type(exc).__name__} in {where}"


def run_one(target: Target, data: bytes) -> BaseException | None:
    """None when the target accepted or cleanly refused ``data``; else the crash."""
    try:
        target.one_input(data)
    except target.clean:
        return None
    except Exception as e:  # noqa: BLE001 - everything else is exactly what we are looking for
        return e
    return None


class CrashLog:
    """Saves the first input of each signature and announces it in the events file (JSON lines)."""

    def __init__(self, target: str, crash_dir: Path, events: Path | None) -> None:
        self.target = target
        self.crash_dir = crash_dir
        self.events = events
        self.seen: dict[str, int] = {}

    def record(self, exc: BaseException, data: bytes) -> None:
        sig = signature(exc)
        n = self.seen.get(sig, 0)
        self.seen[sig] = n + 1
        if n:
            return
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        path = self.crash_dir / f"{self.target}-{hashlib.sha1(data).hexdigest()[:16]}.bin"
        path.write_bytes(data)
        tb = "".join(traceback.format_exception(exc))
        path.with_suffix(".txt").write_text(f"target: {self.target}\nsignature: {sig}\n\n{tb}")
        event = {"target": self.target, "signature": sig, "known": sig in KNOWN, "file": str(path),
                 "size": len(data), "message": f"{type(exc).__name__}: {exc}"[:300]}
        if self.events is not None:
            with open(self.events, "a") as f:
                f.write(json.dumps(event) + "\n")


def fuzz(name: str, crash_dir: Path, events: Path | None, libfuzzer_args: list[str]) -> None:
    import atheris  # only the fuzzing mode needs it; replay and minimize run without

    with atheris.instrument_imports(include=INSTRUMENT):
        target = load(name)
    crashes = CrashLog(name, crash_dir, events)

    def test_one(data: bytes) -> None:
        exc = run_one(target, data)
        if exc is not None:
            crashes.record(exc, data)

    extra = {}
    if target.mutator is not None:
        mutator = target.mutator
        extra["custom_mutator"] = lambda data, max_size, seed: mutator(data, max_size, seed, atheris.Mutate)
    atheris.Setup([sys.argv[0], f"-max_len={target.max_len}", *libfuzzer_args], test_one, **extra)
    atheris.Fuzz()  # libFuzzer exits the process when the run is over


def files_of(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        out += sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
    return out


def replay(name: str, paths: list[Path], line_coverage: bool) -> dict:
    """Run every file through the target; with ``line_coverage`` measure the statements and branches of its
    modules (`project.MODULES`) that the files reach, with coverage.py started before the import."""
    cov = None
    if line_coverage:
        import coverage

        cov = coverage.Coverage(data_file=None, branch=True, source_pkgs=INSTRUMENT)
        cov.start()
    target = load(name)
    files = files_of(paths)
    crashes: list[dict] = []
    for f in files:
        exc = run_one(target, f.read_bytes())
        if exc is not None:
            crashes.append({"file": str(f), "signature": signature(exc), "known": signature(exc) in KNOWN,
                            "message": f"{type(exc).__name__}: {exc}"[:300]})
            sys.stderr.write(f"{f}:\n" + "".join(traceback.format_exception(exc)))
    result: dict = {"target": name, "files": len(files), "crashes": crashes}
    if cov is not None:
        cov.stop()
        result["line_coverage"] = _coverage_summary(cov, name)
    return result


def _coverage_summary(cov: coverage.Coverage, name: str) -> dict:
    """Per module of the target and in total: statements and branches, and how many were run."""
    from .project import MODULES  # imported by load() under coverage

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        cov.json_report(morfs=[mod.__file__ for mod in MODULES[name]], outfile=str(out))
        files = json.loads(out.read_text())["files"]
    by_path = {os.path.abspath(f): data["summary"] for f, data in files.items()}
    modules = {}
    for mod in MODULES[name]:
        summary = by_path[os.path.abspath(mod.__file__)]
        modules[mod.__name__] = {"lines": summary["num_statements"], "hit": summary["covered_lines"],
                                 "branches": summary["num_branches"],
                                 "branches_hit": summary["covered_branches"]}
    t = {k: sum(m[k] for m in modules.values()) for k in ("lines", "hit", "branches", "branches_hit")}
    return {"modules": modules, **t, "percent": round(100.0 * t["hit"] / t["lines"], 1) if t["lines"] else 0.0,
            "branch_percent": round(100.0 * t["branches_hit"] / t["branches"], 1) if t["branches"] else 0.0}


def minimize(name: str, data: bytes, budget: int = 20000) -> tuple[bytes, str]:
    """Shrink ``data`` (delta debugging on bytes) while it still crashes with the same signature."""
    target = load(name)
    exc = run_one(target, data)
    if exc is None:
        raise SystemExit(f"{name}: this input does not crash the target")
    sig = signature(exc)
    tries = 0

    def same(candidate: bytes) -> bool:
        nonlocal tries
        tries += 1
        e = run_one(target, candidate)
        return e is not None and signature(e) == sig

    data = shrink(data, same, lambda: tries >= budget)
    return data, sig


def shrink(data: bytes, keeps: Callable[[bytes], bool], spent: Callable[[], bool]) -> bytes:
    """Remove ever smaller chunks while ``keeps`` holds, then zero bytes out where that still holds."""
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and not spent():
        start, progress = 0, False
        while start < len(data) and not spent():
            cand = data[:start] + data[start + chunk:]
            if keeps(cand):
                data, progress = cand, True
            else:
                start += chunk
        if not progress:
            chunk //= 2
    for i in range(len(data)):
        if spent():
            break
        if data[i] not in (0, 0x30) and keeps(data[:i] + b"0" + data[i + 1:]):
            data = data[:i] + b"0" + data[i + 1:]
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.engine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fuzz", help="run a target under atheris; libFuzzer flags and corpus dirs after --")
    f.add_argument("target", choices=NAMES)
    f.add_argument("--crash-dir", type=Path, required=True)
    f.add_argument("--events", type=Path)
    r = sub.add_parser("replay", help="run files through a target; print JSON")
    r.add_argument("target", choices=NAMES)
    r.add_argument("--line-coverage", action="store_true")
    r.add_argument("paths", type=Path, nargs="+")
    m = sub.add_parser("minimize", help="shrink a reproducer keeping its crash signature")
    m.add_argument("target", choices=NAMES)
    m.add_argument("file", type=Path)
    m.add_argument("--out", type=Path)
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    opts = ap.parse_args(argv[:len(argv) - len(rest) - (1 if "--" in argv else 0)])
    logging.disable(logging.CRITICAL)  # the code under test logs; the fuzzer only wants its verdicts
    if opts.mode == "fuzz":
        fuzz(opts.target, opts.crash_dir, opts.events, rest)
        return 0
    if opts.mode == "replay":
        result = replay(opts.target, opts.paths, opts.line_coverage)
        print(json.dumps(result))
        return 1 if any(not c["known"] for c in result["crashes"]) else 0
    data, sig = minimize(opts.target, opts.file.read_bytes())
    out = opts.out or opts.file.with_suffix(".min")
    out.write_bytes(data)
    print(f"{out}: {len(data)} bytes, {sig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
