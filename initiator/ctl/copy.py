"""`uiscsictl cp SRC DST`: copy a local file to a LUN, a LUN to a file, or a LUN to a LUN.

The copy is pipelined: ``--queue-depth`` workers each own one chunk buffer, read into it (a LUN reads
straight into the buffer) and write it out, so several commands are in flight on the session. It copies
exactly the source's size; a source that ends mid-block is padded with zeros on a LUN. It ends with
SYNCHRONIZE CACHE on a LUN destination (fsync on a file), so "done" means durable on the target.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import os
import stat
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from ..scsi import commands as scsi
from ..scsi.parsers import Capacity
from .bound import Budget
from .direct import ToolError, add_session_options, bounded, logged_in, run_workers, tool_params, wait_budget
from .output import emit
from .progress import Progress, human_bytes, parse_size
from .url import ISCSIURL, parse_url

DEFAULT_CHUNK = 1 << 20
DEFAULT_QD = 8
MAX_CHUNK = 16 << 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cp", help="copy between a local file and a LUN (either way, or LUN to LUN)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Copy SRC to DST, each a local file or an iscsi:// URL. The source's whole size is copied "
                    "(a LUN's capacity, a file's length); a LUN destination must be at least that big, and "
                    "a file source that ends mid-block is padded with zeros there. Several commands are kept "
                    "in flight; the copy ends with SYNCHRONIZE CACHE (fsync for a file). A progress bar goes "
                    "to stderr when it is a terminal.",
        epilog="examples:\n  uiscsictl cp disk.img iscsi://192.0.2.10/iqn.2026-11.org.example:d/1\n"
               "  uiscsictl cp iscsi://192.0.2.10/iqn.2026-11.org.example:d/1 backup.img\n"
               "  uiscsictl cp iscsi://192.0.2.10/iqn.2026-11.org.example:d/1 - | gzip > backup.img.gz\n"
               "  uiscsictl cp --json --queue-depth 16 a.img iscsi://u%s@192.0.2.10:3261/iqn.2026-11.org.x:d/0")
    p.add_argument("source", metavar="SRC", help="local file, iscsi:// URL, or - (stdin redirected from a file)")
    p.add_argument("destination", metavar="DST",
                   help="local file (created if missing), iscsi:// URL, or - for stdout (the summary then goes to "
                        "stderr)")
    p.add_argument("--chunk-size", type=_chunk, default=DEFAULT_CHUNK, metavar="BYTES",
                   help="bytes per command (default 1M; suffixes k, M)")
    p.add_argument("--queue-depth", type=_positive_int, default=DEFAULT_QD, metavar="N",
                   help=f"commands in flight (default {DEFAULT_QD})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    add_session_options(p)
    p.set_defaults(func=cmd_cp)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _chunk(text: str) -> int:
    try:
        n = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n < 4096 or n > MAX_CHUNK or n & (n - 1):
        raise argparse.ArgumentTypeError(f"chunk size must be a power of two in 4k..{MAX_CHUNK >> 20}M")
    return n


@dataclass
class LunEnd:
    """One side of the copy that is a LUN on a logged-in session."""

    url: ISCSIURL
    session: Any
    capacity: Capacity
    budget: Budget

    @property
    def timeout(self) -> float:
        return self.budget.seconds

    @property
    def size(self) -> int:
        return self.capacity.size

    async def read_into(self, offset: int, buf: memoryview) -> None:
        bs = self.capacity.block_size
        lba = offset // bs
        await bounded(f"READ at LBA {lba}", self.budget,
                      lambda: scsi.read(self.session, self.url.lun, lba, len(buf) // bs, bs, into=buf,
                                        timeout=self.timeout))

    async def write(self, offset: int, data: memoryview) -> None:
        bs = self.capacity.block_size
        lba = offset // bs
        await bounded(f"WRITE at LBA {lba}", self.budget,
                      lambda: scsi.write(self.session, self.url.lun, lba, data, bs, timeout=self.timeout))

    async def finish(self) -> None:
        await bounded("SYNCHRONIZE CACHE", self.budget,
                      lambda: scsi.sync_cache(self.session, self.url.lun, self.timeout))


class FileEnd:
    """One side of the copy that is a local file or device; I/O runs in a thread to keep the pipe full.

    ``-`` is standard input (which must be a file: its size is needed up front) or standard output,
    where chunks are written strictly in order so a pipe gets a plain byte stream.
    """

    block_size = 1

    def __init__(self, path: str, writing: bool) -> None:
        self.stream = path == "-"
        self.path = ("<stdout>" if writing else "<stdin>") if self.stream else path
        if self.stream:
            self.fd = os.dup(1 if writing else 0)
        else:
            flags = (os.O_WRONLY | os.O_CREAT) if writing else os.O_RDONLY
            self.fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        st = os.fstat(self.fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(self.fd)
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        self.regular = stat.S_ISREG(st.st_mode) and not self.stream
        self._next = 0  # stream output: the offset that must be written next
        self._turn = asyncio.Condition()
        if writing:
            self.size = 0
        elif stat.S_ISREG(st.st_mode):
            self.size = st.st_size
        else:
            try:
                self.size = os.lseek(self.fd, 0, os.SEEK_END)
            except OSError:
                os.close(self.fd)
                raise ToolError(f"{self.path} is a pipe: cp needs a source whose size is known "
                                "(a file, a device or a URL)") from None

    async def read_into(self, offset: int, buf: memoryview) -> None:
        n = await self._io(os.preadv, self.fd, [buf], offset)
        if n != len(buf):
            raise ToolError(f"{self.path}: file shrank during the copy (short read at offset {offset})")

    async def write(self, offset: int, data: memoryview) -> None:
        if self.stream:
            await self._write_in_order(offset, data)
            return
        done = 0
        while done < len(data):
            done += await self._io(os.pwrite, self.fd, data[done:], offset + done)

    async def _write_in_order(self, offset: int, data: memoryview) -> None:
        """Wait for every earlier chunk, then write: workers take offsets in order, so one can always go."""
        async with self._turn:
            await self._turn.wait_for(lambda: self._next == offset)
            done = 0
            while done < len(data):
                done += await self._io(os.write, self.fd, data[done:])
            self._next += len(data)
            self._turn.notify_all()

    async def finish(self, size: int) -> None:
        if self.regular:
            await self._io(os.ftruncate, self.fd, size)
        try:
            await self._io(os.fsync, self.fd)
        except OSError as e:  # /dev/null and pipes cannot fsync (EINVAL); files and disks must
            if self.regular or e.errno not in (errno.EINVAL, errno.EROFS):
                raise

    async def _io(self, fn, *args):
        """Run ``fn`` in a thread; an OS error gets the file's name (pread/pwrite errors have none)."""
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as e:
            if e.filename is None and e.errno is not None:
                raise type(e)(e.errno, e.strerror, self.path) from None
            raise

    def close(self) -> None:
        os.close(self.fd)


async def _open_lun(stack: AsyncExitStack, text: str, args: argparse.Namespace) -> LunEnd:
    url = parse_url(text)
    params = tool_params(url.session, args)
    budget = wait_budget(args)
    session = await stack.enter_async_context(logged_in(params, budget, url.portal))
    cap = await bounded("READ CAPACITY", budget, lambda: scsi.read_capacity(session, url.lun, args.timeout))
    if cap.block_size <= 0 or cap.block_size & (cap.block_size - 1) or cap.block_size > args.chunk_size:
        raise ToolError(f"{url.redacted()}: block size {cap.block_size} is not supported for cp")
    return LunEnd(url, session, cap, budget)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


async def cmd_cp(args: argparse.Namespace) -> int:
    src_is_url, dst_is_url = args.source.startswith("iscsi://"), args.destination.startswith("iscsi://")
    if not src_is_url and not dst_is_url and _same_file(args.source, args.destination):
        raise ToolError(f"{args.source} and {args.destination} are the same file")
    async with AsyncExitStack() as stack:
        if src_is_url:
            src: LunEnd | FileEnd = await _open_lun(stack, args.source, args)
        else:
            src = FileEnd(args.source, writing=False)
            stack.callback(src.close)
        if dst_is_url:
            dst: LunEnd | FileEnd = await _open_lun(stack, args.destination, args)
            if dst.size < src.size:
                raise ToolError(f"{dst.url.redacted()} holds {dst.size} bytes, the source has {src.size}")
        else:
            dst = FileEnd(args.destination, writing=True)
            stack.callback(dst.close)
        size = src.size
        progress = Progress(size, "cp", enabled=False if args.no_progress or args.json else None)
        start = time.monotonic()
        try:
            await _pump(src, dst, size, args.chunk_size, args.queue_depth, progress)
            if isinstance(dst, LunEnd):
                await dst.finish()
            else:
                await dst.finish(size)
            progress.finish()
        finally:
            progress.end_line()  # an error message must not land in the middle of the bar
        seconds = time.monotonic() - start
        # how each LUN's session fared: reconnects, and the digest errors ERL 1 recovered without one
        stats = {side: dataclasses.asdict(end.session.stats) for side, end in (("source", src), ("destination", dst))
                 if isinstance(end, LunEnd)}
    rate = size / seconds / (1 << 20) if seconds > 0 else 0.0
    doc = {"source": _name(args.source), "destination": _name(args.destination), "bytes": size,
           "seconds": round(seconds, 3), "mb_per_s": round(rate, 1), "session_stats": stats}
    text = f"copied {size} bytes ({human_bytes(size)}) in {seconds:.2f} s, {rate:.1f} MiB/s"
    return emit(args, doc, text, stream=sys.stderr if args.destination == "-" else None)


def _name(text: str) -> str:
    return parse_url(text).redacted() if text.startswith("iscsi://") else text


async def _pump(src: LunEnd | FileEnd, dst: LunEnd | FileEnd, size: int, chunk: int, depth: int,
                progress: Progress) -> None:
    """Move ``size`` bytes with ``depth`` workers; the first error cancels the rest and is raised."""
    dst_bs = dst.capacity.block_size if isinstance(dst, LunEnd) else 1
    offsets = iter(range(0, size, chunk))

    async def worker() -> None:
        buf = memoryview(bytearray(chunk))
        for off in offsets:
            n = min(chunk, size - off)
            await src.read_into(off, buf[:n])
            padded = -(-n // dst_bs) * dst_bs
            if padded != n:
                buf[n:padded] = bytes(padded - n)
            await dst.write(off, buf[:padded])
            progress.advance(n)

    await run_workers(worker, min(depth, max(1, -(-size // chunk))))
