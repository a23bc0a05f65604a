"""`uiscsictl cp` between local files and its refusals (no target needed; LUNs are in test_copy_targets.py)."""

from __future__ import annotations

import json
import os

from tests.initiator.ctl.helpers import run


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
