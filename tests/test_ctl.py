"""The uiscsictl front: parsing, help, one-line errors and output formatting (no target needed)."""

import io
import json
import os
import socket

import pytest

from initiator.ctl import uiscsictl as ctl
from initiator.ctl.progress import Progress, human_bytes, parse_size

IQN = "iqn.2026-11.test.bootkit:none"


def run(capsys, *argv):
    code = ctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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


def test_cp_from_a_missing_file_names_the_file(capsys, tmp_path):
    code, _, err = run(capsys, "cp", str(tmp_path / "nope.img"), str(tmp_path / "out.img"))
    assert code == 1 and err == f"uiscsictl: {tmp_path / 'nope.img'}: No such file or directory\n"


def test_cp_onto_itself_is_refused(capsys, tmp_path):
    f = tmp_path / "a.img"
    f.write_bytes(b"x" * 4096)
    code, _, err = run(capsys, "cp", str(f), str(f))
    assert code == 1 and "are the same file" in err and f.read_bytes() == b"x" * 4096


def test_cp_between_local_files_copies_and_reports_json(capsys, tmp_path):
    src, dst = tmp_path / "a.img", tmp_path / "b.img"
    data = bytes(range(256)) * 4099  # not a multiple of anything
    src.write_bytes(data)
    dst.write_bytes(b"old contents that are longer than nothing" * 100000)
    code, out, _ = run(capsys, "cp", "--json", "--chunk-size", "64k", str(src), str(dst))
    assert code == 0 and dst.read_bytes() == data
    doc = json.loads(out)
    assert doc["bytes"] == len(data) and doc["source"] == str(src)


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


# --------------------------------------------------------------------------------------- formatting


def test_sizes_parse_with_binary_suffixes():
    assert [parse_size(t) for t in ("512", "4k", "4K", "1M", "1MiB", "2g")] == [512, 4096, 4096, 1 << 20,
                                                                              1 << 20, 2 << 30]
    with pytest.raises(ValueError):
        parse_size("lots")


def test_human_bytes():
    assert human_bytes(512) == "512 B" and human_bytes(64 << 20) == "64.0 MiB"


def test_progress_bar_draws_only_when_enabled():
    on, off = io.StringIO(), io.StringIO()
    p = Progress(1000, "cp", stream=on, enabled=True)
    q = Progress(1000, "cp", stream=off, enabled=False)
    for bar in (p, q):
        bar.advance(1000)
        bar.finish()
    assert "100%" in on.getvalue() and on.getvalue().endswith("\n") and "cp [" in on.getvalue()
    assert off.getvalue() == ""


def test_cp_from_a_directory_names_it(capsys, tmp_path):
    code, _, err = run(capsys, "cp", str(tmp_path), str(tmp_path / "out.img"))
    assert code == 1 and err == f"uiscsictl: {tmp_path}: Is a directory\n"


def test_cp_to_a_full_device_names_it(capsys, tmp_path):
    src = tmp_path / "a.img"
    src.write_bytes(b"y" * 8192)
    code, _, err = run(capsys, "cp", str(src), "/dev/full")
    assert code == 1 and err == "uiscsictl: /dev/full: No space left on device\n"


def test_cp_to_dev_null_succeeds(capsys, tmp_path):
    src = tmp_path / "a.img"
    src.write_bytes(b"z" * 10000)
    code, out, _ = run(capsys, "cp", str(src), "/dev/null")
    assert code == 0 and out.startswith("copied 10000 bytes")


def test_cp_draws_a_progress_bar_when_stderr_is_a_terminal(tmp_path):
    import os
    import pty
    import subprocess
    import sys

    src = tmp_path / "a.img"
    src.write_bytes(bytes(3 << 20))
    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "initiator.ctl", "cp", str(src), str(tmp_path / "b.img")],
                           stdout=subprocess.PIPE, stderr=slave, timeout=60, check=False)
        os.close(slave)
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(master)
    assert r.returncode == 0 and r.stdout.startswith(b"copied 3145728 bytes")
    assert b"cp [" in drawn and b"100%" in drawn and b"3.0 MiB/3.0 MiB" in drawn


def test_cp_reads_stdin_when_it_is_a_file_and_refuses_a_pipe(tmp_path):
    import subprocess
    import sys

    src, dst = tmp_path / "a.img", tmp_path / "b.img"
    src.write_bytes(bytes(range(256)) * 300)
    cmd = [sys.executable, "-m", "initiator.ctl", "cp", "-", str(dst)]
    with open(src, "rb") as stdin:
        r = subprocess.run(cmd, stdin=stdin, capture_output=True, timeout=60, check=False)
    assert r.returncode == 0 and dst.read_bytes() == src.read_bytes()
    r = subprocess.run(cmd, input=b"x" * 100, capture_output=True, timeout=60, check=False)
    assert r.returncode == 1
    assert r.stderr == b"uiscsictl: <stdin> is a pipe: cp needs a source whose size is known (a file, a device or a URL)\n"


def test_cp_to_stdout_streams_in_order_and_reports_on_stderr(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "a.img"
    src.write_bytes(os.urandom((3 << 20) + 17))
    r = subprocess.run([sys.executable, "-m", "initiator.ctl", "cp", "--chunk-size", "64k", "--queue-depth", "8",
                        str(src), "-"], capture_output=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout == src.read_bytes()
    assert r.stderr.startswith(b"copied 3145745 bytes")
