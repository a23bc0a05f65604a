"""Bugs the fuzzers found that are not fixed yet: crash signature -> (target, reproducer, what is wrong).

A run reports these as "known" and does not fail on them; every entry has a reproducer in
tests/fuzz/crashes/ and a strict xfail test in tests/test_fuzz_short.py, so the fix that makes the
reproducer pass turns that test red until the entry is removed here. The reproducer stays: every file in
tests/fuzz/crashes/ without an entry here is a regression test that must pass, and a seed of its target.
"""

from __future__ import annotations

KNOWN: dict[str, tuple[str, str, str]] = {
}
