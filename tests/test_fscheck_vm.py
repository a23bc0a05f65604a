"""vm/fscheck/guest: a LUN the host does not read, formatted and checked from a guest over iSCSI."""

from __future__ import annotations

import pytest

from vm.fscheck.guest import LunAccess, in_guest
from vm.fscheck.host import check, create
from vm.harness import PowerCut, run_guest

pytestmark = pytest.mark.vm


@pytest.mark.target
def test_format_then_check_an_xfs_lun_in_one_guest_boot(tgtd, tmp_path):
    """The guest makes an xfs with a payload on the LUN and checks it; the host's own check of the
    backing file (which the guest never saw) agrees on both the filesystem and the payload."""
    t = tgtd(size_mb=320)
    conf = (f"initiatorname iqn.2026-11.test.bootkit:fscheck-guest\ntarget mine {{\n"
            f"    targetaddr 10.0.2.2 port {t.port}\n    targetname {t.iqn}\n    lun 1\n}}\n")
    g = in_guest(LunAccess(conf, "mine", 1), "xfs", tmp_path / "guest", ops=("format", "check"), payload_mb=2)
    assert g.exit_code == 0, g.console[-3000:]
    assert g.device and g.device.startswith("/dev/nbd") and g.digest and len(g.digest) == 64
    v = g.verdict
    assert v is not None and v.where == "guest" and v.check == "guest: xfs_repair -n"
    assert v.clean and v.payload_ok is True and v.payload_sha256 == g.digest
    host = check(t.backing[0], "xfs", expected=g.digest)
    assert host.clean and host.payload_ok is True


def test_a_power_cut_leaves_recovery_pending_and_each_types_check_sees_it(tmp_path):
    """xfs and btrfs, mounted in a guest, written (btrfs: a file fsync'd, which lives in its log tree until
    the next commit), then QEMU is killed: the host sees xfs's log dirty (xfs_repair -n warns it ignores
    the log) and btrfs's log_root set, each from its own tool."""
    disks = {t: tmp_path / f"{t}.img" for t in ("xfs", "btrfs")}
    for t, path in disks.items():
        create(path, t, payload_mb=1)
        assert not check(path, t).needs_recovery
    script = """#!/bin/sh
mkdir -p /mnt/x /mnt/b
mount -t xfs /dev/vda /mnt/x && mount -t btrfs /dev/vdb /mnt/b || exit 9
for m in /mnt/x /mnt/b; do
    dd if=/dev/urandom of=$m/new.bin bs=1M count=4 conv=fsync 2>/dev/null
    mkdir $m/dir1 && touch $m/dir1/a $m/dir1/b
done
python3 -c "import os; fd = os.open('/mnt/b/dir1/a', os.O_WRONLY); os.write(fd, b'x' * 5000); os.fsync(fd)"
echo "cut now"
sleep 120
"""
    r = run_guest(script=script, disks=list(disks.values()), timeout=300, results_dir=tmp_path / "res",
                  power_cut=PowerCut(marker="cut now", delay=0.3))
    assert r.power_cut and r.exit_code is None, r.console[-2000:]
    x, b = check(disks["xfs"], "xfs"), check(disks["btrfs"], "btrfs")
    assert x.needs_recovery and "state <DIRTY>" in x.recovery_evidence and not x.clean
    assert any("valuable metadata changes in a log" in line for line in x.problems + x.tail)
    assert b.needs_recovery and not b.recovery_evidence.endswith("log_root 0") and not b.clean
