"""Build (and cache) the guest initramfs: static busybox, the stage-1 ``/init`` and the modules it loads.

The kernel modules are not built in, so ``/init`` insmods them in dependency order; the order is computed
here from the kernel's own ``modules.dep`` so that a newer Debian kernel needs no edit. The archive is cached
under the kernel cache keyed by a hash of every input, so it is rebuilt only when one of them changes.

Two flavours: ``host`` (the default) boots the host's root over 9p (vm/guest/init, stage2); ``image``
boots a Debian root disk (vm/guest/image-init, vm/guest_image.py), so it needs only the disk, ext4 and 9p.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import struct
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vm import cpio
from vm.kernel import KernelTree, cache_root

# What the guest needs at boot; dependencies are added from modules.dep. crc32c_generic and libcrc32c are
# named explicitly: ext4 only soft-depends on crc32c and fails to mount without it.
WANTED_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_net", "9pnet_virtio", "9p", "overlay",
    "crc32c_generic", "libcrc32c", "ext4", "nbd",
)
IMAGE_MODULES = ("virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "crc32c_generic", "libcrc32c", "ext4")
BUILD_VERSION = "1"  # bump when the archive layout changes
GUEST_FILES = ("init", "stage2")


@dataclass(frozen=True)
class Flavour:
    """What one kind of initramfs holds: its modules, its /init (a file in vm/guest) and extra files."""

    name: str
    modules: tuple[str, ...]
    init: str
    files: tuple[str, ...]  # vm/guest files copied to the archive's root (besides /init)
    dirs: tuple[str, ...]  # in archive order


FLAVOURS = {
    "host": Flavour("host", WANTED_MODULES, "init", ("stage2",),
                    ("bin", "dev", "etc", "lib", "lib/modules", "lower", "newroot", "proc", "sys", "upper", "run")),
    "image": Flavour("image", IMAGE_MODULES, "image-init", (),
                     ("bin", "dev", "etc", "lib", "lib/modules", "newroot", "job", "proc", "sys", "run")),
}
STALE_AFTER = 6 * 3600  # seconds before a superseded build is removed


class InitramfsError(RuntimeError):
    """A required input (busybox, a module) is missing or unusable."""


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """``modules.dep`` as {relative path: [dependency paths]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" in line:
            path, _, rest = line.partition(":")
            deps[path.strip()] = rest.split()
    return deps


def module_name(path: str) -> str:
    """``kernel/fs/ext4/ext4.ko.xz`` -> ``ext4`` (the kernel treats '-' and '_' alike)."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def load_order(deps: dict[str, list[str]], wanted: tuple[str, ...], builtin: set[str]) -> list[str]:
    """Module paths to insmod, each after everything it depends on; built-in modules are skipped."""
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str, chain: tuple[str, ...]) -> None:
        if path in seen:
            return
        if path in chain:
            raise InitramfsError(f"dependency cycle: {' -> '.join(chain + (path,))}")
        for dep in deps.get(path, []):
            visit(dep, chain + (path,))
        seen.add(path)
        order.append(path)

    for name in wanted:
        if name in builtin:
            continue
        if name not in by_name:
            raise InitramfsError(f"module {name} is neither in modules.dep nor built in")
        visit(by_name[name], ())
    return order


def busybox_path() -> Path:
    """The static busybox (Debian's busybox-static puts it at /bin/busybox)."""
    found = shutil.which("busybox") or "/bin/busybox"
    path = Path(found)
    if not path.is_file():
        raise InitramfsError("busybox not found: install busybox-static")
    if not is_static_elf(path.read_bytes()):
        raise InitramfsError(f"{path} is dynamically linked: install busybox-static")
    return path


def is_static_elf(data: bytes) -> bool:
    """True for a 64-bit little-endian ELF with no PT_INTERP program header."""
    if data[:5] != b"\x7fELF\x02" or data[5] != 1:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def guest_file(name: str) -> bytes:
    """A file shipped in ``vm/guest/`` (package data)."""
    return resources.files("vm").joinpath("guest", name).read_bytes()


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def _builtin(kernel: KernelTree) -> set[str]:
    try:
        text = (kernel.modules_dir / "modules.builtin").read_text()
    except OSError:
        return set()
    return {module_name(line) for line in text.split()}


def plan(kernel: KernelTree, wanted: tuple[str, ...] = WANTED_MODULES) -> list[str]:
    deps = parse_modules_dep((kernel.modules_dir / "modules.dep").read_text())
    return load_order(deps, wanted, _builtin(kernel))


def _cache_key(kernel: KernelTree, modules: list[str], busybox: Path, flavour: Flavour = FLAVOURS["host"]) -> str:
    h = hashlib.sha256(BUILD_VERSION.encode())
    if flavour.name != "host":  # the host flavour's key (and file name) stays what it always was
        h.update(repr(flavour).encode())
        h.update(guest_file(flavour.init))
    h.update(kernel.release.encode() + b"\0" + str(kernel.root).encode())
    for rel in modules:
        st = (kernel.modules_dir / rel).stat()
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(hashlib.sha256(busybox.read_bytes()).digest())
    for name in GUEST_FILES:
        h.update(guest_file(name))
    return h.hexdigest()[:16]


def build_entries(kernel: KernelTree, modules: list[str], busybox: bytes,
                  flavour: Flavour = FLAVOURS["host"]) -> list[cpio.Entry]:
    """The archive members, in an order where every directory precedes its contents."""
    names = [module_name(m) for m in modules]
    entries = [cpio.directory(d) for d in flavour.dirs]
    entries += [
        cpio.chardev("dev/console", 5, 1),
        cpio.chardev("dev/null", 1, 3, 0o666),
        cpio.regular("bin/busybox", busybox, 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.regular("init", guest_file(flavour.init), 0o755),
        *(cpio.regular(name, guest_file(name), 0o755) for name in flavour.files),
        cpio.regular("etc/bootkit-modules", ("\n".join(names) + "\n").encode()),
        cpio.regular("etc/bootkit-release", (kernel.release + "\n").encode()),
    ]
    for rel, name in zip(modules, names, strict=True):
        entries.append(cpio.regular(f"lib/modules/{name}.ko", _module_bytes(kernel.modules_dir / rel)))
    return entries


def ensure_initramfs(kernel: KernelTree, flavour: str = "host") -> Path:
    """Return the cached initramfs for ``kernel``, building it first when any input changed."""
    fl = FLAVOURS[flavour]
    modules = plan(kernel, fl.modules)
    busybox = busybox_path()
    out_dir = cache_root() / "initramfs"
    out = out_dir / f"initramfs-{kernel.release}-{_cache_key(kernel, modules, busybox, fl)}.cpio.gz"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    data = cpio.archive(build_entries(kernel, modules, busybox.read_bytes(), fl))
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
    tmp.replace(out)
    for stale in out_dir.glob("initramfs-*.cpio.gz"):  # old builds; a running session may still boot one
        try:
            if stale != out and time.time() - stale.stat().st_mtime > STALE_AFTER:
                stale.unlink()
        except OSError:
            pass
    return out
