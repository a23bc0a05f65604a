"""`uiscsictl perf` against tgtd: sane numbers in JSON and text, MC/S, refusals, and a target that freezes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.initiator.ctl.helpers import ok_json, one_line_error, uiscsictl

pytestmark = pytest.mark.target


@pytest.mark.parametrize("extra", [[], ["--random"], ["--write"], ["--random", "--write"]])
def test_perf_json_reports_sane_numbers(tgtd, extra):
    t = tgtd(size_mb=16)
    doc = ok_json("perf", t.url(1), "--block-size", "64k", "--queue-depth", "4", "--seconds", "0.5", *extra)
    assert set(doc) >= {"iops", "mb_per_s", "connections", "queue_depth", "block_size", "seconds"}
    assert doc["iops"] > 0 and doc["ios"] > 0 and doc["connections"] == 1
    assert doc["queue_depth"] == 4 and doc["block_size"] == 65536 and 0.4 < doc["seconds"] < 5
    assert abs(doc["mb_per_s"] - doc["iops"] * 65536 / 2**20) < 1


def test_perf_text_output_is_one_readable_line(tgtd):
    t = tgtd(size_mb=8)
    r = uiscsictl("perf", t.url(1), "--block-size", "4k", "--queue-depth", "2", "--seconds", "0.3", "--random")
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert "\n" not in line and line.startswith("random reads of 4.0 KiB, QD 2, 1 connection(s): ")
    assert line.endswith(" s") and " IOPS, " in line and " MB/s over " in line


def test_perf_with_two_connections_uses_mcs(tgtd):
    t = tgtd(size_mb=16, params={"MaxConnections": "4"})
    doc = ok_json("perf", t.url(1), "--block-size", "4k", "--queue-depth", "8", "--seconds", "0.5",
                  "--connections", "2")
    assert doc["connections"] == 2 and doc["ios"] > 0


def test_perf_refuses_a_block_size_the_lun_cannot_do(tgtd):
    t = tgtd(size_mb=4)
    err = one_line_error(uiscsictl("perf", t.url(1), "--block-size", "8M", "--seconds", "0.2"))
    assert "larger than the LUN" in err


def test_target_that_freezes_mid_run_gives_a_clear_error_within_bounds(tgtd):
    t = tgtd(size_mb=16)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "initiator.ctl", "perf", t.url(1), "--block-size", "4k",
                             "--queue-depth", "4", "--seconds", "2", "--timeout", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # logged in and running by now
        os.kill(t.proc.pid, signal.SIGSTOP)
        out, err = proc.communicate(timeout=30)
    finally:
        os.kill(t.proc.pid, signal.SIGCONT)
        proc.kill()
    assert proc.returncode == 1 and out == "" and err.count("\n") == 1, err
    assert "did not complete within 2 s" in err
    assert time.monotonic() - start < 1 + 2 + 2 + 5 + 3  # sleep, run, bound, bounded logout, start-up
