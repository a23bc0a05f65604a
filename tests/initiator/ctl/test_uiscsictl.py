"""The uiscsictl front: parsing, help, one-line errors and exit codes (no target needed)."""

from __future__ import annotations

import re
import socket

import pytest

from initiator.ctl import uiscsictl as ctl
from tests.initiator.ctl.helpers import run

IQN = "iqn.2026-11.test.bootkit:none"


def test_help_lists_every_tool_and_teaches_with_examples(capsys):
    with pytest.raises(SystemExit) as e:
        ctl.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for word in ("discover", "inquiry", "capacity", "luns", "cp", "perf", "examples:", "LIBISCSI_CHAP"):
        assert word in out


@pytest.mark.parametrize("word", ["discover", "inquiry", "capacity", "luns", "cp", "perf"])
def test_each_tool_has_help_with_an_example(capsys, word):
    with pytest.raises(SystemExit):
        ctl.main([word, "--help"])
    out = capsys.readouterr().out
    assert "example" in out and "--json" in out and "--timeout" in out


def _subcommands() -> list[str]:
    parser = ctl.build_parser([])
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("word", _subcommands())
def test_every_subcommand_help_renders_cleanly(word, capsys):
    """argparse %-formats help strings: a stray '%' once printed its internals in place of the URL form."""
    with pytest.raises(SystemExit) as e:
        ctl.main([word, "--help"])
    out, err = capsys.readouterr()
    assert e.value.code == 0 and err == ""
    assert out.startswith(f"usage: uiscsictl {word}")
    for leak in ("{'option_strings'", "%(", "%%", "Traceback"):
        assert leak not in out, f"{word} --help shows {leak!r}:\n{out}"
    if re.search(r"^  URL ", out, re.MULTILINE):  # a URL argument: its form survives formatting intact
        assert "iscsi://[user[%secret]@]host[:port]/IQN" in out


def test_main_help_lists_the_new_url_arguments(capsys):
    with pytest.raises(SystemExit):
        ctl.main(["--help"])
    out = capsys.readouterr().out
    for arg in ("chap_algorithms=", "max_connections=", "erl=0|1", "md5, sha1, sha256"):
        assert arg in out


def test_no_command_prints_usage_and_exits_2(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage:" in err


def test_usage_error_is_one_prefixed_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        ctl.main(["perf", f"iscsi://h/{IQN}/1", "--queue-depth", "0"])
    assert e.value.code == 2
    assert "uiscsictl: argument --queue-depth: '0' is not a number in 1..1024" in capsys.readouterr().err


def test_global_options_work_before_and_after_the_tool(capsys):
    parser = ctl.build_parser()
    a = parser.parse_args(["--json", "--timeout", "3", "capacity", f"iscsi://h/{IQN}/1"])
    b = parser.parse_args(["capacity", f"iscsi://h/{IQN}/1", "--json", "--timeout", "3"])
    c = parser.parse_args(["capacity", f"iscsi://h/{IQN}/1"])
    assert (a.json, a.timeout) == (b.json, b.timeout) == (True, 3.0)
    assert (c.json, c.timeout, c.debug, c.socket) == (False, 20.0, False, "/run/uiscsid.sock")


def test_bad_url_is_one_line_without_traceback(capsys):
    code, out, err = run(capsys, "capacity", "iscsi://host/only-one-part")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("uiscsictl: URL iscsi://host/only-one-part")
    assert "Traceback" not in err


def test_nothing_listening_is_a_one_line_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        code, out, err = run(capsys, "capacity", "--timeout", "5", f"iscsi://127.0.0.1:{port}/{IQN}/1")
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot connect to 127.0.0.1:{port}" in err


def test_debug_shows_the_traceback(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code, _, err = run(capsys, "--debug", "capacity", "--timeout", "5", f"iscsi://127.0.0.1:{port}/{IQN}/1")
    assert code == 1 and "Traceback" in err
