"""The Debian guest image machinery (vm/image.py, vm/guest_image.py, vm/image_boot.py): the cached roots
are reused, an image holds what a guest needs and nothing of the host, and the sysvinit variant boots
through Debian's own rcS and runlevel 2 with the package's LSB script enabled by its postinst."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from vm import image as base_image
from vm.console import ConsoleLine
from vm.deb import depends
from vm.guest_image import make_image
from vm.harness import GuestResult
from vm.image_boot import _finish, _job, run_image
from vm.kernel import KernelTree
from vm.qemu import BootSpec, Disk, argv


def debugfs(image: Path, request: str) -> str:
    res = subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True, timeout=60,
                         check=False)
    return res.stdout


def test_the_cache_key_follows_the_package_list_and_the_kernel(tmp_path):
    k1, k2 = KernelTree("p", "6.1.0-1-amd64", tmp_path), KernelTree("p", "6.1.0-2-amd64", tmp_path)
    pk = base_image.packages_for("systemd")
    assert base_image.cache_key("systemd", pk, k1) == base_image.cache_key("systemd", pk, k1)
    assert base_image.cache_key("systemd", pk, k1) != base_image.cache_key("systemd", pk, k2)
    more = base_image.packages_for("systemd", ["python3-psutil"])
    assert base_image.cache_key("systemd", more, k1) != base_image.cache_key("systemd", pk, k1)
    assert "systemd-sysv" in pk and "sysvinit-core" in base_image.packages_for("sysvinit")
    with pytest.raises(base_image.ImageError, match="unknown image variant"):
        base_image.packages_for("openrc")


def test_a_debian_guest_gets_no_host_root_share_and_its_job_says_what_follows(tmp_path):
    spec = BootSpec(Path("/k"), Path("/i"), None, disks=(Disk(Path("/r.img")),), host_root=False,
                    extra_cmdline=("root=/dev/vda",))
    args = argv(spec)
    assert not any("mount_tag=host" in a for a in args)
    assert "bootkit.job" not in args[args.index("-append") + 1]
    _job(tmp_path, "abc", ["echo", "a b"], None, "none", [("results", "/results")])
    assert (tmp_path / "cmd").read_text() == "#!/bin/sh\nexec echo 'a b'\n"
    assert (tmp_path / "config").read_text() == "BOOTKIT_NONCE=abc\nBOOTKIT_AFTER=none\n"
    with pytest.raises(ValueError, match="after="):
        _job(tmp_path, "abc", None, "true", "halt", [])


@pytest.mark.vm
def test_the_cached_root_is_reused_and_an_image_holds_the_package_and_no_host(vm_boot_files, vm_deb, tmp_path):
    t = time.monotonic()
    img = make_image(tmp_path / "a.img", "systemd", debs=[vm_deb], kernel=vm_boot_files.kernel,
                     files={"/etc/bootkit-test": "hello\n"}, dirs=["/srv/share"])
    again = make_image(tmp_path / "b.img", "systemd", debs=[vm_deb], kernel=vm_boot_files.kernel)
    print(f"first {img.timings}, second {again.timings}, both {time.monotonic() - t:.1f} s")
    # the second build only copied the cached root: no mmdebstrap
    assert again.timings["base"] < 5, again.timings
    base = base_image.ensure_base("systemd", vm_boot_files.kernel, depends(vm_deb))
    assert base.seconds == 0.0  # read from the cache, not built
    status = debugfs(img.path, "cat /var/lib/dpkg/status")
    assert "Package: iscsi-bootkit\nStatus: install ok installed" in status
    assert debugfs(img.path, "cat /etc/bootkit-test") == "hello\n"
    rel = vm_boot_files.kernel.release
    assert "nbd.ko" in debugfs(img.path, f"ls -l /lib/modules/{rel}/kernel/drivers/block")
    assert "iscsi_tcp.ko" in debugfs(img.path, f"ls -l /lib/modules/{rel}/kernel/drivers/scsi")
    assert ".dockerenv" not in debugfs(img.path, "ls -l /")
    assert "share" in debugfs(img.path, "ls -l /srv")
    # enabled by the package's postinst, as on any host
    assert "uiscsid.service" in debugfs(img.path, "ls -l /etc/systemd/system/remote-fs.target.wants")


SYSVINIT_PROBE = """#!/bin/sh
R=/results
cat /proc/1/comm > $R/pid1
runlevel > $R/runlevel
cat /sys/class/dmi/id/sys_vendor > $R/vendor
ls /etc/rcS.d > $R/rcS
[ -d /sys/module/nbd ] && echo loaded > $R/nbd
/etc/init.d/uiscsid status > $R/status 2>&1
echo $? >> $R/status
"""


@pytest.mark.vm
def test_the_sysvinit_variant_boots_debians_rc_with_the_packaged_lsb_script(vm_boot_files, vm_deb, tmp_path):
    img = make_image(tmp_path / "sysv.img", "sysvinit", debs=[vm_deb], kernel=vm_boot_files.kernel)
    r = run_image(img, script=SYSVINIT_PROBE, net=True, timeout=400, results_dir=tmp_path / "results",
                  kernel=vm_boot_files.kernel)
    print(r.console)
    assert r.exit_code == 0 and r.error is None, r.error
    out = {p.name: p.read_text().strip() for p in (tmp_path / "results").iterdir()}
    assert out["pid1"] == "init" and out["runlevel"].endswith(" 2")
    assert out["vendor"] == "QEMU"
    assert any(n.endswith("uiscsid") and n.startswith("S") for n in out["rcS"].split())
    assert out["nbd"] == "loaded"  # the LSB script's modprobe
    assert out["status"].startswith("uiscsid is running") and out["status"].endswith("0")
    # the script's steps ran in rcS, in order (the example config names no target)
    steps = [ln.split(" step ")[1] for ln in r.console.splitlines() if ln.startswith("rc: ") and " step " in ln]
    assert steps[:4] == ["uiscsid begin", "uiscsid end rc=0", "reload begin", "reload end rc=0"], steps


def _result(lines: list[str], exit_code: int | None) -> GuestResult:
    return GuestResult(exit_code, "\n".join(lines), [ConsoleLine(float(i), t) for i, t in enumerate(lines)], [],
                       Path("/nonexistent"), 1.0)


def test_the_kernels_last_word_ends_a_boot_as_poweroff_or_reboot():
    r = _result(["x", "[   41.4] reboot: Power down"], 0)
    _finish(r, has_command=True)
    assert [e.name for e in r.events] == ["poweroff"] and r.error is None
    r = _result(["[   9.1] reboot: Restarting system"], None)
    _finish(r, has_command=False)
    assert [e.name for e in r.events] == ["reboot"] and r.error is None
    r = _result(["[   9.1] reboot: Restarting system"], None)
    _finish(r, has_command=True)
    assert r.error == "qemu exited (None) before the command finished"
    r = _result(["Kernel panic"], 0)
    _finish(r, has_command=True)
    assert r.error == "the guest did not power off or reboot"
