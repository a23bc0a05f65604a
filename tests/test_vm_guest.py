"""The QEMU harness against real peers: a booted guest, the kernel's nbd and ext4, a host tgtd, raw disks.

Budget: three guest boots in this file. The first boot checks several facts at once (exit code, output,
PATH, env, shares, nbd+ext4, the host tgtd); the tests that read it share one module-scoped result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vm.harness import BootFiles, Disk, GuestResult, PowerCut, run_guest
from vm.targets import Tgt

pytestmark = pytest.mark.vm

# Served inside the guest: a RAM-backed NBD export over a socketpair, then mkfs/mount/fsck on /dev/nbd0.
NBD_GUEST = r'''
import fcntl, os, signal, socket, struct, subprocess, threading

SET_SOCK, SET_BLKSIZE, DO_IT, CLEAR_SOCK, SET_SIZE_BLOCKS, DISCONNECT = (
    0xab00, 0xab01, 0xab03, 0xab04, 0xab07, 0xab08)
SIZE = 32 << 20
disk = bytearray(SIZE)
kern, serv = socket.socketpair()


def recv_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = serv.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def serve():
    while (head := recv_exact(28)) is not None:
        magic, kind, handle, off, length = struct.unpack(">II8sQI", head)
        assert magic == 0x25609513, hex(magic)
        kind &= 0xFFFF
        reply = struct.pack(">II8s", 0x67446698, 0, handle)
        if kind == 0:
            serv.sendall(reply + disk[off:off + length])
        elif kind == 1:
            disk[off:off + length] = recv_exact(length)
            serv.sendall(reply)
        elif kind == 2:  # disconnect: closing our end lets NBD_DO_IT return at once
            serv.shutdown(socket.SHUT_RDWR)
            return
        else:
            serv.sendall(reply)


def do_it(dev):
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        fcntl.ioctl(dev, DO_IT)
    except OSError as exc:
        print("nbd: DO_IT returned", exc)


dev = os.open("/dev/nbd0", os.O_RDWR)
fcntl.ioctl(dev, SET_BLKSIZE, 4096)
fcntl.ioctl(dev, SET_SIZE_BLOCKS, SIZE // 4096)
fcntl.ioctl(dev, SET_SOCK, kern.fileno())
server = threading.Thread(target=serve, daemon=True)
server.start()
kernel_side = threading.Thread(target=do_it, args=(dev,))
kernel_side.start()
steps = [["mkfs.ext4", "-q", "-F", "/dev/nbd0"], ["mkdir", "-p", "/tmp/nbdmnt"],
         ["mount", "-t", "ext4", "/dev/nbd0", "/tmp/nbdmnt"],
         ["sh", "-c", "echo nbd-ok > /tmp/nbdmnt/f && sync"], ["umount", "/tmp/nbdmnt"],
         ["e2fsck", "-fn", "/dev/nbd0"]]
codes = []
for s in steps:
    codes.append(subprocess.run(s).returncode)
    print("nbd step", s[0], "done", open("/proc/uptime").read().split()[0])
fcntl.ioctl(dev, DISCONNECT)
kernel_side.join(30)
fcntl.ioctl(dev, CLEAR_SOCK)
open("/results/nbd.json", "w").write(__import__("json").dumps(
    {"codes": codes, "ext4_on_disk": b"nbd-ok" in disk, "do_it_done": not kernel_side.is_alive()}))
'''


@pytest.fixture(scope="module")
def host_tgtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tgt]:
    """A real tgtd on 127.0.0.1 (free port, unique -C) with one 16 MiB LUN."""
    with Tgt.start(workdir=tmp_path_factory.mktemp("tgt"), size_mb=16) as tgt:
        yield tgt


@pytest.fixture(scope="module")
def checks_boot(vm_boot_files: BootFiles, host_tgtd: Tgt,
                tmp_path_factory: pytest.TempPathFactory) -> GuestResult:
    """One boot that runs every in-guest check, ends with exit 7, and keeps the result for the tests."""
    share = tmp_path_factory.mktemp("share")  # under the host's /tmp: visible only through the share
    (share / "nbd_guest.py").write_text(NBD_GUEST)
    script = textwrap.dedent(f"""\
        step() {{ read -r up _ < /proc/uptime; echo "step $up $*"; }}
        echo "hello from the guest"
        command -v python3 > /results/python3
        echo "$BOOTKIT_TEST_VAR" > /results/env
        step nbd
        python3 /mnt/share/nbd_guest.py
        step iscsi-inq
        iscsi-inq {host_tgtd.url(lun=1, host="10.0.2.2")} > /results/inq 2>&1
        echo $? > /results/inq.status
        step done
        exit 7
        """)
    result = run_guest(script=script, net=True, env={"BOOTKIT_TEST_VAR": "it's \"quoted\" $HOME"},
                       shares={"/mnt/share": share}, results_dir=tmp_path_factory.mktemp("results"),
                       boot_files=vm_boot_files, timeout=150)
    print(result.console)
    return result


def test_guest_command_exit_code_and_output_come_back(checks_boot: GuestResult) -> None:
    assert checks_boot.exit_code == 7, checks_boot.error
    assert "hello from the guest" in checks_boot.console
    assert checks_boot.error is None and not checks_boot.timed_out


def test_guest_path_starts_with_the_launching_venv_and_env_is_passed(checks_boot: GuestResult) -> None:
    venv_python = os.path.join(os.path.dirname(sys.executable), "python3")
    assert (checks_boot.results_dir / "python3").read_text().strip() == venv_python
    assert (checks_boot.results_dir / "env").read_text() == "it's \"quoted\" $HOME\n"


def test_nbd_and_ext4_work_in_the_guest(checks_boot: GuestResult) -> None:
    report = json.loads((checks_boot.results_dir / "nbd.json").read_text())
    assert report == {"codes": [0] * 6, "ext4_on_disk": True, "do_it_done": True}


def test_guest_reaches_host_tgtd_at_10_0_2_2(checks_boot: GuestResult) -> None:
    inq = (checks_boot.results_dir / "inq").read_text()
    assert (checks_boot.results_dir / "inq.status").read_text().strip() == "0", inq
    assert "IET" in inq or "VENDOR" in inq.upper(), inq


@dataclass
class RcBoot:
    returncode: int
    summary: dict
    disk: Path
    results: Path
    stderr: str


@pytest.fixture(scope="module")
def rc_boot(vm_boot_files: BootFiles, tmp_path_factory: pytest.TempPathFactory) -> RcBoot:
    """`bootkit vm run` with an rc/rc.shutdown pair from a host /tmp dir; rc makes ext4 on the disk."""
    base = tmp_path_factory.mktemp("rcboot")
    disk = Disk.create(base / "persist.img", 64 << 20)
    rc_dir = base / "rc"
    rc_dir.mkdir()
    (rc_dir / "rc").write_text("#!/bin/sh\nmkfs.ext4 -q /dev/vda && mkdir -p /tmp/m"
                               " && mount /dev/vda /tmp/m\necho rc-ran > /results/rc\n")
    (rc_dir / "rc.shutdown").write_text("umount /tmp/m && echo shutdown-ran > /results/shutdown\n")
    bootkit = os.path.join(os.path.dirname(sys.executable), "bootkit")
    out = subprocess.run([bootkit, "vm", "run", "--json", "--rc-dir", str(rc_dir), "--disk", str(disk.path),
                          "--results", str(base / "results"), "--timeout", "120",
                          "--", "sh", "-c", "echo boot2 > /tmp/m/data; exit 3"],
                         check=False, capture_output=True, text=True, timeout=150)
    print(out.stderr)
    return RcBoot(out.returncode, json.loads(out.stdout or "{}"), disk.path, base / "results", out.stderr)


def test_cli_run_exits_with_the_guest_commands_status(rc_boot: RcBoot) -> None:
    assert rc_boot.returncode == 3, rc_boot.stderr[-3000:]
    assert rc_boot.summary["exit_code"] == 3 and rc_boot.summary["error"] is None


def test_rc_runs_before_the_command_and_rc_shutdown_after(rc_boot: RcBoot) -> None:
    events = rc_boot.summary["events"]
    assert [e["name"] for e in events] == ["boot", "rc-begin", "rc-end", "cmd-begin", "cmd-end",
                                           "shutdown-begin", "shutdown-end", "poweroff"]
    assert [e["status"] for e in events if e["name"].endswith("-end")] == [0, 3, 0]
    uptimes = [e["uptime"] for e in events]
    assert uptimes == sorted(uptimes)
    assert (rc_boot.results / "rc").read_text() == "rc-ran\n"
    assert (rc_boot.results / "shutdown").read_text() == "shutdown-ran\n"


def test_power_cut_leaves_disks_as_the_guest_left_them(rc_boot: RcBoot, vm_boot_files: BootFiles,
                                                        tmp_path: Path) -> None:
    persist = rc_boot.disk
    scratch = Disk.create(tmp_path / "scratch.img", 8 << 20)
    script = textwrap.dedent("""\
        mkdir -p /tmp/m && mount /dev/vda /tmp/m && cat /tmp/m/data > /results/seen && umount /tmp/m
        printf 'written-before-the-cut' | dd of=/dev/vdb bs=4096 seek=256 conv=sync oflag=direct 2>/dev/null
        echo CUT-THE-POWER-NOW
        sleep 600
        """)
    result = run_guest(script=script, disks=[persist, scratch],
                       power_cut=PowerCut(marker="CUT-THE-POWER-NOW"),
                       results_dir=tmp_path / "results", boot_files=vm_boot_files, timeout=120)
    print(result.console)
    assert result.power_cut and not result.timed_out
    assert result.exit_code is None and result.event("poweroff") is None
    assert (result.results_dir / "seen").read_text() == "boot2\n"  # persisted from the rc boot
    with open(scratch.path, "rb") as fh:
        fh.seek(256 * 4096)
        assert fh.read(4096) == b"written-before-the-cut".ljust(4096, b"\0")
    assert result.duration < 100
