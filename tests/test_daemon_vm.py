"""uiscsid in the QEMU guest attaches a LUN of a host tgtd (at 10.0.2.2) as /dev/nbdN: the whole path.

Budget: one guest boot. In the guest: uiscsid (flagged no-broadcast-kill) + uiscsictl reload, the
/dev/disk/by-iscsi link, mkfs.ext4, mount, write, sync, a refused detach while mounted, umount, detach,
SIGTERM. On the host: the file tgtd serves is read with debugfs, so the data went through iSCSI.
"""

from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.target]

HOST_IQN = "iqn.2026-11.test.bootkit:guest"

GUEST = r'''#!/bin/sh
set -u
R=/results
modprobe nbd
cat > /tmp/uiscsi.conf <<EOF
initiatorname {host_iqn}
target disk {{
    targetaddr 10.0.2.2 port {port}
    targetname {iqn}
    lun 1
}}
EOF
uiscsid -d > $R/uiscsid.log 2>&1 &
PID=$!
for i in $(seq 100); do uiscsictl show > /dev/null 2>&1 && break; sleep 0.1; done
tr '\0' ' ' < /proc/$PID/cmdline > $R/cmdline
uiscsictl reload -f /tmp/uiscsi.conf --wait 30 > $R/reload.out 2>&1; echo $? > $R/reload.rc
uiscsictl show luns --json > $R/luns.json
LINK=/dev/disk/by-iscsi/{iqn}-lun1
readlink -f $LINK > $R/link
mkfs.ext4 -q -F -L iscsi $LINK; echo $? > $R/mkfs.rc
mkdir -p /mnt/t
mount -t ext4 $LINK /mnt/t; echo $? > $R/mount.rc
i=0; while [ $i -lt 500 ]; do echo "line $i through uiscsid"; i=$((i+1)); done > /mnt/t/data.txt
sync
uiscsictl detach disk > $R/detach_mounted.out 2>&1; echo $? > $R/detach_mounted.rc
umount /mnt/t; echo $? > $R/umount.rc
uiscsictl show stats --json > $R/stats.json
uiscsictl detach disk > $R/detach.out 2>&1; echo $? > $R/detach.rc
test -e $LINK; echo $? > $R/link_gone
kill -TERM $PID
wait $PID; echo $? > $R/daemon.rc
'''


def test_uiscsid_attaches_a_host_lun_for_ext4_and_the_data_lands_on_the_target(vm_guest, tgtd):
    t = tgtd(size_mb=64)
    r = vm_guest(script=GUEST.format(host_iqn=HOST_IQN, port=t.port, iqn=t.iqn), net=True, timeout=300)
    res = r.results_dir

    def text(name: str) -> str:
        return (res / name).read_text().strip()

    log = (res / "uiscsid.log").read_text() if (res / "uiscsid.log").exists() else "(no log)"
    assert r.exit_code == 0, r.console[-3000:] + log
    assert text("cmdline").startswith("@uiscsid"), log
    assert text("reload.rc") == "0", text("reload.out") + log
    (lun,) = json.loads(text("luns.json"))["luns"]
    assert (lun["lun"], lun["size"], lun["block_size"]) == (1, 64 << 20, 512)
    assert text("link") == lun["device"] and lun["device"].startswith("/dev/nbd")
    assert (text("mkfs.rc"), text("mount.rc"), text("umount.rc")) == ("0", "0", "0"), log
    assert text("detach_mounted.rc") == "1" and "mounted on /mnt/t" in text("detach_mounted.out")
    assert text("detach.rc") == "0" and text("link_gone") == "1"
    assert text("daemon.rc") == "0"
    (st,) = json.loads(text("stats.json"))["stats"]
    io = st["luns"]["1"]
    assert io["completed_error"] == 0 and io["bytes_written"] > 1 << 20 and io["max_in_flight"] > 1
    out = subprocess.run(["debugfs", "-R", "cat /data.txt", str(t.backing[0])], check=True,
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "".join(f"line {i} through uiscsid\n" for i in range(500))
