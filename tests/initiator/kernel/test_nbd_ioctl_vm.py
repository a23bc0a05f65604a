"""The NBD bridges, nbd_ioctl and nbd_netlink, against their real peer: the guest kernel.

Budget: one guest boot, shared by the tests of this file. Two raw files on the host are the guest's
/dev/vda and /dev/vdb.
- ioctl bridge: /dev/vda is served as /dev/nbdN; mkfs.ext4, e2fsck, mount, write, a refused detach while
  mounted, umount, detach. The tools run as child processes while the bridge serves (their SIGCHLDs prove
  the DO_IT thread's signal mask).
- netlink bridge: a process serves /dev/vdb, the filesystem on it is mounted, the process is SIGKILLed; a
  write then waits (no error) until a second process takes the device over by its identifier.
The host reads both files back with debugfs.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from vm.harness import Disk, run_guest

pytestmark = pytest.mark.vm

GUEST = r'''#!/usr/bin/env python3
import asyncio, dataclasses, json, os, subprocess, sys
from initiator.kernel import nbd_ioctl as nbd
from initiator.kernel.backends import FileBackend


class SlowFile(FileBackend):
    """2 ms per write, like a network disk: the kernel's concurrent requests then overlap for sure."""

    async def write(self, offset, data, fua=False):
        await asyncio.sleep(0.002)
        await super().write(offset, data, fua)


subprocess.run(["modprobe", "nbd"], check=False)
results = {}


async def sh(*argv):
    proc = await asyncio.create_subprocess_exec(*argv)
    rc = await proc.wait()
    results.setdefault("steps", []).append([" ".join(argv), rc])
    print("STEP", " ".join(argv), "->", rc, flush=True)
    if rc:
        raise SystemExit(f"{argv[0]} failed with {rc}")


async def ioctl_phase():
    dev = await nbd.NbdDevice.attach(SlowFile("/dev/vda", block_size=4096))
    results["path"] = dev.path
    results["sys_size"] = open(f"/sys/block/nbd{dev.index}/size").read().strip()
    try:
        await sh("mkfs.ext4", "-q", "-F", "-L", "viabridge", dev.path)
        await sh("e2fsck", "-fn", dev.path)
        os.makedirs("/mnt/t", exist_ok=True)
        await sh("mount", "-t", "ext4", dev.path, "/mnt/t")
        with open("/mnt/t/hello.txt", "w") as f:
            f.write("written through the nbd bridge\n" * 2000)
        await sh("sync")
        results["users"] = dev.users()
        try:
            await dev.disconnect()
            results["refused"] = None
        except nbd.NbdError as e:
            results["refused"] = str(e)
        await sh("umount", "/mnt/t")
        await sh("e2fsck", "-fn", dev.path)
    finally:
        await dev.disconnect(force=True)
    for _ in range(40):                     # the kernel drops the device's pid file as the last ref goes
        if not nbd.is_connected(dev.index):
            break
        await asyncio.sleep(0.05)
    results["connected_after"] = nbd.is_connected(dev.index)
    results["stats"] = dataclasses.asdict(dev.stats)
    with open("/results/nbd.json", "w") as f:
        json.dump(results, f)


KEEP = """
import asyncio, os
from initiator.kernel.backends import FileBackend
from initiator.kernel.nbd_netlink import KeptDevice

async def main():
    dev = await KeptDevice.attach_kept(FileBackend("/dev/vdb", block_size=4096), "test:vdb", dead_conn_timeout=90)
    print(dev.index, int(dev.adopted), flush=True)
    while not os.path.exists("/tmp/release"):
        await asyncio.sleep(0.05)
    await dev.disconnect()
    print("released", flush=True)

asyncio.run(main())
"""


async def server():
    p = await asyncio.create_subprocess_exec(sys.executable, "-c", KEEP, stdout=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(p.stdout.readline(), 60)
    return p, [int(x) for x in line.split()]


async def netlink_phase():
    kept = {}
    results.clear()
    try:
        a, kept["first"] = await server()
        path = f"/dev/nbd{kept['first'][0]}"
        await sh("mkfs.ext4", "-q", "-F", "-L", "kept", path)
        os.makedirs("/mnt/k", exist_ok=True)
        await sh("mount", "-t", "ext4", path, "/mnt/k")
        with open("/mnt/k/before.txt", "w") as f:
            f.write("before the server died\n")
        await sh("sync")
        a.kill()
        await a.wait()
        writer = await asyncio.create_subprocess_exec("sh", "-c", "echo 'after the takeover' > /mnt/k/after.txt; sync")
        await asyncio.sleep(1.0)
        kept["writer_waited"] = writer.returncode is None
        b, kept["second"] = await server()
        kept["writer_rc"] = await asyncio.wait_for(writer.wait(), 120)
        await sh("umount", "/mnt/k")
        await sh("e2fsck", "-fn", path)
        open("/tmp/release", "w").close()
        kept["released"] = (await asyncio.wait_for(b.stdout.readline(), 30)).decode().strip()
        await b.wait()
    except (SystemExit, Exception) as e:
        kept["error"] = repr(e)
    kept["steps"] = results.get("steps", [])
    kept["dmesg"] = subprocess.run("dmesg | grep -i -e nbd -e 'i/o error'", shell=True, capture_output=True,
                                   text=True).stdout
    with open("/results/kept.json", "w") as f:
        json.dump(kept, f)


async def main():
    try:
        await ioctl_phase()
    finally:
        await netlink_phase()


asyncio.run(main())
'''


@pytest.fixture(scope="module")
def guest(vm_boot_files, tmp_path_factory):
    d = tmp_path_factory.mktemp("nbdvm")
    disks = [Disk.create(d / "ioctl.img", 64 << 20), Disk.create(d / "netlink.img", 64 << 20)]
    r = run_guest(script=GUEST, disks=disks, timeout=300, results_dir=d / "results", boot_files=vm_boot_files)
    print(r.console)
    return r, d


def debugfs_cat(image, name: str) -> str:
    out = subprocess.run(["debugfs", "-R", f"cat /{name}", str(image)], check=True, capture_output=True,
                         text=True, timeout=30)
    return out.stdout


def test_kernel_serves_ext4_through_the_bridge_and_detach_is_refused_while_mounted(guest):
    r, d = guest
    assert (r.results_dir / "nbd.json").exists(), r.console[-3000:]
    res = json.loads((r.results_dir / "nbd.json").read_text())
    assert res["path"].startswith("/dev/nbd") and res["sys_size"] == str((64 << 20) // 512), res
    assert all(rc == 0 for _, rc in res["steps"]), res
    assert any(u.startswith("mounted on /mnt/t") for u in res["users"]), res
    assert res["refused"] and "in use" in res["refused"] and "mounted on /mnt/t" in res["refused"], res
    assert res["connected_after"] is False, res
    st = res["stats"]
    assert st["completed_error"] == 0 and st["bytes_written"] > 60_000 and st["commands"].get("flush", 0) > 0, st
    assert st["max_in_flight"] > 1, st
    assert debugfs_cat(d / "ioctl.img", "hello.txt") == "written through the nbd bridge\n" * 2000


def test_a_netlink_device_outlives_its_killed_server_and_is_taken_over_without_io_errors(guest):
    r, d = guest
    assert r.exit_code == 0, r.console[-3000:]
    kept = json.loads((r.results_dir / "kept.json").read_text())
    assert "error" not in kept, kept
    assert kept["first"][1] == 0 and kept["second"] == [kept["first"][0], 1], kept    # same device, adopted
    assert kept["writer_waited"] and kept["writer_rc"] == 0, kept
    assert kept["released"] == "released" and all(rc == 0 for _, rc in kept["steps"]), kept
    assert "i/o error" not in kept["dmesg"].lower(), kept["dmesg"]
    assert debugfs_cat(d / "netlink.img", "before.txt") == "before the server died\n"
    assert debugfs_cat(d / "netlink.img", "after.txt") == "after the takeover\n"
