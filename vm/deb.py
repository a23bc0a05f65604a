"""The project's Debian package, built from the checkout under test, for the Debian guest images.

`make deb` and the guest images build it the same way: ``scripts/build-deb.sh`` (dpkg-buildpackage out of
tree). A build is reused while the files git knows in the checkout (tracked, or new and not ignored) are
byte for byte the same, so a test session builds it once and an edit makes the next session rebuild. The
output is ``build/`` in the checkout, locked against two builds at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT / "scripts" / "build-deb.sh"
STAMP = ".deb-tree-hash"

Progress = Callable[[str], None]


class DebBuildError(RuntimeError):
    """The package could not be built; the message carries the build log's tail."""


def _noop(_: str) -> None:
    pass


def tree_files(project: Path = PROJECT) -> list[str]:
    """What build-deb.sh copies: the files git knows, minus those deleted from the work tree."""
    res = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=project,
                         capture_output=True, timeout=60, check=False)
    if res.returncode != 0:
        raise DebBuildError(f"git ls-files failed in {project}: {res.stderr.decode(errors='replace').strip()}")
    names = sorted({n for n in res.stdout.decode().split("\0") if n})
    return [n for n in names if os.path.lexists(project / n)]


def tree_hash(project: Path = PROJECT) -> str:
    h = hashlib.sha256(SCRIPT.read_bytes())
    for name in tree_files(project):
        path = project / name
        h.update(name.encode() + b"\0")
        h.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
        h.update(b"\1" if os.access(path, os.X_OK) else b"\0")
    return h.hexdigest()


def built_deb(out: Path) -> Path | None:
    debs = sorted(out.glob("iscsi-bootkit_*_all.deb"))
    return debs[-1] if debs else None


def ensure_deb(out: Path | None = None, progress: Progress = _noop) -> Path:
    """The .deb of the checkout as it is now: reused when nothing changed, else built (a few seconds)."""
    out = out or PROJECT / "build"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".deb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = tree_hash()
        stamp = out / STAMP
        deb = built_deb(out)
        if deb is not None and stamp.is_file() and stamp.read_text().strip() == key:
            return deb
        progress(f"building the Debian package from {PROJECT} ({SCRIPT.name})")
        res = subprocess.run([str(SCRIPT), str(out)], cwd=PROJECT, capture_output=True, text=True, timeout=900,
                             stdin=subprocess.DEVNULL, check=False)
        if res.returncode != 0:
            raise DebBuildError(f"{SCRIPT.name} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
        deb = built_deb(out)
        if deb is None:
            raise DebBuildError(f"{SCRIPT.name} succeeded but left no .deb in {out}")
        stamp.write_text(key + "\n")
        return deb


def depends(deb: Path) -> list[str]:
    """The package names of the .deb's Depends and Pre-Depends (first alternative, no version, no :any)."""
    names: list[str] = []
    for field in ("Pre-Depends", "Depends"):
        res = subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, timeout=60,
                             check=False)
        if res.returncode != 0:
            raise DebBuildError(f"dpkg-deb -f {deb} {field}: {res.stderr.strip()}")
        for item in res.stdout.replace("\n", " ").split(","):
            first = item.split("|")[0].strip()
            m = re.match(r"([a-z0-9][a-z0-9+.-]*)", first)
            if m and m.group(1) not in names:
                names.append(m.group(1))
    return names
