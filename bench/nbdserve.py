"""uiscsid's NBD request server on the host, without a guest: CPU per I/O and IOPS, checkout against checkout.

The kernel path (bench/kernelpath.py) runs in a TCG guest: right for the ratio against open-iscsi, slow for
trying a change. This runs the same serving code natively. A server process opens a session to tgtd (a
LUN on /dev/shm, filled with data), serves it over a Unix socket with the checkout's own NBD request
server (the one behind /dev/nbdN; only the NBD handshake, which the kernel does not need, is this file's),
and fio's nbd engine (libnbd, C) drives it with the six perfbench workloads. For each run it reads the
server's CPU time from /proc, so the figure that matters is **microseconds of server CPU per I/O**:
steadier than IOPS on a shared machine, and what the guest multiplies.

``--callgrind IOS`` runs the servers under valgrind instead and counts the user-space instructions each
executes per request over IOS requests: a figure the machine's load does not move, for A/B of small changes
(valgrind is in scripts/bootstrap.sh's list).

``--baseline TREE`` runs a second server from another checkout (its ``initiator`` package first on
sys.path, our venv's Python) in every round, alternating who goes first, and reports ours/baseline as
the median of pairwise ratios and the ratio of the medians, flagging disagreement. ``--reference`` adds
qemu-nbd (C) serving the LUN's backing file itself: no iSCSI at all, the floor for an NBD server.
Checkouts whose NbdDevice has no ``serve_socket`` (before the batched server) are served through
``serve(reader, writer)``, as their daemon did.

Usage (from the repository root; about rounds x workloads x sides x (seconds + 1) s):
    .venv/bin/python bench/nbdserve.py --rounds 5 --seconds 3
    .venv/bin/python bench/nbdserve.py --baseline /var/tmp/base --only qd1 --rounds 7 --json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DISAGREE = 0.10
CLK_TCK = os.sysconf("SC_CLK_TCK")

# NBD newstyle-fixed handshake (the NBD protocol document); the kernel skips it, libnbd needs it
NBDMAGIC, IHAVEOPT, REPLY_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_GO = 1, 2, 7
REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 3, (1 << 31) + 1
INFO_EXPORT = 0


# --------------------------------------------------------------------------- the server (child process)
async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise ConnectionError("client left during the handshake")
        buf += chunk
    return buf


async def handshake(sock: socket.socket, size: int, flags: int) -> bool:
    """Server side of the fixed-newstyle handshake; True once the client entered transmission."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    await _recv_exactly(loop, sock, 4)                       # client flags
    while True:
        magic, opt, length = struct.unpack(">QII", await _recv_exactly(loop, sock, 16))
        if magic != IHAVEOPT:
            return False
        await _recv_exactly(loop, sock, length) if length else b""
        if opt == OPT_EXPORT_NAME:                          # old style: no reply header, no zeroes
            await loop.sock_sendall(sock, struct.pack(">QH", size, flags))
            return True
        if opt == OPT_ABORT:
            await loop.sock_sendall(sock, struct.pack(">QIII", REPLY_MAGIC, opt, REP_ACK, 0))
            return False
        if opt == OPT_GO:
            info = struct.pack(">HQH", INFO_EXPORT, size, flags)
            await loop.sock_sendall(sock, struct.pack(">QIII", REPLY_MAGIC, opt, REP_INFO, len(info)) + info
                                    + struct.pack(">QIII", REPLY_MAGIC, opt, REP_ACK, 0))
            return True
        await loop.sock_sendall(sock, struct.pack(">QIII", REPLY_MAGIC, opt, REP_ERR_UNSUP, 0))


async def serve_main(path: str, url: str) -> None:
    from initiator.ctl.url import parse_url
    from initiator.io.session import open_session
    from initiator.kernel.backends import IscsiLun
    from initiator.kernel.nbd_ioctl import NbdDevice
    from initiator.kernel.nbd_wire import transmission_flags

    loop = asyncio.get_running_loop()
    target = parse_url(url)
    params = dataclasses.replace(target.session, initiator_name="iqn.2026-12.test.bootkit:nbdserve")
    session = await open_session(params)
    backend = await IscsiLun.open(session, target.lun)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    listener.setblocking(False)
    print("ready", flush=True)
    while True:
        sock, _ = await loop.sock_accept(listener)
        sock.setblocking(False)
        if not await handshake(sock, backend.size, transmission_flags(backend)):
            sock.close()
            continue
        dev = NbdDevice(-1, -1, backend, 64)
        if hasattr(dev, "serve_socket"):
            await dev.serve_socket(sock)
        else:
            reader, writer = await asyncio.open_connection(sock=sock, limit=(32 << 20) + 1)
            await dev.serve(reader, writer)
        sock.close()


def server_child(args: argparse.Namespace) -> int:
    from initiator.io import eventloop

    eventloop.run(serve_main(args.socket, args.url))
    return 0


# --------------------------------------------------------------------------- the driver
class Side:
    """One NBD server under test: a checkout's serving code, or qemu-nbd."""

    def __init__(self, name: str, socket_path: str, proc: subprocess.Popen) -> None:
        self.name, self.socket_path, self.proc = name, socket_path, proc

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK     # utime + stime

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_server(name: str, tree: Path, url: str, workdir: Path, event_loop: str, callgrind: bool = False) -> Side:
    path = str(workdir / f"{name}.sock")
    env = {**os.environ, "PYTHONPATH": str(tree), "UISCSI_EVENT_LOOP": event_loop}
    log = open(workdir / f"{name}.log", "wb")       # noqa: SIM115 - the child keeps it
    wrap = (["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={workdir / name}.callgrind"] if callgrind else [])
    proc = subprocess.Popen([*wrap, sys.executable, str(Path(__file__).resolve()), "--serve", "--socket", path,
                             "--url", url], stdout=subprocess.PIPE, stderr=log, env=env, cwd=tree)
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"the {name} server did not start: {(workdir / f'{name}.log').read_text()[-500:]}")
    return Side(name, path, proc)


def start_qemu_nbd(backing: Path, workdir: Path) -> Side:
    path = str(workdir / "qemu-nbd.sock")
    proc = subprocess.Popen(["qemu-nbd", "-k", path, "-f", "raw", "--persistent", "--shared=4", str(backing)],
                            stdout=subprocess.DEVNULL, stderr=open(workdir / "qemu-nbd.log", "wb"))  # noqa: SIM115
    for _ in range(100):
        if os.path.exists(path):
            return Side("qemu-nbd", path, proc)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("qemu-nbd did not start")


def fio_run(side: Side, w, seconds: float) -> dict:
    rw = ("rand" if w.random else "") + ("write" if w.write else "read")
    cmd = ["fio", "--name=nbdserve", "--ioengine=nbd", f"--uri=nbd+unix:///?socket={side.socket_path}",
           f"--rw={rw}", f"--bs={w.block_size}", f"--iodepth={w.queue_depth}", f"--runtime={seconds:g}",
           "--time_based", "--norandommap", "--randrepeat=0", "--output-format=json"]
    cpu0 = side.cpu_seconds()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu = side.cpu_seconds() - cpu0
    if r.returncode != 0:
        raise RuntimeError(f"fio against {side.name} failed: {(r.stdout + r.stderr)[-400:]}")
    try:
        doc = json.loads(r.stdout[r.stdout.find("{"):])
    except ValueError:
        raise RuntimeError(f"fio against {side.name} gave no JSON: {(r.stdout + r.stderr)[-400:]}") from None
    job = doc["jobs"][0]["write" if w.write else "read"]
    ios = job["total_ios"] or 1
    return {"iops": round(job["iops"], 1), "cpu_us_per_io": round(cpu / ios * 1e6, 2), "ios": ios}


def callgrind_run(side: Side, w, ios: int, workdir: Path) -> dict:
    """User-space instructions the server executes per I/O (valgrind's count: steady under any load), over
    ``ios`` requests of workload ``w``; system calls are not in it."""
    rw = ("rand" if w.random else "") + ("write" if w.write else "read")
    pid = str(side.proc.pid)
    ctl = ["callgrind_control"]
    subprocess.run([*ctl, "-i", "on", pid], capture_output=True, check=True, timeout=60)
    subprocess.run([*ctl, "-z", pid], capture_output=True, check=True, timeout=60)
    before = set(workdir.glob(f"{side.name}.callgrind*"))
    r = subprocess.run(["fio", "--name=nbdserve", "--ioengine=nbd", f"--uri=nbd+unix:///?socket={side.socket_path}",
                        f"--rw={rw}", f"--bs={w.block_size}", f"--iodepth={w.queue_depth}", f"--number_ios={ios}",
                        "--norandommap", "--randrepeat=0", "--output-format=json"],
                       capture_output=True, text=True, timeout=ios + 120, check=False)
    subprocess.run([*ctl, "-d", pid], capture_output=True, check=True, timeout=60)
    subprocess.run([*ctl, "-i", "off", pid], capture_output=True, check=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"fio against {side.name} failed: {(r.stdout + r.stderr)[-400:]}")
    job = json.loads(r.stdout[r.stdout.find("{"):])["jobs"][0]["write" if w.write else "read"]
    dumps = sorted(set(workdir.glob(f"{side.name}.callgrind*")) - before, key=lambda p: p.stat().st_mtime)
    total = 0
    for line in dumps[-1].read_text().splitlines() if dumps else []:
        if line.startswith(("summary:", "totals:")):
            total = int(line.split()[1])
    done = job["total_ios"] or 1
    return {"instr_per_io": round(total / done), "ios": done}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def summarise(workloads, samples: dict, sides: list[str], keys: tuple[str, ...] = ("iops", "cpu_us_per_io")
              ) -> list[dict]:
    rows = []
    for w in workloads:
        s = samples[w.name]
        row = {"workload": w.name, "label": w.label, "rounds": len(s), "samples": s}
        for side in sides:
            row[side] = {k: statistics.median(x[side][k] for x in s) for k in keys}
        for other in sides[1:]:
            for k in keys:
                pairs = statistics.median(_ratio(x["ours"][k], x[other][k]) for x in s)
                rom = _ratio(row["ours"][k], row[other][k])
                row[f"{k}_vs_{other}"] = {"ratio": pairs, "ratio_of_medians": rom,
                                          "disagree": abs(pairs - rom) > DISAGREE * max(pairs, rom)}
        rows.append(row)
    return rows


def table(doc: dict) -> str:
    if doc.get("callgrind"):
        return callgrind_table(doc)
    sides = doc["sides"]
    head = f"{'workload':34}" + "".join(f" {s + ' IOPS':>15} {'µs/IO':>7}" for s in sides)
    others = sides[1:]
    head += "".join(f"  {'CPU/IO ours/' + o:>22} {'IOPS ours/' + o:>20}" for o in others)
    lines = [head, "-" * len(head)]
    for r in doc["workloads"]:
        line = f"{r['label']:34}" + "".join(f" {r[s]['iops']:>15,.0f} {r[s]['cpu_us_per_io']:>7.1f}" for s in sides)
        for o in others:
            c, i = r[f"cpu_us_per_io_vs_{o}"], r[f"iops_vs_{o}"]
            line += (f"  {c['ratio']:>10.2f} ({c['ratio_of_medians']:.2f}){'!' if c['disagree'] else ' '}"
                     f"        {i['ratio']:>7.2f} ({i['ratio_of_medians']:.2f}){'!' if i['disagree'] else ' '}")
        lines.append(line)
    lines.append(f"µs/IO = the server process's CPU (user + system) per I/O; ratios: median of pairwise ratios "
                 f"(ratio of medians), ! = they differ by more than {DISAGREE:.0%}.")
    lines.append(f"{doc['rounds']} rounds x {doc['seconds']:g} s, fio nbd engine (libnbd); load average "
                 f"{doc['loadavg_before'][0]} before, {doc['loadavg_after'][0]} after, {doc['cpus']} CPUs; "
                 f"event loop {doc['event_loop']}; {doc['date']}.")
    if doc.get("baseline"):
        lines.append(f"baseline: {doc['baseline']} (event loop {doc['baseline_event_loop']})")
    return "\n".join(lines)


def callgrind_table(doc: dict) -> str:
    sides = doc["sides"]
    head = f"{'workload':34}" + "".join(f" {s + ' instr/IO':>22}" for s in sides)
    head += "".join(f"  {'ours/' + o:>18}" for o in sides[1:])
    lines = [head, "-" * len(head)]
    for r in doc["workloads"]:
        line = f"{r['label']:34}" + "".join(f" {r[s]['instr_per_io']:>22,.0f}" for s in sides)
        for o in sides[1:]:
            c = r[f"instr_per_io_vs_{o}"]
            line += f"  {c['ratio']:>11.3f} ({c['ratio_of_medians']:.3f}){'!' if c['disagree'] else ' '}"
        lines.append(line)
    lines.append(f"instr/IO = user-space instructions of the server process per request (valgrind callgrind, "
                 f"{doc['ios']} requests per run; system calls not counted); ratios: median of pairwise ratios "
                 f"(ratio of medians). {doc['rounds']} rounds, event loop {doc['event_loop']}; {doc['date']}.")
    if doc.get("baseline"):
        lines.append(f"baseline: {doc['baseline']} (event loop {doc['baseline_event_loop']})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    sys.path[:0] = [str(HERE), str(ROOT)]
    from perfbench import WORKLOADS, _prefill

    from vm.targets import Tgt

    workloads = [w for w in WORKLOADS if not args.only or any(o in w.name for o in args.only)]
    if not workloads:
        raise RuntimeError(f"--only matches none of: {', '.join(w.name for w in WORKLOADS)}")
    workdir = Path(tempfile.mkdtemp(prefix="nbdserve-", dir="/dev/shm"))
    target, servers = None, []
    samples: dict[str, list[dict]] = {w.name: [] for w in workloads}
    try:
        target = Tgt.start_retrying(workdir=workdir, size_mb=args.lun_mb)
        _prefill(target.backing[0], args.lun_mb)
        url = target.url(1)
        cg = args.callgrind is not None
        servers.append(start_server("ours", ROOT, url, workdir, args.event_loop, cg))
        if args.baseline is not None:
            servers.append(start_server("baseline", args.baseline, url, workdir, args.baseline_event_loop, cg))
        if args.reference and not cg:
            servers.append(start_qemu_nbd(target.backing[0], workdir))
        load_before = os.getloadavg()
        for rnd in range(1, args.rounds + 1):
            for w in workloads:
                order = servers if rnd % 2 else servers[::-1]
                if cg:
                    sample = {s.name: callgrind_run(s, w, args.callgrind, workdir) for s in order}
                    text = "   ".join(f"{n} {v['instr_per_io']:11,} instr/IO" for n, v in sample.items())
                else:
                    sample = {s.name: fio_run(s, w, args.seconds) for s in order}
                    text = "   ".join(f"{n} {v['iops']:9,.0f} IOPS {v['cpu_us_per_io']:7.1f} µs/IO"
                                      for n, v in sample.items())
                samples[w.name].append(sample)
                print(f"round {rnd}/{args.rounds} {w.name:20} {text}", file=sys.stderr, flush=True)
    finally:
        for s in servers:
            s.stop()
        if target is not None:
            target.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    sides = [s.name for s in servers]
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
            "seconds": args.seconds, "cpus": os.cpu_count(), "event_loop": args.event_loop,
            "baseline": str(args.baseline) if args.baseline else None, "baseline_event_loop": args.baseline_event_loop,
            "sides": sides, "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "callgrind": args.callgrind is not None, "ios": args.callgrind,
            "workloads": summarise(workloads, samples, sides,
                                   ("instr_per_io",) if args.callgrind is not None else ("iops", "cpu_us_per_io"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nbdserve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="exit status: 0 when every run finished, 1 on any failure.")
    p.add_argument("--rounds", type=int, default=3, help="rounds per workload (default 3)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each fio run (default 3)")
    p.add_argument("--only", action="append", metavar="SUBSTRING", help="run only matching workloads")
    p.add_argument("--lun-mb", type=int, default=256, help="LUN size on /dev/shm (default 256)")
    p.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="our server's loop (default auto: uvloop when installed)")
    p.add_argument("--baseline", type=Path, metavar="TREE", help="also serve from this checkout and compare")
    p.add_argument("--baseline-event-loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="the baseline server's loop (default auto)")
    p.add_argument("--reference", action="store_true", help="add qemu-nbd serving the backing file (no iSCSI)")
    p.add_argument("--callgrind", type=int, metavar="IOS",
                   help="run the servers under valgrind and count user-space instructions per I/O over IOS requests "
                        "per run instead of timing: the same figure under any load (slow: try 2000)")
    p.add_argument("--json", action="store_true", help="print the result, samples included, as JSON")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--socket", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return server_child(args)
    if args.rounds < 1 or args.seconds < 1:
        p.error("--rounds and --seconds must be at least 1")
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "initiator" / "kernel").is_dir():
            p.error(f"{args.baseline} is not a checkout with initiator/kernel")
    missing = [t for t in ("tgtd", "fio", *(["qemu-nbd"] if args.reference else []),
                           *(["valgrind", "callgrind_control"] if args.callgrind else [])) if shutil.which(t) is None]
    if missing:
        print(f"nbdserve: missing {', '.join(missing)} (run ./scripts/bootstrap.sh)", file=sys.stderr)
        return 1
    try:
        doc = run(args)
    except RuntimeError as e:
        print(f"nbdserve: {e}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
