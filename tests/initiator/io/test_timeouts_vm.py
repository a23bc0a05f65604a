"""Command timeouts through the kernel: uiscsid in the guest serves ext4 on /dev/nbdN from a host tgtd behind
`tests.stall_proxy.StallProxy`, which stalls chosen WRITEs (by LBA) while NOPs and everything else flow.

(a) a WRITE lost on the way once: uiscsid aborts it, the abort is answered "Function complete", the write
    is sent again, and the application's O_DIRECT write succeeds: the file reads back intact.
(b) a WRITE the target never answers: ABORT TASK, LOGICAL UNIT RESET, session reinstatement, then EIO to
    the application within the configured bound (3 x command + abort + lu_reset + replacement), for that
    request only; once the proxy heals, the rest of the filesystem works, the same blocks can be written,
    and after unmount the host's e2fsck -fn finds the LUN clean.
The escalation timeline is read from the proxy (what crossed the wire, host clock) and printed.
Budget: one guest boot.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from pathlib import Path

import pytest

from initiator.protocol.escalation import Timeouts
from initiator.scsi.describe import WRITES
from tests.stall_proxy import Match, StallProxy

pytestmark = [pytest.mark.vm, pytest.mark.target]
HOST_IQN = "iqn.2026-11.test.bootkit:faults"
LIMITS = Timeouts(command=3, abort=2, lu_reset=2, replacement=6)

GUEST = r"""#!/bin/sh
set -u
R=/results
modprobe nbd
cat > /tmp/uiscsi.conf <<EOF
initiatorname {host_iqn}
target disk {{
 targetaddr 10.0.2.2 port {port}
 targetname {iqn}
 command_timeout {c:g}; abort_timeout {a:g}; lu_reset_timeout {l:g}; replacement_timeout {r:g}
 lun 1
}}
EOF
uiscsid -d > $R/uiscsid.log 2>&1 &
PID=$!
for i in $(seq 200); do test -S /run/uiscsid.sock && break; sleep 0.05; done
uiscsictl reload -f /tmp/uiscsi.conf --wait 60 > $R/reload.out 2>&1; echo $? > $R/reload.rc
DEV=/dev/disk/by-iscsi/{iqn}-lun1
mkfs.ext4 -q -F $DEV && mkdir -p /mnt/t && mount -t ext4 $DEV /mnt/t; echo $? > $R/mount.rc
now() {{ date +%s.%N; }}
lba_of() {{ filefrag -v -b512 "$1" | awk '$1 == "0:" {{ sub(/\.\..*/, "", $4); print $4; exit }}'; }}
ask() {{   # ask the host for a proxy rule and wait until it is in place
    echo "$2" > $R/$1.part && mv $R/$1.part $R/$1.request   # whole, or not there: the host polls
    for i in $(seq 300); do test -e $R/$1.ready && return 0; sleep 0.1; done
    return 1
}}
md5() {{ md5sum < "$1" | cut -d' ' -f1; }}
# (a) one WRITE lost on the way
dd if=/dev/urandom of=/mnt/t/a.bin bs=64k count=1 conv=fsync 2> /dev/null
head -c 65536 /dev/urandom > /tmp/a.new; md5 /tmp/a.new > $R/a.md5
L=$(lba_of /mnt/t/a.bin); echo $L > $R/a.lba
ask a "lose $L 1"
T0=$(now); dd if=/tmp/a.new of=/mnt/t/a.bin bs=64k count=1 conv=notrunc oflag=direct 2> $R/a.dd
echo $? > $R/a.rc; echo "$T0 $(now)" > $R/a.times
sync; echo 3 > /proc/sys/vm/drop_caches; md5 /mnt/t/a.bin > $R/a.readback
# (b) a WRITE the target never answers
dd if=/dev/urandom of=/mnt/t/b.bin bs=64k count=1 conv=fsync 2> /dev/null
head -c 65536 /dev/urandom > /tmp/b.new
L=$(lba_of /mnt/t/b.bin); echo $L > $R/b.lba
ask b "hang $L 0"
T0=$(now); dd if=/tmp/b.new of=/mnt/t/b.bin bs=64k count=1 conv=notrunc oflag=direct 2> $R/b.dd
echo $? > $R/b.rc; echo "$T0 $(now)" > $R/b.times
uiscsictl show --json > $R/show_b.json
ask heal "heal"
# the target is healthy again: the rest of the filesystem, and the same blocks, work
dd if=/dev/urandom of=/mnt/t/d.bin bs=64k count=16 conv=fsync 2> /dev/null; md5 /mnt/t/d.bin > $R/d.md5
dd if=/tmp/b.new of=/mnt/t/b.bin bs=64k count=1 conv=notrunc oflag=direct 2>> $R/b.dd; echo $? > $R/b2.rc
sync; echo 3 > /proc/sys/vm/drop_caches
md5 /mnt/t/d.bin > $R/d.readback; md5 /mnt/t/b.bin > $R/b.readback; md5 /tmp/b.new > $R/b.md5
ls /mnt/t > $R/ls
dmesg > $R/dmesg
umount /mnt/t; echo $? > $R/umount.rc
uiscsictl show --json > $R/show.json
kill -TERM $PID; wait $PID; echo $? > $R/daemon.rc
"""


class Requests:
    """Carries out the guest's requests (files in /results) on the proxy, from a host thread."""

    def __init__(self, results: Path, proxy: StallProxy) -> None:
        self.results, self.proxy = results, proxy
        self.stop = threading.Event()
        self.done: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            for req in sorted(self.results.glob("*.request")):
                name, words = req.stem, req.read_text().split()
                if name in self.done or not words:
                    continue
                if words[0] == "heal":
                    self.proxy.heal()
                else:
                    first, count = int(words[1]), int(words[2])
                    self.proxy.stall(Match(ops=WRITES, lba=(first, first + 127)), mode=words[0],
                                     count=count or None)
                self.done.append(name)
                (self.results / f"{name}.ready").write_text("ok\n")


def _timeline(proxy: StallProxy, start: float) -> list[tuple[float, str, str]]:
    return [(round(e.t - start, 2), e.kind, e.what) for e in proxy.events if e.t >= start]


def test_a_stalled_write_is_cleared_or_fails_alone_through_the_kernel(vm_guest, tgtd, tmp_path):
    t = tgtd(size_mb=64)
    res = tmp_path / "results"
    res.mkdir()
    with StallProxy(*t.portal) as proxy:
        req = Requests(res, proxy)
        script = GUEST.format(host_iqn=HOST_IQN, port=proxy.port, iqn=t.iqn, c=LIMITS.command, a=LIMITS.abort,
                              l=LIMITS.lu_reset, r=LIMITS.replacement)
        r = vm_guest(script=script, net=True, timeout=400, results_dir=res)
        req.stop.set()
        events = list(proxy.events)

    def text(name: str) -> str:
        return (res / name).read_text().strip() if (res / name).exists() else ""

    log = text("uiscsid.log")
    assert r.exit_code == 0, r.console[-3000:] + log
    assert (text("reload.rc"), text("mount.rc")) == ("0", "0"), text("reload.out") + log

    def took(name: str) -> float:
        a, b = map(float, text(f"{name}.times").split())
        return b - a

    # (a) the abort clears the lost write; the write is sent again and lands
    lost = [e for e in events if e.kind == "lose"]
    assert len(lost) == 1, events
    a_line = _timeline(proxy, lost[0].t)
    print("(a) lost WRITE, from the proxy (s after it held the command):", a_line[:4])
    assert text("a.rc") == "0", text("a.dd")
    assert LIMITS.command - 0.5 <= took("a") < LIMITS.command + LIMITS.abort + 3, took("a")
    assert text("a.readback") == text("a.md5")
    # (b) never answered: abort, LU reset, reinstatement, EIO for that write alone within the bound
    hung = [e for e in events if e.kind == "hang"]
    assert len(hung) >= 3, events             # the write, its retry after the LU reset, its reissue
    b_line = [x for x in _timeline(proxy, hung[0].t) if x[1] != "tmf-rewritten"]
    print("(b) never answered, from the proxy (s after it first hung the command):")
    for x in b_line:
        print("   ", x)
    print(f"(a) the application's write took {took('a'):.2f} s; (b) EIO after {took('b'):.2f} s "
          f"(bound {LIMITS.bound:g} s)")
    assert text("b.rc") != "0" and "Input/output error" in text("b.dd"), text("b.dd")
    assert took("b") <= LIMITS.bound + 2, (took("b"), LIMITS.bound)
    kinds = [k for _, k, _ in b_line]
    assert kinds.index("abort") < kinds.index("tmf") < kinds.index("login"), b_line   # abort, LU reset, relogin
    assert any(w == "LOGICAL UNIT RESET" for _, k, w in b_line if k == "tmf"), b_line
    steps = ["unanswered for", "LOGICAL UNIT RESET of LUN 1", "reinstating the session; recovering",
             "failing it alone (EIO)"]
    lba_b = text("b.lba")
    for step in steps:                       # each step logged once, naming the command
        lines = [ln for ln in log.splitlines() if step in ln and f"LBA {lba_b} " in ln]
        assert len(lines) == 1, (step, log)
    # healthy again: the rest of the filesystem works, and so do the same blocks
    assert text("b2.rc") == "0" and text("b.readback") == text("b.md5")
    assert text("d.readback") == text("d.md5") and "d.bin" in text("ls").split()
    dmesg = text("dmesg")
    assert "EXT4-fs error" not in dmesg and "Aborting journal" not in dmesg, dmesg
    errors = [ln for ln in dmesg.splitlines() if "I/O error" in ln]
    assert errors and all(f"sector {lba_b}" in ln for ln in errors), errors   # only the failed write's EIO
    assert text("umount.rc") == "0" and text("daemon.rc") == "0", log
    (target,) = json.loads(text("show.json"))["targets"]
    counts = target["escalation"]
    print("show --json escalation counts:", counts)
    assert counts["aborts"] == 2 and counts["aborts_complete"] == 1 and counts["failed"] == 1, counts
    assert counts["lu_resets"] == counts["lu_resets_complete"] == counts["reinstatements"] == 1, counts
    assert counts["command_timeouts"] >= 3 and counts["retries"] >= 2, counts
    # the host's view: clean, and the data is what the guest wrote
    fsck = subprocess.run(["e2fsck", "-fn", str(t.backing[0])], capture_output=True, text=True, timeout=60,
                          check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    for name in ("a", "d"):
        data = subprocess.run(["debugfs", "-R", f"cat /{name}.bin", str(t.backing[0])], capture_output=True,
                              timeout=30, check=True).stdout
        assert hashlib.md5(data).hexdigest() == text(f"{name}.md5"), name
