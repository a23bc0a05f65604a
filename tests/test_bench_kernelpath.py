"""bench/kernelpath.py: its arithmetic and plan (pure), its guest script (shellcheck), and one tiny real run.

The run boots one guest: uiscsid and open-iscsi attach the same host tgtd LUN, fio runs one 1-second
workload on each, and the JSON must be complete and consistent. No speed is asserted: the benchmark
is a command to run, not a timed test (budget: about a minute).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import kernelpath

W = {w.name: w for w in kernelpath.WORKLOADS}


def test_plan_alternates_ours_and_open_iscsi_in_every_round():
    runs = kernelpath.plan([W["rand-read-4k-qd1"], W["seq-write-1m-qd16"]], 2, ("nbd", "netlink"))
    assert [(r.round, r.workload.name, r.side) for r in runs] == [
        (rnd, name, side) for rnd in (1, 2) for name in ("rand-read-4k-qd1", "seq-write-1m-qd16")
        for side in ("nbd", "open-iscsi", "netlink")]
    assert len({r.id for r in runs}) == len(runs)


def test_fio_arguments_follow_the_workload():
    assert kernelpath.fio_args(W["rand-write-4k-qd32"], 3).split()[:3] == ["--rw=randwrite", "--bs=4096",
                                                                          "--iodepth=32"]
    args = kernelpath.fio_args(W["seq-read-1m-qd16"], 2.5)
    assert "--rw=read" in args and "--bs=1048576" in args and "--runtime=2.5" in args and "--direct=1" in args


def test_both_ratio_estimates_are_reported_and_their_disagreement_flagged():
    w = W["rand-read-4k-qd1"]
    runs = kernelpath.plan([w], 3, ("nbd",))
    figures = dict(zip([r.id for r in runs], [100, 200, 300, 200, 50, 500], strict=True))  # ours, theirs, ...
    (row,) = kernelpath.summarise([w], runs, figures, ("nbd",), 3)
    assert [s["ratio"] for s in row["samples"]] == [0.5, 1.5, 0.1]
    assert row["ours"] == 100 and row["open_iscsi"] == 200 and row["unit"] == "IOPS" and row["rounds"] == 3
    assert row["ratio"] == 0.5 and row["ratio_of_medians"] == 0.5 and not row["disagree"]
    figures = dict(zip([r.id for r in runs], [100, 200, 300, 200, 290, 100], strict=True))
    (row,) = kernelpath.summarise([w], runs, figures, ("nbd",), 3)
    assert row["ratio"] == 1.5 and row["ratio_of_medians"] == 1.45 and not row["disagree"]
    figures = dict(zip([r.id for r in runs], [100, 100, 90, 200, 300, 400], strict=True))
    (row,) = kernelpath.summarise([w], runs, figures, ("nbd",), 3)
    assert row["ratio"] == 0.75 and row["ratio_of_medians"] == 0.5 and row["disagree"]


def test_1mib_workloads_are_reported_in_mb_per_second():
    doc = {"jobs": [{"read": {"iops": 40.0, "bw_bytes": 40 << 20}, "write": {"iops": 0, "bw_bytes": 0}}]}
    assert kernelpath.fio_figure(doc, W["seq-read-1m-qd16"]) == 40.0
    assert kernelpath.fio_figure(doc, W["rand-read-4k-qd1"]) == 40.0
    assert kernelpath.unit(W["seq-read-1m-qd16"]) == "MB/s" and kernelpath.unit(W["rand-read-4k-qd1"]) == "IOPS"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_guest_script_passes_sh_n_and_shellcheck():
    script = str(kernelpath.GUEST_SCRIPT)
    assert subprocess.run(["sh", "-n", script], capture_output=True, check=False).returncode == 0
    sc = subprocess.run(["shellcheck", "-s", "sh", "-S", "style", script], capture_output=True, text=True,
                        check=False)
    assert sc.returncode == 0, sc.stdout


@pytest.mark.vm
@pytest.mark.target
def test_one_tiny_run_gives_complete_json_for_both_initiators(vm_boot_files):
    r = subprocess.run([sys.executable, "bench/kernelpath.py", "--only", "rand-read-4k-qd1", "--rounds", "1",
                        "--seconds", "1", "--lun-mb", "32", "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    (row,) = doc["workloads"]
    assert {"workload", "ours", "open_iscsi", "ratio", "ratio_of_medians", "unit", "rounds"} <= row.keys()
    assert (row["workload"], row["attach"], row["unit"], row["rounds"]) == ("rand-read-4k-qd1", "nbd", "IOPS", 1)
    assert row["ours"] > 0 and row["open_iscsi"] > 0
    assert row["ratio"] == pytest.approx(row["ours"] / row["open_iscsi"], rel=0.01)
    assert doc["devices"]["nbd"]["device"].startswith("/dev/nbd")
    assert doc["devices"]["open-iscsi"]["device"].startswith("/dev/sd")
    assert "round 1 rand-read-4k-qd1" in r.stderr and doc["one_shot_benchmark"] == "bench/perfbench.py"


def test_the_qemu_nbd_reference_gets_its_own_median_ratio_to_open_iscsi():
    w = W["rand-write-4k-qd32"]
    runs = kernelpath.plan([w], 2, ("nbd",), reference=True)
    assert [r.side for r in runs] == ["nbd", "open-iscsi", "qemu-nbd"] * 2
    figures = dict(zip([r.id for r in runs], [100, 400, 800, 300, 600, 900], strict=True))
    (row,) = kernelpath.summarise([w], runs, figures, ("nbd",), 2)
    assert row["qemu_nbd"] == 850 and row["qemu_nbd_ratio"] == pytest.approx((2 + 1.5) / 2)
    assert row["ratio"] == pytest.approx((0.25 + 0.5) / 2) and [s["qemu_nbd"] for s in row["samples"]] == [800, 900]
    assert "qemu-nbd" in kernelpath.table({**_doc(), "workloads": [row]})


def _doc() -> dict:
    return {"rounds": 2, "seconds": 1, "devices": {}, "guest_seconds": 1, "loadavg_before": [0], "loadavg_after": [0],
            "cpus": 2, "date": "today"}
