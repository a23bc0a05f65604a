"""The QEMU command line for one guest boot, as a pure function of the boot's settings.

Always ``-accel tcg``: /dev/kvm exists on the CI hosts but hangs. ``-no-reboot`` turns any guest reboot
(or kernel panic, with ``panic=-1``) into a QEMU exit, so a boot always ends.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"
FORMATS = ("raw", "qcow2")


@dataclass(frozen=True)
class Disk:
    """A virtio disk file; the guest sees the N-th disk as /dev/vd{a,b,...} in the order given.

    ``raw`` is best for power-cut tests: what the guest wrote is exactly what the file holds.
    """

    path: Path
    format: str = "raw"
    readonly: bool = False

    @classmethod
    def of(cls, spec: Disk | str | Path) -> Disk:
        if isinstance(spec, Disk):
            return spec
        path = Path(spec)
        return cls(path, "qcow2" if path.suffix == ".qcow2" else "raw")

    @classmethod
    def create(cls, path: str | Path, size: int) -> Disk:
        """A new sparse raw disk of ``size`` bytes (an existing file is truncated to zeros)."""
        p = Path(path)
        with open(p, "wb") as fh:
            fh.truncate(size)
        return cls(p)


@dataclass(frozen=True)
class Export:
    """A host directory shared over 9p under ``tag``."""

    tag: str
    path: Path
    readonly: bool


@dataclass(frozen=True)
class BootSpec:
    """``job_dir`` is the host-root guest's job (None for a Debian image); ``host_root`` shares the host's
    / read-only (the busybox guest runs it; a Debian image guest must not see it)."""

    vmlinuz: Path
    initramfs: Path
    job_dir: Path | None
    mem: int = 1024
    cpus: int = 2
    disks: tuple[Disk, ...] = ()
    net: bool = False
    hostfwd: tuple[tuple[int, int], ...] = ()  # (host port on 127.0.0.1, guest port): TCP into the guest
    exports: tuple[Export, ...] = ()
    kernel_quiet: bool = True
    extra_cmdline: tuple[str, ...] = field(default=())
    host_root: bool = True


def qemu_binary() -> str | None:
    return shutil.which(QEMU)


def _opt(value: str | Path) -> str:
    """QEMU option values escape a comma by doubling it."""
    return str(value).replace(",", ",,")


def cmdline(spec: BootSpec) -> str:
    words = ["console=ttyS0", "panic=-1", "rdinit=/init"]
    if spec.job_dir is not None:
        words.append(f"bootkit.job={spec.job_dir}")
    if spec.kernel_quiet:
        words.append("quiet")
    return " ".join(words + list(spec.extra_cmdline))


def argv(spec: BootSpec, qemu: str = QEMU) -> list[str]:
    """Everything after the fork: ``subprocess.Popen(argv(spec), stdout=PIPE, stdin=DEVNULL)``."""
    if any(c.isspace() for c in str(spec.job_dir)):
        raise ValueError(f"job dir {spec.job_dir} contains whitespace")
    args = [
        qemu, "-accel", "tcg", "-cpu", "max", "-m", str(spec.mem), "-smp", str(spec.cpus),
        "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
        "-serial", "stdio", "-monitor", "none",
        "-kernel", str(spec.vmlinuz), "-initrd", str(spec.initramfs), "-append", cmdline(spec),
    ]
    if spec.host_root:
        args += ["-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap"]
    for ex in spec.exports:
        ro = ",readonly=on" if ex.readonly else ""
        opts = f"local,path={_opt(ex.path)},mount_tag={ex.tag},security_model=none,multidevs=remap{ro}"
        args += ["-virtfs", opts]
    for disk in spec.disks:
        if disk.format not in FORMATS:
            raise ValueError(f"{disk.path}: disk format {disk.format!r} is not one of {FORMATS}")
        ro = ",readonly=on" if disk.readonly else ""
        args += ["-drive", f"file={_opt(disk.path)},format={disk.format},if=virtio,cache=writeback{ro}"]
    if spec.net or spec.hostfwd:
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{int(h)}-:{int(g)}" for h, g in spec.hostfwd)
        args += ["-netdev", f"user,id=n0{fwd}", "-device", "virtio-net-pci,netdev=n0"]
    return args
