"""`uiscsictl perf URL`: a fixed-time load of reads or writes, the counterpart of libiscsi's iscsi-perf.

``--queue-depth`` workers each keep one command in flight, reading straight into their own buffer, for
``--seconds``. Sequential I/O walks the LUN and wraps; random I/O picks block-size-aligned offsets.
MB/s counts 2**20 bytes, as iscsi-perf does, so the two print comparable numbers. Writes destroy the
LUN's contents and are only done with --write.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import struct
import time

from ..errors import CommandTimeout, ISCSIError, TargetProtocolError
from ..io.params import MAX_CONNECTIONS
from ..scsi import commands as scsi
from ..scsi.parsers import Capacity
from ..scsi.sense import GOOD
from .direct import ToolError, add_session_options, bounded, logged_in, tool_params, wait_budget
from .output import emit
from .progress import human_bytes, parse_size
from .url import parse_url

_RW16 = struct.Struct(">BBQIBB").pack   # READ(16)/WRITE(16): opcode, flags, LBA, blocks, group, control


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perf", help="measure IOPS and throughput of a LUN (like iscsi-perf)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keep QUEUE_DEPTH commands of BLOCK_SIZE bytes in flight for SECONDS and report IOPS "
                    "and MB/s (2**20 bytes, as iscsi-perf). --write overwrites the LUN with random data.",
        epilog="examples:\n  uiscsictl perf iscsi://127.0.0.1:3261/iqn.2026-11.test:d/1 --block-size 1M "
               "--queue-depth 16 --seconds 5\n  uiscsictl perf URL --block-size 4k --queue-depth 32 --random "
               "--json\n\n--json keys: iops, mb_per_s, connections, queue_depth, block_size, seconds, ios, "
               "random, write")
    p.add_argument("url", metavar="URL", help="iscsi://[user[%%secret]@]host[:port]/IQN/LUN")
    p.add_argument("--block-size", type=_size, default=1 << 20, metavar="BYTES",
                   help="bytes per command (default 1M; suffixes k, M)")
    p.add_argument("--queue-depth", type=_bounded_int(1, 1024), default=16, metavar="N",
                   help="commands in flight (default 16)")
    p.add_argument("--seconds", type=_seconds, default=5.0, metavar="S", help="run time (default 5)")
    p.add_argument("--random", action="store_true", help="random offsets (default sequential)")
    p.add_argument("--write", action="store_true", help="WRITE instead of READ (destroys the LUN's data)")
    p.add_argument("--connections", type=_bounded_int(1, MAX_CONNECTIONS), default=None, metavar="N",
                   help="MC/S: connections in the session (default: the URL's max_connections, else 1)")
    add_session_options(p)
    p.set_defaults(func=cmd_perf)


def _size(text: str) -> int:
    try:
        n = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not 512 <= n <= 16 << 20:
        raise argparse.ArgumentTypeError("block size must be in 512..16M")
    return n


def _bounded_int(lo: int, hi: int):
    def parse(text: str) -> int:
        if not text.isdigit() or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number in {lo}..{hi}")
        return int(text)
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("seconds must be in (0, 3600]")
    return value


async def cmd_perf(args: argparse.Namespace) -> int:
    url = parse_url(args.url)
    overrides = {"max_connections": args.connections} if args.connections else {}
    params = tool_params(url.session, args, **overrides)
    budget = wait_budget(args)
    async with logged_in(params, budget, url.portal) as s:
        cap = await bounded("READ CAPACITY", budget, lambda: scsi.read_capacity(s, url.lun, args.timeout))
        if args.block_size % cap.block_size:
            raise ToolError(f"--block-size {args.block_size} is not a multiple of the LUN's "
                             f"block size {cap.block_size}")
        if args.block_size > cap.size:
            raise ToolError(f"--block-size {args.block_size} is larger than the LUN ({cap.size} bytes)")
        ios, seconds = await _load(s, url.lun, cap, args)
        connections = getattr(s, "connections", 1)
        asked, granted = params.max_connections, s.connections_granted
    iops = ios / seconds
    mbps = iops * args.block_size / (1 << 20)
    doc = {"iops": round(iops, 1), "mb_per_s": round(mbps, 1), "connections": connections,
           "connections_asked": asked, "connections_granted": granted,
           "queue_depth": args.queue_depth, "block_size": args.block_size, "seconds": round(seconds, 3),
           "ios": ios, "random": args.random, "write": args.write}
    kind = f"{'random' if args.random else 'sequential'} {'writes' if args.write else 'reads'}"
    text = (f"{kind} of {human_bytes(args.block_size)}, QD {args.queue_depth}, {connections} connection(s): "
            f"{iops:.0f} IOPS, {mbps:.1f} MB/s over {seconds:.2f} s")
    return emit(args, doc, text)


async def _load(session, lun: int, cap: Capacity, args: argparse.Namespace) -> tuple[int, float]:
    """Keep ``--queue-depth`` commands in flight until the deadline; return (completed commands, elapsed s).

    Each slot reissues from the completion callback of its previous command (`Session.submit`, as the NBD
    bridge does and as iscsi-perf drives libiscsi): no coroutine to wake per command."""
    bs = args.block_size
    per_io = bs // cap.block_size
    slots = cap.blocks // per_io
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    rand = rng.random
    payload = os.urandom(bs) if args.write else None
    opcode = 0x8A if args.write else 0x88
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.seconds
    finished = loop.create_future()
    state = {"next": 0, "ios": 0, "busy": args.queue_depth}
    submit = session.submit

    def issue(buf: memoryview | None) -> None:
        if args.random:
            slot = int(rand() * slots)
        else:
            slot = state["next"]
            state["next"] = (slot + 1) % slots
        command = _RW16(opcode, 0, slot * per_io, per_io, 0, 0)
        callback = functools.partial(done, buf)
        if payload is not None:
            submit(lun, command, callback, data_out=payload)
        else:
            submit(lun, command, callback, read_into=buf)

    def done(buf: memoryview | None, t) -> None:
        if finished.done():
            return
        if t.error is not None or t.response or t.status != GOOD:
            finished.set_exception(t.error if t.error is not None else TargetProtocolError(
                f"the target failed the command (iSCSI response 0x{t.response:02x})") if t.response else
                scsi.SCSIError(t.status, t.sense, f"{'WRITE' if payload else 'READ'}"))
            return
        state["ios"] += 1
        if loop.time() < deadline:
            try:
                issue(buf)
                return
            except ISCSIError as e:     # the session closed under us: the run ends with that error
                finished.set_exception(e)
                return
        state["busy"] -= 1
        if not state["busy"]:
            finished.set_result(None)

    start = loop.time()
    for _ in range(args.queue_depth):
        issue(None if args.write else memoryview(bytearray(bs)))
    try:  # one bound for the whole run: a per-command timer would cost more than a 4 KiB read
        async with asyncio.timeout(args.seconds + args.timeout):
            await finished
    except TimeoutError:
        raise CommandTimeout(f"the target stopped answering: commands did not complete within {args.timeout:g} s "
                             "of the run's end") from None
    return state["ios"], max(loop.time() - start, 1e-9)
