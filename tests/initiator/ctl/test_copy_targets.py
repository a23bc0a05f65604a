"""`uiscsictl cp` against real targets; data checked with independent readers: the target's backing file
and qemu-img (libiscsi).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from tests.initiator.ctl.helpers import ok_json, one_line_error, sha256, uiscsictl

pytestmark = pytest.mark.target


def test_cp_round_trip_file_to_lun_to_file_is_verified_independently(tgtd, tmp_path):
    t = tgtd(size_mb=32)
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom((20 << 20) + 1234))  # ends mid-block: padded with zeros on the LUN
    doc = ok_json("cp", "--queue-depth", "8", str(src), t.url(1))
    assert doc["bytes"] == src.stat().st_size
    # independent reader 1: the target's backing file
    with open(t.backing[0], "rb") as f:
        on_disk = f.read(src.stat().st_size + 512)
    assert on_disk[:src.stat().st_size] == src.read_bytes()
    assert on_disk[src.stat().st_size:] == bytes(512 - 1234 % 512) + on_disk[src.stat().st_size + 512 - 1234 % 512:]
    # independent reader 2: qemu-img through libiscsi
    q = tmp_path / "qemu.img"
    subprocess.run(["qemu-img", "dd", "-f", "raw", "-O", "raw", f"if={t.url(1)}", f"of={q}", "bs=1M",
                    "count=21"], check=True, capture_output=True, timeout=60)
    assert sha256(q, src.stat().st_size) == sha256(src)
    # and back again: the whole LUN comes back, same bytes as the backing file
    back = tmp_path / "back.img"
    r = uiscsictl("cp", t.url(1), str(back))
    assert r.returncode == 0 and r.stdout.startswith(f"copied {32 << 20} bytes"), r.stderr
    assert sha256(back) == sha256(t.backing[0])


def test_cp_with_header_and_data_digests(tgtd, tmp_path):
    t = tgtd(size_mb=8, params={"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(8 << 20))
    url = t.url(1) + "?header_digest=crc32c&data_digest=crc32c"
    session = ok_json("inquiry", url)["session"]
    assert session["header_digest"] and session["data_digest"]
    ok_json("cp", str(src), url)
    assert sha256(t.backing[0]) == sha256(src)
    assert ok_json("inquiry", t.url(1))["session"]["header_digest"] is False


def test_cp_survives_connection_resets_and_the_data_is_intact(tgtd, tmp_path):
    from tests.proxy import ResetProxy

    t = tgtd(size_mb=32)
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(24 << 20))
    with ResetProxy("127.0.0.1", t.port, reset_every=4 << 20, max_resets=4) as proxy:
        doc = ok_json("cp", str(src), f"iscsi://127.0.0.1:{proxy.port}/{t.iqn}/1")
        assert proxy.resets >= 3
    assert doc["bytes"] == 24 << 20
    assert sha256(t.backing[0], 24 << 20) == sha256(src)


def test_cp_lun_to_stdout_streams_the_whole_lun(tgtd):
    t = tgtd(size_mb=8)
    with open(t.backing[0], "r+b") as f:
        f.write(os.urandom(8 << 20))
    r = subprocess.run([sys.executable, "-m", "initiator.ctl", "cp", t.url(1), "-"], capture_output=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == sha256(t.backing[0])


def test_cp_lun_to_lun(tgtd):
    a, b = tgtd(size_mb=8), tgtd(size_mb=8)
    with open(a.backing[0], "r+b") as f:
        f.write(os.urandom(8 << 20))
    ok_json("cp", a.url(1), b.url(1))
    assert sha256(a.backing[0]) == sha256(b.backing[0])


def test_cp_onto_a_smaller_lun_is_refused(tgtd, tmp_path):
    t = tgtd(size_mb=4)
    src = tmp_path / "big.img"
    src.write_bytes(bytes(5 << 20))
    err = one_line_error(uiscsictl("cp", str(src), t.url(1)))
    assert f"holds {4 << 20} bytes, the source has {5 << 20}" in err


def test_cp_to_istgt_round_trip(istgt, tmp_path):
    t = istgt(size_mb=8)
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(8 << 20))
    ok_json("cp", str(src), t.url(0))
    assert sha256(t.backing) == sha256(src)
