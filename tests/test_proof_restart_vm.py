"""`bootkit vm restart-test`, short form: tgtd SIGKILLed and restarted 3 times under an fsync'd, checksummed
write stream to ext4 on /dev/nbdN in the guest; nothing may be lost. (The full form is
`bootkit vm restart-test --restarts 20`.) Budget: one guest boot. The LUN file is re-checked from the host
here with e2fsck -fn, so the test does not only trust the report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.target]


@pytest.mark.timeout(900)
def test_three_target_restarts_under_a_write_stream_lose_nothing(vm_boot_files, tmp_path):
    lun_file = tmp_path / "restart.img"
    r = subprocess.run([str(Path(sys.executable).parent / "bootkit"), "vm", "restart-test", "--restarts", "3",
                        "--lun-file", str(lun_file), "--workdir", str(tmp_path / "work"), "--json"],
                       capture_output=True, text=True, timeout=850, check=False)
    print(r.stderr)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["ok"] and all(rep["checks"].values()), rep["checks"]
    assert rep["restarts"] == 3 and rep["reconnects"] >= 1, rep
    assert rep["files_bad"] == 0 and rep["io_errors"] == 0 and rep["writer_errors"] == 0, rep
    assert rep["files_verified"] == rep["files_written"] > 0, rep
    assert rep["files_written"] >= rep["restart_log"][-1]["files_before"] + 3, rep   # more after the last restart
    assert "restart 3/3: tgtd SIGKILLed" in r.stderr                       # progress on stderr
    fsck = subprocess.run(["e2fsck", "-fn", str(lun_file)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
