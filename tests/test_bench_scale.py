"""bench/scale.py: the growth-per-doubling arithmetic and the table (pure; the guest run is a command, not a test)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import scale

ROWS = [{"luns": 1, "attach_seconds": 2.0, "rss_mib": 30.0, "show_ms": 1.0},
        {"luns": 8, "attach_seconds": 16.0, "rss_mib": 40.0, "show_ms": 8.0},
        {"luns": 32, "attach_seconds": 100.0, "rss_mib": 50.0, "show_ms": 32.0}]


def test_growth_is_per_doubling_of_the_lun_count():
    steps = scale.per_doubling(ROWS)
    assert [(s["from"], s["to"]) for s in steps] == [(1, 8), (8, 32)]
    assert steps[0]["attach_seconds"] == 2.0        # 8x over three doublings
    assert steps[1]["show_ms"] == 2.0               # 4x over two doublings
    assert steps[1]["attach_seconds"] == 2.5        # 6.25x over two doublings: over the bar


def test_the_table_flags_a_step_over_the_bar():
    meta = {"guest_cpus": 2, "guest_seconds": 100.0, "loadavg_before": [1.0], "loadavg_after": [2.0], "date": "d"}
    text = scale.table(ROWS, meta)
    over = [ln for ln in text.splitlines() if "OVER" in ln]
    assert len(over) == 1 and over[0].lstrip().startswith("8 -> 32") and "attach_seconds" in over[0].split("OVER")[1]


def test_sizes_must_increase():
    with pytest.raises(SystemExit):
        scale.main(["--sizes", "8", "1"])
