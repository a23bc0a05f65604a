"""Fetch and cache the guest kernel: Debian's generic ``linux-image-*-amd64`` unpacked with ``dpkg -x``.

Why this kernel: it is the distribution's own, it carries 9p (the ``-cloud`` flavour does not), nbd, ext4 and
overlay as modules, and ``apt-get download`` needs neither root nor an install. The cache lives under
``${XDG_CACHE_HOME:-~/.cache}/iscsi-bootkit/kernel/<package>/`` and a fetch is a no-op once it is complete.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

META_PACKAGE = "linux-image-amd64"
STAMP = ".complete"

Progress = Callable[[str], None]


class KernelFetchError(RuntimeError):
    """The kernel could not be resolved, downloaded or unpacked; the message says which step and why."""


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/iscsi-bootkit``: shared by the kernel and the initramfs builds."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "iscsi-bootkit"


@dataclass(frozen=True)
class KernelTree:
    """An unpacked kernel package: ``root`` holds ``boot/vmlinuz-<release>`` and ``lib/modules/<release>``."""

    package: str
    release: str
    root: Path

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def _noop(_: str) -> None:
    pass


def parse_depends(text: str) -> str:
    """Pick the generic kernel image out of ``apt-cache depends linux-image-amd64`` output."""
    names = re.findall(r"Depends:\s*(linux-image-[\w.+-]+)", text)
    generic = [n for n in names if n.endswith("-amd64") and not re.search(r"-(cloud|rt)-amd64$", n)]
    if not generic:
        raise KernelFetchError(f"apt-cache depends {META_PACKAGE}: no generic linux-image-*-amd64 in {names}")
    return generic[0]


def resolve_package() -> str:
    """The current kernel package name, from the local apt lists (no network)."""
    try:
        out = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True,
                             timeout=60, check=False)
    except FileNotFoundError as exc:
        raise KernelFetchError("apt-cache not found: the kernel fetch needs a Debian-family host") from exc
    if out.returncode != 0:
        raise KernelFetchError(f"apt-cache depends {META_PACKAGE} failed: {out.stderr.strip()}")
    return parse_depends(out.stdout)


def _load(directory: Path) -> KernelTree | None:
    try:
        meta = json.loads((directory / STAMP).read_text())
        tree = KernelTree(meta["package"], meta["release"], directory / "root")
    except (OSError, ValueError, KeyError):
        return None
    return tree if tree.vmlinuz.is_file() and (tree.modules_dir / "modules.dep").is_file() else None


def _natural(name: str) -> list[object]:
    """Sort key where 6.1.0-56 comes after 6.1.0-9."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def cached_kernels() -> list[KernelTree]:
    """Every complete kernel in the cache, newest package name last."""
    base = cache_root() / "kernel"
    if not base.is_dir():
        return []
    dirs = sorted((d for d in base.iterdir() if not d.name.startswith(".")), key=lambda d: _natural(d.name))
    return [t for t in (_load(d) for d in dirs) if t is not None]


def ensure_kernel(progress: Progress = _noop) -> KernelTree:
    """The newest cached kernel without asking apt anything; fetch one only when the cache is empty."""
    cached = cached_kernels()
    return cached[-1] if cached else fetch(progress)


@contextmanager
def _locked(base: Path) -> Iterator[None]:
    """Serialise fetches between processes (two pytest runs may start at once)."""
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(argv: list[str], cwd: Path, what: str, progress: Progress, stream: bool = False) -> None:
    progress(f"{what}: {' '.join(argv)}")
    try:
        proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, text=True, check=False,
                              stdout=sys.stderr.fileno() if stream else subprocess.PIPE,
                              stderr=None if stream else subprocess.STDOUT, timeout=1800)
    except FileNotFoundError as exc:
        raise KernelFetchError(f"{what}: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise KernelFetchError(f"{what}: timed out") from exc
    if proc.returncode != 0:
        detail = (proc.stdout or "").strip()[-2000:]
        raise KernelFetchError(f"{what} failed (exit {proc.returncode}){': ' + detail if detail else ''}")


def fetch(progress: Progress = _noop, force: bool = False, package: str | None = None) -> KernelTree:
    """Make sure the current generic kernel is unpacked in the cache and return it.

    Idempotent: a complete cache entry is returned at once. When apt-cache cannot name a package (no apt
    lists) the newest cached kernel is used, so an offline host with a warm cache still boots.
    """
    base = cache_root() / "kernel"
    try:
        name = package or resolve_package()
    except KernelFetchError as exc:
        cached = cached_kernels()
        if cached and not force:
            return cached[-1]
        if os.geteuid() != 0:
            raise KernelFetchError(f"{exc} (run `apt-get update` as root, then retry)") from exc
        # A fresh container often has no apt lists at all: fetch them once and ask again.
        _run(["apt-get", "update", "-q"], Path("/"), "no apt lists; updating", progress, stream=True)
        name = resolve_package()
    target = base / name
    if not force and (tree := _load(target)) is not None:
        return tree
    with _locked(base):
        if not force and (tree := _load(target)) is not None:
            return tree
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
        try:
            tree = _download_and_unpack(name, work, progress)
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
            for old in base.iterdir():  # a superseded kernel is ~400 MB
                if old != target and not old.name.startswith(".") and _load(old) is not None:
                    shutil.rmtree(old, ignore_errors=True)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    progress(f"kernel {tree.release} cached in {target}")
    result = _load(target)
    if result is None:
        raise KernelFetchError(f"cache entry {target} is incomplete after the fetch")
    return result


def _download_and_unpack(name: str, work: Path, progress: Progress) -> KernelTree:
    argv = ["apt-get", "download"]
    if os.geteuid() == 0:
        argv += ["-o", "APT::Sandbox::User=root"]  # _apt cannot write into a root-owned cache dir
    _run(argv + [name], work, f"downloading {name}", progress, stream=True)
    debs = sorted(work.glob("*.deb"))
    if not debs:
        raise KernelFetchError(f"apt-get download {name} produced no .deb")
    root = work / "root"
    _run(["dpkg", "-x", str(debs[0]), str(root)], work, "unpacking", progress)
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise KernelFetchError(f"{debs[0].name} holds no boot/vmlinuz-*")
    release = vmlinuz[0].name.removeprefix("vmlinuz-")
    _run(["depmod", "-b", str(root), release], work, "indexing modules", progress)
    for deb in debs:
        deb.unlink()
    (work / STAMP).write_text(json.dumps({"package": name, "release": release}) + "\n")
    return KernelTree(name, release, root)
