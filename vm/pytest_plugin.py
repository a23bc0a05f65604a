"""pytest fixtures for tests that boot the QEMU guest (mark them ``@pytest.mark.vm``).

- ``vm_boot_files`` (session): fetches the kernel and builds the initramfs once. It skips, with the reason,
  only when qemu-system-x86_64 is absent and $CI is unset; under CI a missing qemu or a failed kernel fetch
  is an error, never a silent skip.
- ``vm_deb`` (session): the checkout's Debian package (vm/deb.py), built once per tree state; skips like
  ``vm_boot_files`` when Debian's packaging tools or mmdebstrap are missing.
- ``vm_guest`` (function): ``vm_guest(command=None, *, script=..., **run_guest_options) -> GuestResult``.
  Each call gets its own results dir under ``tmp_path`` unless ``results_dir=`` is given, and the console
  of every boot is printed so that pytest shows it when the test fails.

Example::

    @pytest.mark.vm
    def test_guest_sees_the_disk(vm_guest, tmp_path):
        disk = Disk.create(tmp_path / "d.img", 32 << 20)
        r = vm_guest(["sh", "-c", "blockdev --getsize64 /dev/vda > /results/size"], disks=[disk])
        assert r.exit_code == 0
        assert (r.results_dir / "size").read_text().strip() == str(32 << 20)
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vm.deb import DebBuildError, ensure_deb
from vm.harness import BootFiles, GuestResult, prepare, run_guest
from vm.kernel import KernelFetchError
from vm.qemu import qemu_binary

# What the Debian package build and the Debian guest images run (scripts/bootstrap.sh installs them).
DEB_TOOLS = {"dpkg-buildpackage": "dpkg-dev", "dh": "debhelper", "help2man": "help2man",
             "mmdebstrap": "mmdebstrap", "lintian": "lintian"}


@pytest.fixture(scope="session")
def vm_boot_files() -> BootFiles:
    """The kernel and initramfs every guest boots; fetched and built once per session."""
    if qemu_binary() is None:
        reason = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and $CI is set: VM tests must run in CI")
        pytest.skip(reason)
    try:
        return prepare()
    except (KernelFetchError, RuntimeError, OSError) as exc:
        pytest.fail(f"cannot prepare the guest kernel/initramfs: {exc}")


@pytest.fixture
def vm_guest(vm_boot_files: BootFiles, tmp_path: Path) -> Callable[..., GuestResult]:
    """Run one guest boot; see vm.harness.run_guest for the options."""
    counter = itertools.count(1)

    def boot(command: Any = None, **options: Any) -> GuestResult:
        n = next(counter)
        options.setdefault("results_dir", tmp_path / f"vm-results-{n}")
        options.setdefault("boot_files", vm_boot_files)
        result = run_guest(command, **options)
        print(f"===== guest boot {n}: exit={result.exit_code} error={result.error} "
              f"duration={result.duration}s =====")
        print(result.console)
        return result

    return boot


@pytest.fixture(scope="session")
def vm_deb() -> Path:
    """The .deb built from the checkout under test (build/iscsi-bootkit_*_all.deb)."""
    missing = [f"{tool} ({pkg})" for tool, pkg in DEB_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        reason = f"missing {', '.join(missing)}: run scripts/bootstrap.sh"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and $CI is set")
        pytest.skip(reason)
    try:
        return ensure_deb()
    except DebBuildError as exc:
        pytest.fail(str(exc))
