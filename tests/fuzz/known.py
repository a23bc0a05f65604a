"""Bugs the fuzzers found that are not fixed yet: crash signature -> (target, reproducer, what is wrong).

A run reports these as "known" and does not fail on them; every entry has a reproducer in
tests/fuzz/crashes/ and a strict xfail test in tests/test_fuzz_short.py, so the fix that makes the
reproducer pass turns that test red until the entry is removed here. The reproducer stays: every file in
tests/fuzz/crashes/ without an entry here is a regression test that must pass, and a seed of its target.
"""

from __future__ import annotations

KNOWN: dict[str, tuple[str, str, str]] = {
    "oracle:control-hang": (
        "control", "control-reload-detach-hang.bin",
        ("detach never answers, and holds the reload/detach lock for good, when it cancels a target that a "
         "reload just kicked out of its login backoff: TargetRuntime._pause's asyncio.wait_for (Python 3.11) "
         "swallows the cancel when retry_now is already set, so stop() awaits a login loop that goes on "
         "forever; seen with the real uiscsid when a client writes reload and detach in one go")),
}
