"""`make demo` and the side-by-side benchmark run end to end (short settings; no speed is asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.target
ROOT = Path(__file__).resolve().parent.parent


def _shm_leftovers(prefix):
    return {p for p in os.listdir("/dev/shm") if p.startswith(prefix)}


def test_demo_narrates_every_step_verifies_the_copy_and_cleans_up():
    before = _shm_leftovers("bootkit-demo-")
    r = subprocess.run([sys.executable, "-m", "bootkit.demo", "--perf-seconds", "1", "--no-vm"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    for step in ("uiscsictl discover", "uiscsictl inquiry", "uiscsictl capacity", "uiscsictl cp",
                 "all three agree", "iscsi-perf", "stopping tgtd"):
        assert step in r.stdout
    assert _shm_leftovers("bootkit-demo-") == before


def test_benchmark_reports_medians_and_ratios_as_json():
    r = subprocess.run([sys.executable, "bench/perfbench.py", "--rounds", "1", "--seconds", "1", "--lun-mb", "32",
                        "--only", "rand-read-4k-qd1", "--only", "rand-write-4k-qd1", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=180,
                       check=False)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    names = [w["name"] for w in doc["workloads"]]
    assert names == ["rand-read-4k-qd1", "rand-write-4k-qd1"]
    for w in doc["workloads"]:
        assert w["ours_iops"] > 0 and w["libiscsi_iops"] > 0 and len(w["samples"]) == 1
        assert w["ratio"] == pytest.approx(w["samples"][0]["ratio"], rel=1e-3)
    assert doc["workloads"][1]["read_ratio"] == doc["workloads"][0]["ratio"]
