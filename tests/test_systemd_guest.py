"""A real Debian guest: bookworm with systemd 252 as PID 1, the project installed from the checkout's .deb
with apt, /etc/uiscsi.conf naming a host tgtd. One boot (module fixture); the tests read what it wrote.

The package's own units start uiscsid and log in at boot. The daemon plays its part of the udev contract
(initiator/kernel/udev_info.py): it writes /run/uiscsid/udev/nbdN and triggers a change event, and the
package's udev rule makes /dev/disk/by-iscsi/<iqn>-lun1 (and -part1 for a partition); systemd sees them
as active device units, and by-uuid comes from udev's own rules. `uiscsictl detach` takes the links away,
and `reload --wait` returns only once the link is back.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from initiator.kernel import udev_info
from vm.guest_image import make_image
from vm.image_boot import run_image
from vm.targets import Tgt, make_backing

pytestmark = [pytest.mark.vm, pytest.mark.target]

UUID = "5e1f0c2a-6d1b-4f3e-9a77-0b6a1e2d3c4f"
IQN = "iqn.2026-12.test.bootkit:systemd-guest"

SCRIPT = r"""#!/bin/sh
R=/results
name={name}
systemd-detect-virt > $R/virt 2>&1
systemctl is-system-running --wait > $R/state 2>&1
systemd-analyze time > $R/analyze 2>&1
systemctl --failed --no-legend --plain > $R/failed 2>&1
for u in uiscsid.service uiscsi-reload.service; do
    systemctl show -p ActiveState -p ExecMainStartTimestampMonotonic -p ActiveEnterTimestampMonotonic \
        -p InactiveExitTimestampMonotonic "$u" > "$R/$u.show"
done
[ -e /.dockerenv ] && echo present > $R/dockerenv
uiscsictl show luns --json > $R/luns.json
dev=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["luns"][0]["device"] or "")' < $R/luns.json)
echo "$dev" > $R/dev
kname=${{dev#/dev/}}
unit=$(systemd-escape --path --suffix=device "/dev/disk/by-iscsi/$name")
show() {{ systemctl show -p ActiveState --value "$1"; }}
links() {{ udevadm info --query=symlink --name="$1" | tr ' ' '\n' | grep by-iscsi; }}

# the daemon's side of the contract, done at boot: the info file, the change event, udev's link
cat {info_dir}/$kname > $R/info 2>&1
show "$unit" > $R/unit-boot
links "$dev" > $R/links-boot
readlink -f "/dev/disk/by-iscsi/$name" > $R/link-target
show "$(systemd-escape --path --suffix=device /dev/disk/by-uuid/{uuid})" > $R/uuid-unit
udevadm test --action=change "/sys/block/$kname" > $R/udevadm-test 2>&1
journalctl -b -u systemd-udevd --no-pager > $R/udevd.log 2>&1

# a partition: an MBR entry at 1 MiB, re-read; its add event finds the disk's file
python3 -c '
import struct, sys
entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, 2048)
with open(sys.argv[1], "r+b") as f:
    f.seek(446); f.write(entry + bytes(48)); f.seek(510); f.write(b"\x55\xaa")
' "$dev"
blockdev --rereadpt "$dev"
udevadm settle
ls "/sys/block/$kname" > $R/sysblock
links "${{dev}}p1" > $R/part-links
show "$(systemd-escape --path --suffix=device "/dev/disk/by-iscsi/$name-part1")" > $R/part-unit

# detach: the daemon removes the file and triggers on the disk and the partition; the links go
uiscsictl detach data > $R/detach.out 2>&1; echo $? > $R/detach.rc
udevadm settle
ls {info_dir} > $R/info-left 2>&1
show "$unit" > $R/unit-removed
ls /dev/disk/by-iscsi > $R/by-iscsi-left 2>/dev/null  # empty, or gone with its last link

# reload --wait returns only once udev made the link again: no settle, no retry here
uiscsictl reload --wait 60 > $R/reload.out 2>&1; echo $? > $R/reload.rc
readlink -f "/dev/disk/by-iscsi/$name" > $R/link-after-reload
show "$unit" > $R/unit-after-reload
echo done > $R/done
"""


@pytest.fixture(scope="module")
def guest(vm_boot_files, vm_deb, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("systemd-guest")
    lun = make_backing(tmp / "lun1.img", 64)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-U", UUID, "-L", "bk-guest", str(lun)], check=True,
                   timeout=60)
    target = Tgt.start(backing=[lun], iqn=IQN)
    try:
        conf = (f"initiatorname iqn.2026-12.test.bootkit:guest\n"
                f"target data {{\n    targetaddr 10.0.2.2 port {target.port}\n    targetname {IQN}\n"
                "    lun 1\n}\n")
        image = make_image(tmp / "root.img", "systemd", debs=[vm_deb], files={"/etc/uiscsi.conf": conf},
                           kernel=vm_boot_files.kernel)
        script = SCRIPT.format(name=shlex.quote(udev_info.link_name(IQN, 1)), info_dir=udev_info.INFO_DIR,
                               uuid=UUID)
        result = run_image(image, script=script, net=True, timeout=420, results_dir=tmp / "results",
                           kernel=vm_boot_files.kernel)
        print(f"image build: {image.timings}; boot: {result.duration} s, error={result.error}")
        print(result.console)
        yield result
    finally:
        target.stop()


def read(result, name: str) -> str:
    path = Path(result.results_dir) / name
    return path.read_text().strip() if path.exists() else f"<no {name}>"


def test_the_guest_boots_systemd_to_multi_user_as_a_vm_not_a_container(guest):
    assert guest.exit_code == 0 and guest.error is None, guest.error
    assert read(guest, "virt") == "qemu"
    assert read(guest, "dockerenv") == "<no dockerenv>"
    assert read(guest, "state") == "running", read(guest, "failed")
    assert re.search(r"multi-user\.target reached after [\d.]+m?s in userspace", read(guest, "analyze")) or \
        "graphical.target reached" in read(guest, "analyze"), read(guest, "analyze")
    assert [e.name for e in guest.events][:3] == ["boot", "cmd-begin", "cmd-end"]
    assert guest.event("poweroff") is not None


def test_the_packaged_units_started_the_daemon_and_logged_in(guest):
    assert "ActiveState=active" in read(guest, "uiscsid.service.show")
    assert "ActiveState=active" in read(guest, "uiscsi-reload.service.show")
    assert re.fullmatch(r"/dev/nbd\d+", read(guest, "dev")), read(guest, "dev")


def test_the_daemon_told_udev_and_udev_made_the_link_and_the_device_unit(guest):
    name = udev_info.link_name(IQN, 1)
    (lun,) = json.loads(read(guest, "luns.json"))["luns"]
    assert (lun["attach"], lun["link_by"], lun["link_present"]) == ("netlink", "udev", True), lun
    assert lun["link"] == f"/dev/disk/by-iscsi/{name}"
    assert read(guest, "info") == udev_info.info_text(IQN, 1).strip()
    assert read(guest, "links-boot") == f"disk/by-iscsi/{name}"
    assert read(guest, "link-target") == read(guest, "dev")
    assert read(guest, "unit-boot") == "active"
    assert read(guest, "uuid-unit") == "active"  # udev's own 60-persistent-storage on nbd
    assert "61-uiscsi.rules" not in read(guest, "udevd.log"), read(guest, "udevd.log")
    # udevadm test (bookworm's udev has no `udevadm verify`): the rule parses and is what adds the link
    test = read(guest, "udevadm-test")
    assert re.search(rf"61-uiscsi\.rules:\d+ .*{re.escape(name)}", test), test
    assert re.search(rf"^DEVLINKS=.*disk/by-iscsi/{re.escape(name)}", test, flags=re.MULTILINE), test
    assert not re.search(r"61-uiscsi\.rules.*(invalid|error|unknown)", test, flags=re.IGNORECASE), test


def test_a_partition_gets_its_part_link_from_the_disks_file(guest):
    name = udev_info.link_name(IQN, 1)
    dev = read(guest, "dev").removeprefix("/dev/")
    assert f"{dev}p1" in read(guest, "sysblock").split()
    assert read(guest, "part-links") == f"disk/by-iscsi/{name}-part1"
    assert read(guest, "part-unit") == "active"


def test_detach_takes_the_file_and_the_links_away_and_reload_wait_brings_them_back(guest):
    assert read(guest, "detach.rc") == "0", read(guest, "detach.out")
    assert read(guest, "info-left") == ""
    assert read(guest, "unit-removed") == "inactive"
    assert read(guest, "by-iscsi-left") == ""
    assert read(guest, "reload.rc") == "0", read(guest, "reload.out")
    assert read(guest, "link-after-reload").startswith("/dev/nbd")
    assert read(guest, "unit-after-reload") == "active"
    assert read(guest, "done") == "done"


def test_timings_for_the_report(guest):
    """Not a bound: prints boot and Python start-up figures (the report quotes them)."""
    def mono(unit: str, key: str) -> float:
        m = re.search(rf"^{key}=(\d+)$", read(guest, f"{unit}.show"), flags=re.MULTILINE)
        return int(m.group(1)) / 1e6 if m else float("nan")

    start = mono("uiscsid.service", "ExecMainStartTimestampMonotonic")
    ready = mono("uiscsid.service", "ActiveEnterTimestampMonotonic")
    reload_done = mono("uiscsi-reload.service", "ActiveEnterTimestampMonotonic")
    figures = {"analyze": read(guest, "analyze").splitlines(), "uiscsid_exec_to_ready_s": round(ready - start, 1),
               "uiscsid_ready_s": round(ready, 1), "reload_done_s": round(reload_done, 1),
               "cmd_begin_uptime_s": guest.event("cmd-begin").uptime, "qemu_run_s": guest.duration}
    print(json.dumps(figures, indent=1))
    assert ready > start > 0
