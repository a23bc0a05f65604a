"""Bugs the fuzzers found that are not fixed yet: crash signature -> (target, reproducer, what is wrong).

A run reports these as "known" and does not fail on them; every entry has a reproducer in
tests/fuzz/crashes/ and a strict xfail test in tests/test_fuzz_short.py, so the fix that makes the
reproducer pass turns that test red until the entry is removed here.
"""

from __future__ import annotations

KNOWN: dict[str, tuple[str, str, str]] = {
    "ValueError in config.py:parse_file": (
        "config", "config-nul-include.bin",
        ("a NUL byte in an include path: os.path.realpath raises ValueError (embedded null byte), which "
        "escapes parse_file as a traceback instead of a file:line error")),
    "ValueError in config.py:read_secret": (
        "config", "config-nul-secret-file.bin",
        ("a NUL byte in a secret-file path: os.open raises ValueError (embedded null byte), which escapes "
        "parse_file as a traceback instead of a file:line error")),
    "oracle:framer-decoder:ahs": (
        "pdu", "pdu-datain-ahs-streamed.bin",
        ("Framer hands a Data-In's handler ahs=b'' when the payload arrives over several reads "
        "(_take_trailer), but the real AHS when the PDU arrives in one read; SessionCore ignores Data-In "
        "AHS, so nothing breaks today, but what the handler sees depends on TCP segmentation")),
}
