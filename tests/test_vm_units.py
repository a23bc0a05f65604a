"""The harness's pure parts: module load order, the cpio writer (checked by cpio(1)), QEMU argv, console."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vm import cpio
from vm.cli import main as vm_main
from vm.console import ConsoleLine, LineAssembler, marker_re, parse_event
from vm.harness import GuestError, PowerCut, _check_guest_path, guest_env, supervise
from vm.initramfs import InitramfsError, is_static_elf, load_order, module_name, parse_modules_dep
from vm.kernel import KernelFetchError, cache_root, cached_kernels, ensure_kernel, parse_depends
from vm.qemu import BootSpec, Disk, Export, argv

MODULES_DEP = """\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet.ko:
kernel/drivers/block/nbd.ko:
"""


def test_modules_load_after_everything_they_depend_on() -> None:
    deps = parse_modules_dep(MODULES_DEP)
    order = [module_name(p) for p in load_order(deps, ("9p", "ext4", "nbd"), set())]
    assert sorted(order) == sorted(["9p", "9pnet", "fscache", "netfs", "ext4", "crc16", "mbcache", "jbd2",
                                    "nbd"])
    for path, needs in deps.items():
        if module_name(path) in order:
            for dep in needs:
                assert order.index(module_name(dep)) < order.index(module_name(path))


def test_built_in_modules_are_skipped_and_unknown_ones_refused() -> None:
    deps = parse_modules_dep(MODULES_DEP)
    assert load_order(deps, ("unix", "nbd"), {"unix"}) == ["kernel/drivers/block/nbd.ko"]
    with pytest.raises(InitramfsError, match="no_such_mod"):
        load_order(deps, ("no_such_mod",), set())


def test_module_names_ignore_compression_and_dashes() -> None:
    assert module_name("kernel/net/9p/9pnet_virtio.ko.xz") == "9pnet_virtio"
    assert module_name("kernel/x/crc32c-generic.ko") == "crc32c_generic"


def test_kernel_package_is_the_generic_flavour_never_cloud() -> None:
    text = ("linux-image-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n"
            "  Depends: linux-image-6.1.0-56-amd64\n")
    assert parse_depends(text) == "linux-image-6.1.0-56-amd64"
    with pytest.raises(KernelFetchError):
        parse_depends("linux-image-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n")


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) is the independent reader")
@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True), st.binary(max_size=300)),
                max_size=6, unique_by=lambda t: t[0]))
def test_cpio_archives_are_read_back_by_gnu_cpio(files: list[tuple[str, bytes]]) -> None:
    entries = [cpio.directory("d"), cpio.chardev("d/console", 5, 1), cpio.symlink("d/link", "target")]
    entries += [cpio.regular(f"d/{name}", data) for name, data in files]
    blob = cpio.archive(entries)
    assert len(blob) % 4 == 0 and blob == cpio.archive(entries)  # aligned and reproducible
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=blob, capture_output=True, check=True).stdout
    assert listing.decode().split() == [e.name for e in entries]


def test_cpio_file_bodies_survive_extraction(tmp_path: Path) -> None:
    blob = cpio.archive([cpio.directory("a"), cpio.regular("a/x", b"abc\0\xff" * 7, 0o755)])
    subprocess.run(["cpio", "-id", "--quiet"], input=blob, cwd=tmp_path, check=True)
    assert (tmp_path / "a" / "x").read_bytes() == b"abc\0\xff" * 7
    assert os.access(tmp_path / "a" / "x", os.X_OK)


def test_static_elf_detection_rejects_a_dynamic_python() -> None:
    assert not is_static_elf(Path(os.path.realpath(sys.executable)).read_bytes())
    assert not is_static_elf(b"#!/bin/sh\n")


def test_qemu_always_runs_tcg_and_escapes_commas_in_paths() -> None:
    spec = BootSpec(Path("/k/vmlinuz"), Path("/k/initrd"), Path("/tmp/job"),
                    disks=(Disk(Path("/d/a,b.img")),), net=True,
                    exports=(Export("results", Path("/r"), False),))
    args = argv(spec)
    assert args[args.index("-accel") + 1] == "tcg" and "kvm" not in " ".join(args)
    assert "file=/d/a,,b.img,format=raw,if=virtio,cache=writeback" in args
    assert "user,id=n0" in args and "-no-reboot" in args
    assert "bootkit.job=/tmp/job" in args[args.index("-append") + 1]
    assert not any("netdev" in a for a in argv(BootSpec(Path("/k"), Path("/i"), Path("/j"))))


def test_disk_format_follows_the_file_suffix() -> None:
    assert Disk.of("x.qcow2").format == "qcow2" and Disk.of(Path("x.img")).format == "raw"


def test_markers_need_the_runs_nonce() -> None:
    pattern = marker_re("abc123")
    ev = parse_event(pattern, ConsoleLine(1.5, "partial outputbootkit-vm[abc123] 4.20 cmd-end 7"))
    assert ev is not None and (ev.name, ev.status, ev.uptime, ev.t) == ("cmd-end", 7, 4.2, 1.5)
    assert parse_event(pattern, ConsoleLine(0, "bootkit-vm[ffffff] 4.20 cmd-end 0")) is None


def test_console_lines_are_split_and_runaway_lines_bounded() -> None:
    asm = LineAssembler(max_line=10)
    assert asm.feed(b"ab\r\ncd") == ["ab"]
    assert asm.feed(b"e\n" + b"x" * 25) == ["cde", "x" * 10, "x" * 10]
    assert asm.flush() == ["x" * 5]


def test_guest_path_keeps_the_venv_bin_unresolved_and_first() -> None:
    env = guest_env(Path("/some/venv/bin"), {"FOO": "1"})
    assert env["PATH"].split(":")[0] == "/some/venv/bin" and env["FOO"] == "1"
    with pytest.raises(ValueError):
        guest_env(Path("/v/bin"), {"BAD-NAME": "x"})


@pytest.mark.parametrize("path", ["relative", "/results", "/bootkit/x", "/proc", "/a b", "/x/../proc", "/"])
def test_reserved_or_odd_guest_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        _check_guest_path(path)


def test_run_without_a_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert vm_main(["vm", "run", "--"]) == 2
    assert "give a command" in capsys.readouterr().err


def _console(script: str) -> list[str]:
    """A real process standing in for QEMU's serial console: a shell printing marker lines."""
    return ["sh", "-c", script]


def test_exit_code_comes_from_the_cmd_end_marker_with_the_runs_nonce(tmp_path: Path) -> None:
    r = supervise(_console("echo 'bootkit-vm[beef] 1.0 cmd-begin'; echo out;"
                           "echo 'bootkit-vm[f00d] 2.0 cmd-end 9';"
                           "echo 'bootkit-vm[beef] 2.5 cmd-end 4'; echo 'bootkit-vm[beef] 2.6 poweroff'"),
                  "beef", tmp_path, timeout=20)
    assert r.exit_code == 4 and r.error is None
    assert [e.name for e in r.events] == ["cmd-begin", "cmd-end", "poweroff"]
    assert r.line_time("out") is not None and r.event("poweroff") is not None


def test_hard_timeout_kills_the_guest_and_says_so(tmp_path: Path) -> None:
    r = supervise(_console("echo 'bootkit-vm[n] 1.0 cmd-begin'; exec sleep 30"), "n", tmp_path, timeout=1.0)
    assert r.timed_out and not r.power_cut and r.exit_code is None
    assert r.error == "timed out after 1 s" and r.duration < 10


def test_power_cut_fires_on_the_marker_line_and_not_before(tmp_path: Path) -> None:
    r = supervise(_console("echo before; sleep 0.3; echo CUT-HERE; exec sleep 30"), "n", tmp_path,
                  PowerCut(marker="CUT-HERE", delay=0.2), timeout=20)
    assert r.power_cut and not r.timed_out and r.error == "power cut"
    assert r.qemu_returncode == -9 and r.duration < 10
    cut_seen = r.line_time("CUT-HERE")
    assert cut_seen is not None and r.duration >= cut_seen + 0.2


def test_power_cut_without_a_marker_fires_after_the_delay(tmp_path: Path) -> None:
    r = supervise(_console("exec sleep 30"), "n", tmp_path, PowerCut(delay=0.5), timeout=20)
    assert r.power_cut and 0.5 <= r.duration < 10


def test_a_guest_that_dies_early_is_reported_not_hidden(tmp_path: Path) -> None:
    r = supervise(_console("echo 'bootkit-vm: stage1 failed: insmod ext4'; exit 1"), "n", tmp_path,
                  timeout=20)
    assert r.exit_code is None and r.error == "bootkit-vm: stage1 failed: insmod ext4"
    with pytest.raises(GuestError, match="stage1 failed"):
        r.check()


def _fake_kernel_entry(base: Path, package: str, release: str, complete: bool = True) -> None:
    root = base / "iscsi-bootkit" / "kernel" / package
    (root / "root" / "boot").mkdir(parents=True)
    (root / "root" / "boot" / f"vmlinuz-{release}").write_bytes(b"k")
    (root / "root" / "lib" / "modules" / release).mkdir(parents=True)
    (root / "root" / "lib" / "modules" / release / "modules.dep").write_text("")
    if complete:
        (root / ".complete").write_text(json.dumps({"package": package, "release": release}))


def test_the_newest_complete_cached_kernel_is_used_without_asking_apt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _fake_kernel_entry(tmp_path, "linux-image-6.1.0-9-amd64", "6.1.0-9-amd64")
    _fake_kernel_entry(tmp_path, "linux-image-6.1.0-56-amd64", "6.1.0-56-amd64")
    _fake_kernel_entry(tmp_path, "linux-image-6.1.0-99-amd64", "6.1.0-99-amd64", complete=False)
    assert cache_root() == tmp_path / "iscsi-bootkit"
    assert [k.release for k in cached_kernels()] == ["6.1.0-9-amd64", "6.1.0-56-amd64"]
    assert ensure_kernel().release == "6.1.0-56-amd64"


def test_doctor_names_each_check_and_its_verdict_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = vm_main(["vm", "doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    names = [c["check"] for c in report["checks"]]
    assert names[:6] == ["qemu", "busybox", "apt-get", "dpkg", "depmod", "kernel cache"]
    assert code == (0 if report["ok"] else 1)
    assert report["ok"] == all(c["ok"] for c in report["checks"] if c["required"])
