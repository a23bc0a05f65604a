"""One guest's root disk: a cached Debian root (vm/image.py) with the project installed the way an admin
installs it, the harness's guest-side files and the scenario's own files, made into a raw ext4 image.

The .deb goes in with ``apt-get install ./iscsi-bootkit_*.deb`` in a chroot of the copy (its dependencies
are already in the base root, so no network is needed), under a policy-rc.d that keeps maintainer scripts
from starting services; its postinst enables the units or init script as on any host. A packaging bug
therefore fails the guest's proof. The image is written with ``mke2fs -d`` (nothing is mounted on the
host) and is used read-write as /dev/vda by every boot of a reboot cycle (vm/image_boot.py).

Use::

    from vm.guest_image import make_image
    img = make_image(tmp_path / "root.img", "systemd", debs=[deb],
                     files={"/etc/uiscsi.conf": conf, "/etc/fstab.d-extra": ...}, dirs=["/srv/data"])
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from vm import image as base_image
from vm.deb import depends
from vm.kernel import KernelTree, ensure_kernel

# The harness's side of a Debian guest (vm/guest/image-*): the runner of each boot's command, the marker
# printer, and how each init system starts the runner once the boot is done.
HARNESS_FILES = {  # guest path -> (file in vm/guest, mode)
    "/usr/local/lib/bootkit-vm/job": ("image-job", 0o755),
    "/usr/local/sbin/bootkit-vm-mark": ("image-mark", 0o755),
    "/etc/systemd/system/bootkit-vm-job.service": ("image-job.service", 0o644),
    "/etc/init.d/bootkit-vm-job": ("image-job.init", 0o755),
}
POLICY_RC_D = "#!/bin/sh\n# bootkit vm: no service starts while the image is being built\nexit 101\n"
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
              "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}


@dataclass(frozen=True)
class FileSpec:
    """A file to put into the image (``files`` values may also be plain str/bytes, mode 0644)."""

    content: str | bytes
    mode: int = 0o644


@dataclass(frozen=True)
class GuestImage:
    """A raw ext4 root disk and how to boot it."""

    path: Path
    variant: str
    init: str
    kernel_release: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds per build step


def guest_file(name: str) -> bytes:
    return resources.files("vm").joinpath("guest", name).read_bytes()


def chroot(root: Path, *argv: str, what: str) -> subprocess.CompletedProcess[str]:
    """Run a program inside root (no mounts: apt, dpkg and update-rc.d need none)."""
    return base_image.run(["chroot", str(root), *argv], what, timeout=600, env=CHROOT_ENV)


def _put(root: Path, guest_path: str, spec: FileSpec | str | bytes) -> None:
    if not guest_path.startswith("/") or ".." in guest_path.split("/"):
        raise ValueError(f"image file {guest_path!r}: give an absolute path without '..'")
    spec = spec if isinstance(spec, FileSpec) else FileSpec(spec)
    path = root / guest_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    data = spec.content.encode() if isinstance(spec.content, str) else spec.content
    path.write_bytes(data)
    path.chmod(spec.mode)


def install_debs(root: Path, debs: Sequence[Path]) -> None:
    """``apt-get install ./X.deb`` in the root, as an admin would, with services kept from starting."""
    if not debs:
        return
    policy = root / "usr/sbin/policy-rc.d"
    incoming = root / "tmp/bootkit-debs"
    incoming.mkdir(parents=True, exist_ok=True)
    _put(root, "/usr/sbin/policy-rc.d", FileSpec(POLICY_RC_D, 0o755))
    try:
        names = []
        for deb in debs:
            shutil.copy(deb, incoming / deb.name)
            names.append(f"/tmp/bootkit-debs/{deb.name}")
        chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", *names,
               what=f"apt-get install {' '.join(d.name for d in debs)} in the image")
    finally:
        policy.unlink(missing_ok=True)
        shutil.rmtree(incoming, ignore_errors=True)


def enable(root: Path, variant: str, names: Sequence[str]) -> None:
    """Enable services in the image: systemd units with systemctl --root, init scripts with update-rc.d."""
    if not names:
        return
    if variant == "systemd":
        base_image.run(["systemctl", f"--root={root}", "enable", *names], f"enable {' '.join(names)}")
    elif variant == "sysvinit":
        for name in names:
            chroot(root, "update-rc.d", name, "defaults", what=f"update-rc.d {name} defaults")
    else:
        raise ValueError(f"the {variant} image boots no init system: nothing to enable")


def mke2fs(root: Path, image: Path, size_mb: int | None = None) -> None:
    """A raw ext4 image holding root's tree (owners, modes, links and device nodes kept)."""
    used = int(base_image.run(["du", "-sm", "--apparent-size", str(root)], "du").stdout.split()[0])
    count = int(base_image.run(["sh", "-c", f"find '{root}' -xdev | wc -l"], "count files").stdout)
    size = size_mb or used + used // 2 + 384  # room for logs, the proofs' files and fsck
    image.unlink(missing_ok=True)
    base_image.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "bootkit-root", "-N", str(max(2 * count, 32768)),
                    "-d", str(root), str(image), f"{size}M"], f"mke2fs -d {image}")


def make_image(path: str | Path, variant: str = "systemd", *, debs: Sequence[str | Path] = (),
               files: Mapping[str, FileSpec | str | bytes] | None = None, dirs: Sequence[str] = (),
               enable_units: Sequence[str] = (), size_mb: int | None = None, kernel: KernelTree | None = None,
               progress: base_image.Progress = base_image._noop) -> GuestImage:
    """Build the root disk at ``path`` (see the module docstring).

    ``debs`` are installed with apt, then the harness's files, ``dirs`` (mount points for shares) and
    ``files`` ({guest path: content}) are written, and ``enable_units`` enabled. The base root's
    packages include every dependency of the debs, so their install needs no network.
    """
    if variant not in base_image.INITS or not base_image.INITS[variant]:
        raise ValueError(f"variant {variant!r} does not boot: use one of systemd, sysvinit")
    out = Path(path)
    deb_paths = [Path(d).resolve() for d in debs]
    extra = sorted({name for deb in deb_paths for name in depends(deb)})
    timings: dict[str, float] = {}
    t = time.monotonic()
    kernel = kernel or ensure_kernel(progress)
    base = base_image.ensure_base(variant, kernel, extra, progress)
    timings["base"] = round(time.monotonic() - t, 2)
    work = Path(tempfile.mkdtemp(prefix=".bootkit-image-", dir=out.parent))
    try:
        root = work / "root"
        t = time.monotonic()
        base_image.run(["cp", "-a", "--reflink=auto", str(base.root), str(root)], "copy the cached root")
        timings["copy"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        install_debs(root, deb_paths)
        timings["install"] = round(time.monotonic() - t, 2)
        for guest_path, (name, mode) in HARNESS_FILES.items():
            _put(root, guest_path, FileSpec(guest_file(name), mode))
        enable(root, variant, ["bootkit-vm-job" + (".service" if variant == "systemd" else "")])
        for d in dirs:
            (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for guest_path, spec in (files or {}).items():
            _put(root, guest_path, spec)
        enable(root, variant, list(enable_units))
        t = time.monotonic()
        mke2fs(root, out, size_mb)
        timings["mke2fs"] = round(time.monotonic() - t, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.chmod(out, 0o644)
    return GuestImage(out, variant, base.init, kernel.release, timings)
