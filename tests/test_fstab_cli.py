"""The fstab_tools CLI as users meet it: help, routing through `bootkit`, bad input without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit.cli import main as bootkit_main
from fstab_tools.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("word", ["fstab", "fsck", "mount", "umount"])
def test_help_teaches_with_examples(word: str, capsys) -> None:
    assert main([word, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bootkit {word}") and "examples:" in out and "-N" in out


def test_bootkit_routes_the_words_here(tmp_path: Path, capsys) -> None:
    (tmp_path / "f").write_text("tmpfs /t tmpfs defaults 0 0\n")
    assert bootkit_main(["fstab", "list", "--fstab", str(tmp_path / "f")]) == 0
    assert capsys.readouterr().out == "tmpfs /t tmpfs defaults 0 0\n"


def test_malformed_lines_go_to_stderr_as_file_line_and_the_rest_still_works(tmp_path: Path) -> None:
    f = tmp_path / "fstab"
    f.write_bytes(b"tmpfs /a tmpfs defaults 0 0\n/dev/x /b ext4 defaults zero 2\n\xff\xfe\ntmpfs /c tmpfs 0 0 0\n")
    p = subprocess.run(
        [sys.executable, "-m", "bootkit.cli", "fstab", "list", "--fstab", str(f)],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=60, errors="replace",
    )
    assert p.returncode == 0
    assert p.stderr.splitlines() == [
        f"{f}:2: freq must be a number, got 'zero'",
        f"{f}:3: missing target field (need at least source, target and fstype)",
    ]
    assert [ln.split()[1] for ln in p.stdout.splitlines()] == ["/a", "/c"]
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "argv, code",
    [(["fsck", "-p"], 8), (["mount", "-a"], 2), (["umount", "-a"], 2), (["fstab", "list"], 1)],
)
def test_a_missing_fstab_is_an_operational_error_per_command(argv: list[str], code: int, tmp_path: Path,
                                                             capsys) -> None:
    assert main([*argv, "--dry-run" if argv[0] != "fstab" else "--json", "--fstab", str(tmp_path / "no")]) == code
    err = capsys.readouterr().err
    assert err == f"bootkit {argv[0]}: {tmp_path / 'no'}: No such file or directory\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_cause_a_traceback(tmp_path: Path, capsys, data: bytes) -> None:
    f = tmp_path / "fuzz"
    f.write_bytes(data)
    mi = tmp_path / "mi"
    mi.write_text("21 1 252:0 / / rw - ext4 /dev/vda rw\n")
    for argv in (["fstab", "list", "--json"], ["fstab", "verify"], ["fsck", "-N", "-p", "--dry-run", "--json"],
                 ["mount", "-a", "--dry-run", "--mountinfo", str(mi)],
                 ["umount", "-a", "-N", "--dry-run", "--mountinfo", str(mi)]):
        code = main([*argv, "--fstab", str(f)])
        err = capsys.readouterr().err
        assert "internal error" not in err and "Traceback" not in err
        assert isinstance(code, int)


def test_unknown_word_is_refused() -> None:
    assert main(["frobnicate"]) == 2
