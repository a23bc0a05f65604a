"""The target fixtures themselves start real targets that an independent initiator (libiscsi) can read."""

import subprocess

import pytest

pytestmark = pytest.mark.target


def test_tgtd_serves_a_disk_that_libiscsi_sees(tgtd):
    t = tgtd(size_mb=16)
    out = subprocess.run(["iscsi-readcapacity16", t.url(1)], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert "Totalsize:16777216" in out.stdout.replace(" ", "")


def test_istgt_serves_a_disk_that_libiscsi_sees(istgt):
    t = istgt(size_mb=16)
    out = subprocess.run(["iscsi-readcapacity16", t.url(0)], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert "Totalsize:16777216" in out.stdout.replace(" ", "")
