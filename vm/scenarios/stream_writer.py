"""The restart proof's writer, run in the guest: files of random bytes, each fsync'd, each sha256 recorded.

    python3 -m vm.scenarios.stream_writer DIR RESULTS --size BYTES --rate PER_SECOND --cap FILES

It writes DIR/f1, f2, ... (each fsync'd, and DIR fsync'd after it, so the name is durable too), appends
"SHA256  fN" to DIR/MANIFEST (fsync'd) and to RESULTS/manifest, and the write's start and end (guest
epoch seconds) to RESULTS/latency, until RESULTS/stop appears or CAP files are written. RESULTS/writing
appears with the first file; RESULTS/writer gets "FILES ERRORS" at the end, RESULTS/writer.err the errors.
No imports beyond the standard library: it starts fast under TCG.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path


def _append(path: Path, text: str, durable: bool = False) -> None:
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        if durable:
            os.fsync(f.fileno())


def write_stream(directory: Path, results: Path, size: int, rate: float, cap: int) -> tuple[int, int]:
    """Write until told to stop; returns (files attempted, errors)."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    n = errors = 0
    try:
        while not (results / "stop").exists() and n < cap:
            n += 1
            data = os.urandom(size)
            start = time.time()
            try:
                fd = os.open(directory / f"f{n}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.fsync(dir_fd)
                line = f"{hashlib.sha256(data).hexdigest()}  f{n}\n"
                _append(directory / "MANIFEST", line, durable=True)
            except OSError as e:
                errors += 1
                _append(results / "writer.err", f"f{n}: {e}\n")
                continue
            end = time.time()
            _append(results / "manifest", line)
            _append(results / "latency", f"f{n} {start:.6f} {end:.6f}\n")
            if n == 1:
                (results / "writing").touch()
            time.sleep(max(0.0, 1.0 / rate - (end - start)))
    finally:
        os.close(dir_fd)
    (results / "writer").write_text(f"{n} {errors}\n")
    return n, errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stream_writer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path)
    p.add_argument("results", type=Path)
    p.add_argument("--size", type=int, default=32 << 10)
    p.add_argument("--rate", type=float, default=10.0, help="files per second at most")
    p.add_argument("--cap", type=int, default=1000, help="files at most")
    a = p.parse_args(argv)
    _, errors = write_stream(a.directory, a.results, a.size, a.rate, a.cap)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
