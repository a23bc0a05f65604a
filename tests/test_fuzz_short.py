"""Short fuzz runs of every target (tests/fuzz), the seeds, and the reproducers of known bugs.

Each target runs a few thousand coverage-guided inputs in its own atheris worker and must end with no
new crash and bounded RSS. The long form is ``python -m tests.fuzz --runs N`` (see its --help).
A bug the fuzzers found and nobody fixed yet is listed in tests/fuzz/known.py with a reproducer; its
test here is a strict xfail, so the fix that makes the reproducer pass turns it red until the entry goes.
Once fixed, the reproducer stays in tests/fuzz/crashes/ as a regression test that must pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.engine import run_one, signature
from tests.fuzz.known import KNOWN
from tests.fuzz.runner import RECORDED, reproducers
from tests.fuzz.targets import NAMES, load

ROOT = Path(__file__).resolve().parent.parent
CRASHES = ROOT / "tests" / "fuzz" / "crashes"
RUNS = 5000
RSS_GROWTH_MB = 64


@pytest.mark.parametrize("name", NAMES)
def test_short_fuzz_run_finds_no_new_crash(name, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", "--target", name, "--runs", str(RUNS), "--seed", "1", "--json", "-q",
         "--no-line-coverage", "--workdir", str(tmp_path), "--rss-growth-mb", str(RSS_GROWTH_MB)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout, proc.stderr[-2000:]
    (res,) = json.loads(proc.stdout)["targets"]
    crashes = [f"{c['signature']}: {c['message']} ({c['file']})" for c in res["crashes"]]
    assert not crashes, "\n".join(crashes)
    assert res["worker_error"] is None and res["worker_exit"] == 0
    assert res["inputs"] >= RUNS and res["edges"] > 0
    assert res["rss_growth_mb"] <= RSS_GROWTH_MB
    assert proc.returncode == 0


@pytest.mark.parametrize("name", NAMES)
def test_every_seed_runs_without_a_crash(name):
    """Built and recorded seeds stay valid inputs (a change of the code under test may reject them
    cleanly, but never crash on them)."""
    target = load(name)
    seeds = list(target.seeds())
    recorded = sorted((RECORDED / name).glob("*")) if (RECORDED / name).is_dir() else []
    seeds += [(f.name, f.read_bytes()) for f in recorded]
    assert seeds
    crashes = []
    for seed_name, data in seeds:
        exc = run_one(target, data)
        if exc is not None and signature(exc) not in KNOWN:
            crashes.append(f"{seed_name}: {signature(exc)}: {exc}")
    assert not crashes, "\n".join(crashes)


def test_recorded_seeds_cover_real_targets():
    for name in ("pdu", "login", "text"):
        names = {f.name.split("-")[0] for f in (RECORDED / name).iterdir()}
        assert names == {"tgtd", "istgt"}, name


@pytest.mark.parametrize("sig", [pytest.param(sig, id=KNOWN[sig][1], marks=pytest.mark.xfail(
    strict=True, reason=KNOWN[sig][2])) for sig in KNOWN])
def test_known_bug_reproducer(sig):
    """Fails while the bug is there; passes (XPASS, a failure under strict) once it is fixed."""
    target_name, file, _ = KNOWN[sig]
    exc = run_one(load(target_name), (CRASHES / file).read_bytes())
    assert exc is None, f"{signature(exc)}: {exc}"


FIXED = [(name, f) for name in NAMES for f in reproducers(name) if f.name not in {v[1] for v in KNOWN.values()}]


@pytest.mark.parametrize(("name", "file"), FIXED, ids=[f.stem for _, f in FIXED])
def test_fixed_bug_reproducer_passes(name, file):
    """A bug found and fixed stays fixed: its reproducer runs through its target without a crash."""
    exc = run_one(load(name), file.read_bytes())
    assert exc is None, f"{signature(exc)}: {exc}"


def test_each_known_bug_has_its_reproducer():
    for sig, (target_name, file, _) in KNOWN.items():
        exc = run_one(load(target_name), (CRASHES / file).read_bytes())
        assert exc is None or signature(exc) == sig, f"{file} now fails differently: {signature(exc)}"
