"""Record seeds from real targets: what tgtd and istgt send during logins and a short session.

    python -m tests.fuzz.capture [--out tests/fuzz/seeds]

Starts tgtd and istgt on loopback (vm.targets), logs in with the fuzz targets' own login profiles (same
ISID, ITT, names and secrets, so the recorded answers fit `targets/login.py`), and records every byte the
target sends. Writes:
  login/  the whole login stream, one file per target and profile (plain, CHAP, mutual CHAP, discovery,
          digests, and refusals: a wrong CHAP secret, an unknown target name);
  pdu/    after a plain or digest login, the target's answers to `targets/pdu.start_session`'s commands
          (read, write with R2T, INQUIRY, NOP, ABORT TASK, SendTargets, a forgotten read) and the Logout;
  text/   a discovery session's SendTargets answer, and the data segments of the operational and CHAP
          Login Responses for the negotiator and CHAP consumers.
The committed files were made with this command; run it again to refresh them.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from vm.targets import Istgt, Tgt

from . import project as p
from .targets import driver as dr
from .targets import login as lg
from .targets import pdu as pt
from .targets import text as tx

OUT = Path(__file__).resolve().parent / "seeds"


class Wire:
    """A blocking connection that records what the target sends and frames it with the given framer."""

    def __init__(self, portal: tuple[str, int]) -> None:
        self.sock = socket.create_connection(portal, timeout=10)
        self.got = bytearray()

    def send(self, bufs: list) -> None:
        self.sock.sendall(b"".join(bytes(b) for b in bufs))

    def pump(self, feed: Callable[[bytes], None], until: Callable[[], bool]) -> None:
        while not until():
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self.got += chunk
            feed(chunk)

    def close(self) -> None:
        self.sock.close()


def login(wire: Wire, params: p.LoginParams) -> tuple[p.LoginMachine | None, list, p.Framer]:
    """Run a login; returns the machine (None if the target refused it), its responses and the framer."""
    m = p.LoginMachine(params)
    queue: list = []
    seen: list = []

    def on_pdu(bhs: bytes, ahs: bytes, data) -> None:
        rsp = p.pdu.decode_pdu(bhs, ahs, data)
        if rsp.transit and rsp.nsg == 3 and rsp.status_class == 0:
            framer.hold = True
        queue.append(rsp)

    framer = p.Framer(on_pdu, lambda b, n: None, p.pdu.LOGIN_MAX_DATA)
    req = m.start()
    while req is not None:
        wire.send([p.pdu.encode_bytes(req)])
        wire.pump(framer.feed, lambda: bool(queue))
        if not queue:
            return None, seen, framer
        seen.append(queue.pop(0))
        try:
            req = m.receive(seen[-1])
        except p.ISCSIError as e:
            print(f"  login ended: {e}")
            return None, seen, framer
    return m, seen, framer


def ffp(wire: Wire, m: p.LoginMachine, start: int, lun: int, text: bool) -> bytes:
    """The target's answers to start_session's commands, then to a Logout (its bytes from ``start`` on)."""
    core, conn, sent = dr.start_session(m.result, m.expcmdsn, m.expcmdsn, m.maxcmdsn,
                                        (m.statsn + 1) & 0xFFFFFFFF, lun=lun, logout=False, text=text)
    driver = dr.SessionDriver(core, conn, max_logins=0)
    wire.send(sent)
    driver.feed(bytes(wire.got[start:]))

    def settled() -> bool:
        wire.send(driver.sent)
        driver.sent = []
        return not core.tasks

    wire.pump(driver.feed, settled)
    bye = core.request("logout", p.pdu.LogoutRequest(cid=conn.cid))
    wire.send(core.issue_request(bye, conn))
    wire.pump(driver.feed, lambda: bye.result is not None)
    return bytes(wire.got[start:])


def send_targets(wire: Wire, m: p.LoginMachine, start: int) -> bytes:
    """A SendTargets exchange on a discovery session (the target's bytes from ``start`` on)."""
    core, conn = dr.new_session(m.result, m.expcmdsn, m.expcmdsn, m.maxcmdsn, (m.statsn + 1) & 0xFFFFFFFF)
    session = dr.session_framer(core, conn)
    session.feed(bytes(wire.got[start:]))
    text = p.TextMachine([("SendTargets", "All")], itt=tx.ITT)
    req = text.start()
    while req is not None:
        t = core.request("text", req, immediate=False, itt=tx.ITT)
        wire.send(core.issue_request(t, conn))
        wire.pump(session.feed, lambda t=t: t.result is not None)
        req = text.receive(t.result)
    return bytes(wire.got[start:])


def record(kind: str, out: Path, portal: tuple[str, int], target_name: str, lun: int, profile: int, tag: str,
           then: str | None = None) -> None:
    params = dataclasses.replace(lg.params(profile), target_name=None if profile in (3, 7) else target_name)
    wire = Wire(portal)
    try:
        m, responses, framer = login(wire, params)
        end = len(wire.got) - len(framer.take_rest())  # where the login ends and the session begins
        write(out / "login" / f"{kind}-{tag}.bin", bytes([lg.first_byte(profile)]) + bytes(wire.got[:end]))
        for i, rsp in enumerate(responses):
            # targets/text.py's first byte: consumer 1 (negotiator) or 2 (CHAP), and the variant that
            # matches this login (discovery, digests offered, mutual CHAP)
            variant = {3: 1, 4: 2, 7: 1}.get(profile, 0) if rsp.csg == 1 else 4 if profile == 2 else 0
            consumer = 1 if rsp.csg == 1 else 2 if b"CHAP_C=" in rsp.data else None
            if consumer is not None and rsp.data:
                write(out / "text" / f"{kind}-{tag}-{i}.bin", bytes([consumer | variant << 2]) + bytes(rsp.data))
        if m is not None and then == "ffp":
            hd, dd = m.result.header_digest, m.result.data_digest
            flags = pt.flags_byte(hd, dd, m.result.max_recv_dsl)
            write(out / "pdu" / f"{kind}-{tag}.bin", bytes([flags, 0]) + ffp(wire, m, end, lun, kind != "tgtd"))
        elif m is not None and then == "text":
            write(out / "text" / f"{kind}-sendtargets.bin", bytes([0]) + send_targets(wire, m, end))
    finally:
        wire.close()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"  {path.relative_to(path.parents[2])}: {len(data)} bytes")


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.capture", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    opts = ap.parse_args()
    chap, mutual = ("fuzzuser", "fuzz-secret-12"), ("fuzztarget", "fuzz-target-secret")
    runs = [
        ("tgtd", {"params": {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}},
         [(0, "plain", "ffp"), (4, "digests", "ffp"), (3, "discovery", "text")]),
        ("tgtd", {"chap": chap, "mutual": mutual}, [(1, "chap", None), (2, "mutual", None)]),
        ("tgtd", {"chap": ("fuzzuser", "another-secret")}, [(1, "chap-refused", None)]),
        ("istgt", {}, [(0, "plain", "ffp"), (4, "digests", "ffp"), (3, "discovery", "text")]),
        ("istgt", {"chap": chap, "mutual": mutual}, [(1, "chap", None), (2, "mutual", None)]),
    ]
    for kind, kw, profiles in runs:
        if kind == "tgtd":
            target = Tgt.start(size_mb=8, iqn=lg.TARGET_NAME, **kw)
        else:
            target = Istgt.start(size_mb=8, digest="Auto", **kw)
        try:
            print(f"{kind} {target.portal[1]} {kw or ''}")
            for profile, tag, then in profiles:
                record(kind, opts.out, target.portal, target.iqn, 1 if kind == "tgtd" else 0, profile, tag, then)
            if kind == "tgtd" and "params" in kw:
                record(kind, opts.out, target.portal, target.iqn + "-missing", 1, 0, "not-found")
        finally:
            target.stop()
            shutil.rmtree(target.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
