"""initiator/nbd.py against its real peer, the guest kernel: mkfs, fsck, mount, write, refuse, detach.

Budget: one guest boot. A file-backed backend (the guest's /dev/vda, a raw file on the host) is attached
as /dev/nbdN; mkfs.ext4 and friends run as child processes while the bridge serves (their SIGCHLDs prove
the DO_IT thread's signal mask). The host then reads the file back with debugfs.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from vm.harness import Disk

pytestmark = pytest.mark.vm

GUEST = r'''#!/usr/bin/env python3
import asyncio, dataclasses, json, os, subprocess, sys
from initiator import nbd
from initiator.blockdev import FileBackend


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


async def main():
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


asyncio.run(main())
'''


def test_kernel_serves_ext4_through_the_bridge_and_detach_is_refused_while_mounted(vm_guest, tmp_path):
    disk = Disk.create(tmp_path / "disk.img", 64 << 20)
    r = vm_guest(script=GUEST, disks=[disk], timeout=240)
    assert r.exit_code == 0, r.console[-3000:]
    res = json.loads((r.results_dir / "nbd.json").read_text())
    assert res["path"].startswith("/dev/nbd") and res["sys_size"] == str((64 << 20) // 512), res
    assert all(rc == 0 for _, rc in res["steps"]), res
    assert any(u.startswith("mounted on /mnt/t") for u in res["users"]), res
    assert res["refused"] and "in use" in res["refused"] and "mounted on /mnt/t" in res["refused"], res
    assert res["connected_after"] is False, res
    st = res["stats"]
    assert st["completed_error"] == 0 and st["bytes_written"] > 60_000 and st["commands"].get("flush", 0) > 0, st
    assert st["max_in_flight"] > 1, st
    out = subprocess.run(["debugfs", "-R", "cat /hello.txt", str(tmp_path / "disk.img")],
                         check=True, capture_output=True, text=True, timeout=30)
    assert out.stdout == "written through the nbd bridge\n" * 2000, out.stderr
