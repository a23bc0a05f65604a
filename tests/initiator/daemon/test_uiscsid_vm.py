"""uiscsid in the QEMU guest attaches a LUN of a host tgtd (at 10.0.2.2) as /dev/nbdN: the whole path.

Budget: one guest boot. In the guest: uiscsid --attach ioctl (flagged no-broadcast-kill) + uiscsictl
reload, the /dev/disk/by-iscsi link, mkfs.ext4, mount, write, sync; detach and a changing reload refused
while mounted; fsync'd writes go on while the host restarts tgtd (no error may reach the writer); SIGTERM
keeps serving the mounted device until umount, then exits. Then the default attach (netlink on this
kernel): SIGTERM under a mounted filesystem leaves its device to the kernel, a write waits, and a new
uiscsid takes the device over. On the host: the files tgtd serves are read with debugfs, so the data went
through iSCSI.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.target]

HOST_IQN = "iqn.2026-11.test.bootkit:guest"

GUEST = r"""#!/bin/sh
set -u
R=/results
modprobe nbd
conf() {{
    printf 'initiatorname {host_iqn}\ntarget disk {{\n targetaddr 10.0.2.2 port {port}\n' > /tmp/uiscsi.conf
    printf ' targetname {iqn}\n %s\n}}\n' "$1" >> /tmp/uiscsi.conf
}}
conf ""
uiscsid -d --attach ioctl > $R/uiscsid.log 2>&1 &
PID=$!
for i in $(seq 200); do test -S /run/uiscsid.sock && break; sleep 0.05; done
uiscsictl reload -f /tmp/uiscsi.conf --wait 30 > $R/reload.out 2>&1; echo $? > $R/reload.rc
tr '\0' ' ' < /proc/$PID/cmdline > $R/cmdline
uiscsictl show luns --json > $R/luns.json
LINK=/dev/disk/by-iscsi/{iqn}-lun1
readlink -f $LINK > $R/link
readlink -f /dev/disk/by-iscsi/{iqn}-lun2 > $R/link2
mkfs.ext4 -q -F -L iscsi $LINK; echo $? > $R/mkfs.rc
mkdir -p /mnt/t
mount -t ext4 $LINK /mnt/t; echo $? > $R/mount.rc
i=0; while [ $i -lt 500 ]; do echo "line $i through uiscsid"; i=$((i+1)); done > /mnt/t/data.txt
sync
uiscsictl detach disk > $R/detach_mounted.out 2>&1; echo $? > $R/detach_mounted.rc
conf "header_digest crc32c"
uiscsictl reload -f /tmp/uiscsi.conf > $R/reload_busy.out 2>&1; echo $? > $R/reload_busy.rc
# a writer (fsync after each 64 KiB); after its 5th write the host restarts tgtd; it goes on through
# the outage and stops 20 writes after the target is back
n=0; extra=0; bad=0
while [ $n -lt 400 ] && [ $extra -lt 20 ]; do
    dd if=/dev/urandom of=/mnt/t/stream bs=64k count=1 oflag=append conv=notrunc,fsync 2>> $R/dd.err || bad=$((bad+1))
    n=$((n+1)); [ $n -eq 5 ] && touch $R/restart-now
    test -e $R/restart-done && extra=$((extra+1))
done
echo "$n $bad" > $R/writer
md5sum < /mnt/t/stream | cut -d' ' -f1 > $R/stream.md5
dmesg | grep -c -i "i/o error" > $R/ioerrors
dmesg | grep -i -e nbd -e "i/o error" > $R/dmesg
uiscsictl show stats --json > $R/stats.json
kill -TERM $PID
sleep 3
kill -0 $PID 2> /dev/null; echo $? > $R/alive_after_term
echo "written after SIGTERM" > /mnt/t/after.txt; sync
umount /mnt/t; echo $? > $R/umount.rc
wait $PID; echo $? > $R/daemon.rc
test -e $LINK; echo $? > $R/link_gone
# the default attach (netlink here): a uiscsid restarted under a mounted filesystem takes its device over
uiscsid -d > $R/uiscsid2.log 2>&1 &
PID=$!
for i in $(seq 200); do test -S /run/uiscsid.sock && break; sleep 0.05; done
uiscsictl reload -f /tmp/uiscsi.conf --wait 30 > $R/reload2.out 2>&1; echo $? > $R/reload2.rc
uiscsictl show luns --json > $R/luns2.json
L2=/dev/disk/by-iscsi/{iqn}-lun2
readlink -f $L2 > $R/link2a
mkfs.ext4 -q -F -L kept $L2
mkdir -p /mnt/k
mount -t ext4 $L2 /mnt/k; echo $? > $R/mount2.rc
echo "before the restart" > /mnt/k/before.txt; sync
kill -TERM $PID; wait $PID; echo $? > $R/daemon2.rc
(echo "after the restart" > /mnt/k/after.txt; sync; touch $R/writer2.done) &
W=$!
sleep 1; test -e $R/writer2.done; echo $? > $R/writer2_waited
uiscsid -d > $R/uiscsid3.log 2>&1 &
PID=$!
for i in $(seq 200); do test -S /run/uiscsid.sock && break; sleep 0.05; done
uiscsictl reload -f /tmp/uiscsi.conf --wait 30 > $R/reload3.out 2>&1; echo $? > $R/reload3.rc
wait $W; echo $? > $R/writer2.rc
readlink -f $L2 > $R/link2b
umount /mnt/k; echo $? > $R/umount2.rc
dmesg | grep -c -i "i/o error" > $R/ioerrors2
kill -TERM $PID; wait $PID; echo $? > $R/daemon3.rc
"""


def test_uiscsid_serves_ext4_from_a_host_lun_through_restarts_refusals_and_sigterm(vm_guest, tgtd, tmp_path):
    t = tgtd(size_mb=64, luns=2)        # no `lun` line: every disk LUN (1 and 2; tgt's LUN 0 is not a disk)
    res = tmp_path / "results"
    res.mkdir()
    restarted = []

    def restarter() -> None:
        deadline = time.monotonic() + 280
        while not (res / "restart-now").exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        t.restart(down_for=2.0)
        restarted.append(time.monotonic())
        (res / "restart-done").write_text("1")

    th = threading.Thread(target=restarter, daemon=True)
    th.start()
    r = vm_guest(script=GUEST.format(host_iqn=HOST_IQN, port=t.port, iqn=t.iqn), net=True, timeout=400,
                 results_dir=res)
    th.join(5)

    def text(name: str) -> str:
        return (res / name).read_text().strip()

    log = (res / "uiscsid.log").read_text() if (res / "uiscsid.log").exists() else "(no log)"
    assert r.exit_code == 0, r.console[-3000:] + log
    assert text("reload.rc") == "0", text("reload.out") + log
    assert text("cmdline").startswith("@uiscsid"), log
    lun, lun2 = json.loads(text("luns.json"))["luns"]
    assert (lun["lun"], lun["size"], lun["block_size"], lun2["lun"]) == (1, 64 << 20, 512, 2)
    assert text("link") == lun["device"] and lun["device"].startswith("/dev/nbd")
    assert (lun["attach"], lun["link_by"], lun["link_present"]) == ("ioctl", "daemon", True), lun  # no udev here
    assert text("link2") == lun2["device"] != lun["device"]
    assert (text("mkfs.rc"), text("mount.rc"), text("umount.rc")) == ("0", "0", "0"), log
    assert text("detach_mounted.rc") == "1" and "mounted on /mnt/t" in text("detach_mounted.out")
    assert text("reload_busy.rc") == "1" and "in use" in text("reload_busy.out"), text("reload_busy.out")
    # the tgtd restart happened while the writer ran, and the writer saw no error
    assert restarted, "the host never restarted tgtd"
    n, bad = map(int, text("writer").split())
    assert bad == 0 and 25 <= n < 400, (text("writer"), (res / "dd.err").read_text())
    assert text("ioerrors") == "0", text("dmesg")
    (st,) = json.loads(text("stats.json"))["stats"]
    assert st["session"]["reconnects"] >= 1, st
    io = st["luns"]["1"]
    assert io["completed_error"] == 0 and io["bytes_written"] > 1 << 20 and io["max_in_flight"] > 1
    # SIGTERM kept serving the mounted device, and the daemon exited once it was unmounted
    assert text("alive_after_term") == "0" and text("daemon.rc") == "0" and text("link_gone") == "1", log
    files = {name: subprocess.run(["debugfs", "-R", f"cat /{name}", str(t.backing[0])], check=True,
                                  capture_output=True, timeout=30).stdout
             for name in ("data.txt", "stream", "after.txt")}
    assert files["data.txt"].decode() == "".join(f"line {i} through uiscsid\n" for i in range(500))
    assert hashlib.md5(files["stream"]).hexdigest() == text("stream.md5")
    assert len(files["stream"]) == n * 65536
    assert files["after.txt"] == b"written after SIGTERM\n"
    # netlink: SIGTERM left the mounted LUN 2 to the kernel, the next uiscsid took it over
    log3 = (res / "uiscsid3.log").read_text()
    assert (text("reload2.rc"), text("mount2.rc"), text("daemon2.rc")) == ("0", "0", "0"), text("reload2.out")
    assert text("writer2_waited") == "1", "the write finished while no daemon served the device"
    assert (text("reload3.rc"), text("writer2.rc"), text("umount2.rc")) == ("0", "0", "0"), text("reload3.out")
    assert text("link2b") == text("link2a") and "took over" in log3, log3
    assert {x["attach"] for x in json.loads(text("luns2.json"))["luns"]} == {"netlink"}  # the default
    assert text("ioerrors2") == "0" and text("daemon3.rc") == "0"
    for name, want in (("before.txt", b"before the restart\n"), ("after.txt", b"after the restart\n")):
        got = subprocess.run(["debugfs", "-R", f"cat /{name}", str(t.backing[1])], check=True,
                             capture_output=True, timeout=30).stdout
        assert got == want, name
