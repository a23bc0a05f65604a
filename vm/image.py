"""Debian guest roots built from Debian packages with mmdebstrap, cached by their package list.

One machinery, several variants: ``systemd`` (systemd-sysv as PID 1), ``sysvinit`` (sysvinit-core with
Debian's initscripts) and ``minbase`` (nothing but apt and dpkg, with the archives of the extra packages
downloaded but not installed: the "fresh Debian root" an install test puts a .deb into). Every variant gets
the cached guest kernel's modules (vm/kernel.py) under /lib/modules, so modprobe works in the guest.

A root is built once and kept under ``${XDG_CACHE_HOME:-~/.cache}/iscsi-bootkit/images/<variant>-<key>/root``;
the key hashes the suite, the package list, the kernel release and this module's setup steps, so a second
run reuses it and a change rebuilds it. Builds take a file lock (parallel sessions wait for one build).
mmdebstrap runs in ``--mode=unshare``: its mounts (/proc, /dev in the chroot) live in a private mount
namespace, never on the host. Nothing here mounts anything; the guest root image is made from a copy of
the directory with ``mke2fs -d`` (vm/guest_image.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vm.kernel import KernelTree, cache_root

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BUILD_VERSION = "1"  # bump when a setup step below changes what a root holds
STAMP = "image.json"
STALE_AFTER = 24 * 3600  # a superseded root of the same variant is removed once unused this long

# What every booting guest has: udev names devices (systemd sees none without it), e2fsprogs, xfsprogs,
# btrfs-progs and util-linux for the filesystems an admin's fstab line may name (their fsck.* and mkfs.*),
# kmod for modprobe, iproute2 and procps for the proofs, python3.
COMMON = ("udev", "kmod", "e2fsprogs", "xfsprogs", "btrfs-progs", "util-linux", "iproute2", "procps", "python3")
VARIANTS: dict[str, tuple[str, ...]] = {
    # systemd-networkd (in the systemd package) configures eth0: it leaves the link up at shutdown
    # (KeepConfiguration=yes), while ifupdown's networking.service runs `ifdown -a` in the shutdown
    # transaction, under a filesystem that may still be mounted.
    "systemd": (*COMMON, "systemd-sysv"),
    # Debian's own rcS/rc0/rc6 sequence; ifupdown's init script keeps eth0 up while /dev/nbd* is mounted.
    "sysvinit": (*COMMON, "sysvinit-core", "initscripts", "sysv-rc", "ifupdown"),
    "minbase": (),
}
INITS = {"systemd": "/lib/systemd/systemd", "sysvinit": "/sbin/init", "minbase": ""}
# Hardware a QEMU virtio guest never has: left out of the image (about 60 % of the modules).
MODULE_SKIP = ("kernel/sound", "kernel/drivers/gpu", "kernel/drivers/media", "kernel/drivers/net/wireless",
               "kernel/drivers/net/ethernet", "kernel/drivers/infiniband", "kernel/drivers/iio",
               "kernel/drivers/staging", "kernel/drivers/hid", "kernel/drivers/usb", "kernel/drivers/hwmon",
               "kernel/drivers/input", "kernel/drivers/bluetooth", "kernel/net/wireless",
               "kernel/net/mac80211", "kernel/net/bluetooth", "kernel/drivers/platform")
DPKG_EXCLUDES = ("path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*",
                 "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
                 "path-exclude=/usr/share/info/*")
# Units that only cost CPU in a short TCG boot (timers for daily jobs, gettys nobody logs in on).
SYSTEMD_MASK = ("getty.target", "serial-getty@ttyS0.service", "apt-daily.timer", "apt-daily-upgrade.timer",
                "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "systemd-tmpfiles-clean.timer")
GUEST_IP = "10.0.2.15/24"
GATEWAY = "10.0.2.2"  # QEMU user networking: the host's loopback

Progress = Callable[[str], None]


class ImageError(RuntimeError):
    """A root could not be built (mmdebstrap, the network, a setup step); the message says which."""


@dataclass(frozen=True)
class BaseRoot:
    """A cached root directory and what it was built from."""

    variant: str
    root: Path
    packages: tuple[str, ...]
    kernel_release: str
    seconds: float  # how long the build took (0 when it was only read from the cache)

    @property
    def init(self) -> str:
        return INITS[self.variant]


def _noop(_: str) -> None:
    pass


def packages_for(variant: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    if variant not in VARIANTS:
        raise ImageError(f"unknown image variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    return tuple(sorted(set(VARIANTS[variant]) | set(extra)))


def cache_key(variant: str, packages: Sequence[str], kernel: KernelTree) -> str:
    h = hashlib.sha256(f"{BUILD_VERSION}\0{SUITE}\0{MIRROR}\0{variant}\0{kernel.release}\0".encode())
    h.update("\0".join(packages).encode())
    h.update(Path(__file__).read_bytes())  # the setup steps are part of what a root is
    return h.hexdigest()[:16]


def images_dir() -> Path:
    return cache_root() / "images"


def _load(entry: Path) -> BaseRoot | None:
    try:
        meta = json.loads((entry / STAMP).read_text())
        base = BaseRoot(meta["variant"], entry / "root", tuple(meta["packages"]), meta["kernel_release"], 0.0)
    except (OSError, ValueError, KeyError):
        return None
    return base if base.root.is_dir() else None


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_base(variant: str, kernel: KernelTree, extra: Sequence[str] = (),
                progress: Progress = _noop) -> BaseRoot:
    """The cached root for ``variant`` plus ``extra`` packages (installed; for ``minbase`` downloaded
    only), built first when the cache has none. Safe to call from parallel processes."""
    packages = packages_for(variant, extra)
    entry = images_dir() / f"{variant}-{cache_key(variant, packages, kernel)}"
    if (base := _load(entry)) is not None:
        os.utime(entry / STAMP)  # marks it in use, see _prune
        return base
    with _locked(images_dir()):
        if (base := _load(entry)) is not None:
            return base
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=images_dir()))
        try:
            _build(variant, packages, kernel, work / "root", progress)
            meta = {"variant": variant, "packages": list(packages), "kernel_release": kernel.release,
                    "suite": SUITE, "seconds": round(time.monotonic() - t0, 1)}
            (work / STAMP).write_text(json.dumps(meta, indent=1) + "\n")
            if entry.exists():
                shutil.rmtree(entry)
            work.rename(entry)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        _prune(variant, keep=entry)
    seconds = round(time.monotonic() - t0, 1)
    progress(f"{variant} root built in {seconds:g} s: {entry}")
    return BaseRoot(variant, entry / "root", packages, kernel.release, seconds)


def _prune(variant: str, keep: Path) -> None:
    for old in images_dir().glob(f"{variant}-*"):
        try:
            if old != keep and time.time() - (old / STAMP).stat().st_mtime > STALE_AFTER:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def run(argv: list[str], what: str, timeout: float = 1800, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a setup step; raise ImageError with its output's tail when it fails."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                             check=False, **kw)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise ImageError(f"{what}: {argv[0]} not found (scripts/bootstrap.sh installs it)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{what}: no result in {timeout:g} s") from exc
    if res.returncode != 0:
        tail = (res.stdout + res.stderr).strip()[-3000:]
        raise ImageError(f"{what} failed (exit {res.returncode}):\n{tail}")
    return res


def _build(variant: str, packages: Sequence[str], kernel: KernelTree, root: Path, progress: Progress) -> None:
    argv = ["mmdebstrap", "--mode=unshare", "--variant=minbase", f"--architectures={_arch()}"]
    argv += [f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES]
    if variant == "minbase" and packages:
        # a fresh root: apt's lists and the packages' archives are there, nothing else is installed
        argv += ["--skip=cleanup/apt/lists", "--skip=cleanup/apt/cache",
                 "--customize-hook=chroot \"$1\" apt-get install --download-only -y --no-install-recommends "
                 + " ".join(packages)]
    elif packages:
        argv.append("--include=" + ",".join(packages))
    argv += [SUITE, str(root), MIRROR]
    progress(f"building the {variant} root with mmdebstrap ({len(packages)} packages, about a minute)")
    run(argv, f"mmdebstrap ({variant})")
    _dev_nodes(root)
    if variant == "minbase":
        return  # never booted: no modules, no configuration
    _copy_modules(kernel, root)
    run(["depmod", "-b", str(root), kernel.release], "depmod in the image")
    _configure(variant, root)


# The nodes maintainer scripts write to when a .deb is installed in a chroot of the root (mmdebstrap's
# unshare mode leaves /dev empty; without them `>/dev/null` makes a file). A booted guest mounts devtmpfs.
DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
             "tty": (5, 0)}


def _dev_nodes(root: Path) -> None:
    for name, (major, minor) in DEV_NODES.items():
        path = root / "dev" / name
        if not path.exists():
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            path.chmod(0o666)


def _arch() -> str:
    return run(["dpkg", "--print-architecture"], "dpkg --print-architecture").stdout.strip()


def _copy_modules(kernel: KernelTree, root: Path) -> None:
    src = kernel.modules_dir
    dst = root / "lib" / "modules" / kernel.release
    skip = {src / rel for rel in MODULE_SKIP}
    shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: [n for n in names if Path(d, n) in skip])


def write(root: Path, rel: str, text: str, mode: int = 0o644) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def _configure(variant: str, root: Path) -> None:
    """What a Debian installer would have asked: name, fstab, network; plus the harness's mount points."""
    write(root, "etc/hostname", "bootkit-vm\n")
    write(root, "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tbootkit-vm\n")
    write(root, "etc/fstab", "# the guest's root disk (the harness's raw ext4 image)\n"
                             "/dev/vda / ext4 errors=remount-ro 0 1\n")
    (root / "results").mkdir(exist_ok=True)
    if variant == "systemd":
        write(root, "etc/systemd/network/10-eth0.network",
              f"[Match]\nName=eth0\n\n[Network]\nAddress={GUEST_IP}\nGateway={GATEWAY}\n"
              "# leave the link configured when networkd stops at shutdown: a filesystem on the network\n"
              "# may still be mounted until systemd-shutdown's last unmount\nKeepConfiguration=yes\n")
        run(["systemctl", f"--root={root}", "enable", "systemd-networkd.service"], "enable systemd-networkd")
        run(["systemctl", f"--root={root}", "mask", *SYSTEMD_MASK], "mask idle units")
        run(["systemd-machine-id-setup", f"--root={root}"], "machine id")
    elif variant == "sysvinit":
        ip, prefix = GUEST_IP.split("/")
        write(root, "etc/network/interfaces", "auto lo\niface lo inet loopback\n\n"
                                              f"auto eth0\niface eth0 inet static\n    address {ip}/{prefix}\n"
                                              f"    gateway {GATEWAY}\n")
        inittab = root / "etc/inittab"
        lines = inittab.read_text().splitlines(keepends=True)
        # no console to log in on: the gettys would only respawn
        inittab.write_text("".join("#" + ln if ":respawn:/sbin/getty" in ln else ln for ln in lines))
