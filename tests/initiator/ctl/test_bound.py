"""`ctl.bound`: the --timeout budget of the one-shot tools and its watchdog (no target needed)."""

from __future__ import annotations

import subprocess
import sys
import time

from initiator.ctl.bound import CLEANUP_GRACE, LOGOUT_MAX, WATCHDOG_SLACK, Budget, process_age


def test_process_age_counts_from_this_process_start():
    age = process_age()
    assert 0 < age < 3600
    time.sleep(0.05)
    assert process_age() >= age + 0.04


def test_a_whole_run_budget_counts_from_the_process_start_and_runs_down():
    b = Budget(process_age() + 30.0)          # T counts from exec: this process started a while ago
    assert 29.5 < b.wait() <= 30.05
    gone = Budget(1.0, started=time.monotonic() - 5)
    assert gone.wait() == 0.0
    assert gone.logout(after_timeout=False) == CLEANUP_GRACE / 2   # never less than the grace
    fresh = Budget(60.0, started=time.monotonic())   # (this test process may be older than 60 s)
    assert fresh.logout(after_timeout=False) == LOGOUT_MAX
    assert fresh.logout(after_timeout=True) == CLEANUP_GRACE / 2


def test_a_per_wait_budget_gives_each_wait_the_whole_timeout():
    b = Budget(7.0, whole_run=False, started=time.monotonic() - 100)
    assert b.wait() == 7.0 and b.describe() == "7 s"


def test_the_watchdog_ends_a_process_that_outlives_its_bound_with_one_line():
    code = ("import time; from initiator.ctl.bound import Budget, start_watchdog; "
            "start_watchdog(Budget(0.5), 'uiscsictl'); time.sleep(30)")
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    took = time.monotonic() - start
    assert r.returncode == 1 and r.stderr == "uiscsictl: gave up: the run did not end within --timeout 0.5 s\n"
    assert 0.5 + WATCHDOG_SLACK - 0.1 < took < 0.5 + 1, took
