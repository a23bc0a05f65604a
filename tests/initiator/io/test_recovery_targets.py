"""ERL0 recovery against real faults: connection resets, a target crash and restart, a dead or hostile target."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import pytest

from initiator.errors import CommandTimeout, SessionFailed, TargetProtocolError
from initiator.io.params import SessionParams
from initiator.io.session import open_session
from tests.proxy import ResetProxy

pytestmark = [pytest.mark.target, pytest.mark.timeout(60)]

INITIATOR = "iqn.2026-11.test.bootkit:recovery"
MiB = 1 << 20


def write10(lba: int, blocks: int) -> bytes:
    return bytes([0x2A, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes([0])


async def write_all(s, data: bytes, chunk: int = MiB, depth: int = 8) -> None:
    """Write ``data`` from LBA 0 in ``chunk`` pieces with ``depth`` commands in flight."""
    sem = asyncio.Semaphore(depth)
    view = memoryview(data)

    async def one(off: int) -> None:
        async with sem:
            r = await s.execute(1, write10(off // 512, chunk // 512), data_out=view[off:off + chunk])
            assert r.status == 0, r.sense
    await asyncio.gather(*(one(off) for off in range(0, len(data), chunk)))


def backing(path, length: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(length)


def test_large_write_survives_a_connection_reset_every_few_mib(tgtd):
    t = tgtd(size_mb=64)
    data = os.urandom(48 * MiB)
    with ResetProxy(t.host, t.port, reset_every=8 * MiB) as proxy:
        async def go():
            s = await open_session(SessionParams(proxy.host, proxy.port, INITIATOR, t.iqn, nop_interval=0,
                                                 login_timeout=5, replacement_timeout=20))
            try:
                await write_all(s, data)
                return s.stats.reconnects
            finally:
                await s.close()
        reconnects = asyncio.run(asyncio.wait_for(go(), 50))
        assert proxy.resets >= 5 and reconnects >= 5
    assert backing(t.backing[0], len(data)) == data


def test_large_write_survives_a_target_crash_and_restart(tgtd):
    t = tgtd(size_mb=64)
    data = os.urandom(32 * MiB)

    async def go():
        s = await open_session(SessionParams(t.host, t.port, INITIATOR, t.iqn, nop_interval=0,
                                             login_timeout=5, replacement_timeout=25))
        loop = asyncio.get_running_loop()

        def crash_after_some_data():
            while s.stats.bytes_written < 4 * MiB:
                time.sleep(0.01)
            t.restart(down_for=0.5)
        try:
            crash = loop.run_in_executor(None, crash_after_some_data)
            await write_all(s, data, depth=4)
            await crash
            return s.stats.reconnects
        finally:
            await s.close()
    assert asyncio.run(asyncio.wait_for(go(), 50)) >= 1
    assert backing(t.backing[0], len(data)) == data


def test_a_target_that_stays_down_fails_commands_with_session_failed_after_the_replacement_timeout(tgtd):
    t = tgtd(size_mb=8)

    async def go():
        s = await open_session(SessionParams(t.host, t.port, INITIATOR, t.iqn, nop_interval=0,
                                             login_timeout=2, replacement_timeout=2))
        try:
            assert (await s.execute(1, bytes(6))).status == 0
            t.kill()
            start = time.monotonic()
            with pytest.raises(SessionFailed, match="replacement timeout"):
                await s.execute(1, bytes(6))
            elapsed = time.monotonic() - start
            with pytest.raises(SessionFailed):
                await s.execute(1, bytes(6))
            return elapsed
        finally:
            await s.close()
    elapsed = asyncio.run(asyncio.wait_for(go(), 30))
    assert 1.5 <= elapsed <= 6


def test_a_frozen_target_is_detected_by_our_pings_and_fails_within_the_bound(tgtd):
    t = tgtd(size_mb=8)

    async def go():
        s = await open_session(SessionParams(t.host, t.port, INITIATOR, t.iqn, nop_interval=0.5,
                                             nop_timeout=1.0, login_timeout=1, replacement_timeout=2))
        try:
            assert (await s.execute(1, bytes(6))).status == 0
            os.killpg(t.proc.pid, 19)  # SIGSTOP: the socket stays open, nothing answers
            start = time.monotonic()
            with pytest.raises(SessionFailed):
                await s.execute(1, bytes(6))
            return time.monotonic() - start
        finally:
            os.killpg(t.proc.pid, 18)
            await s.close()
    assert asyncio.run(asyncio.wait_for(go(), 30)) <= 8


class _Hostile:
    """A listener that answers a login with ``reply`` (b"" = never answers)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            while True:
                c, _ = self.sock.accept()
                self.conns.append(c)
                c.recv(65536)
                if self.reply:
                    c.sendall(self.reply)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("reply,error", [
    (b"", CommandTimeout),
    (os.urandom(4096), TargetProtocolError),
    # a Login Response BHS that announces a 16 MiB data segment
    (bytes([0x23, 0x87, 0, 0, 0, 0xFF, 0xFF, 0xFF]) + bytes(40), TargetProtocolError),
])
def test_a_stalling_or_garbage_target_gives_a_clear_error_within_the_login_timeout(reply, error):
    h = _Hostile(reply)
    try:
        start = time.monotonic()
        with pytest.raises(error):
            asyncio.run(open_session(SessionParams("127.0.0.1", h.port, INITIATOR, "iqn.2026-11.x:y",
                                                   login_timeout=1.5)))
        assert time.monotonic() - start < 3
    finally:
        h.close()


def test_a_command_timeout_on_a_frozen_target_is_reported_within_its_bound(tgtd):
    t = tgtd(size_mb=8)

    async def go():
        s = await open_session(SessionParams(t.host, t.port, INITIATOR, t.iqn, nop_interval=0,
                                             login_timeout=1, replacement_timeout=1))
        try:
            os.killpg(t.proc.pid, 19)  # SIGSTOP
            start = time.monotonic()
            with pytest.raises(CommandTimeout):
                await s.execute(1, bytes(6), timeout=0.5)
            return time.monotonic() - start
        finally:
            os.killpg(t.proc.pid, 18)
            await s.close()
    assert asyncio.run(asyncio.wait_for(go(), 30)) < 2


def test_mcs_session_survives_resets_and_comes_back_with_all_its_connections(tgtd):
    t = tgtd(size_mb=64, params={"MaxConnections": "2"})
    data = os.urandom(32 * MiB)
    with ResetProxy(t.host, t.port, reset_every=8 * MiB) as proxy:
        async def go():
            s = await open_session(SessionParams(proxy.host, proxy.port, INITIATOR, t.iqn, nop_interval=0,
                                                 max_connections=2, login_timeout=5, replacement_timeout=20))
            try:
                assert s.connections == 2
                await write_all(s, data)
                return s.stats.reconnects, s.connections
            finally:
                await s.close()
        reconnects, conns = asyncio.run(asyncio.wait_for(go(), 50))
        assert reconnects >= 2 and conns == 2
    assert backing(t.backing[0], len(data)) == data


def test_a_corrupting_link_is_caught_by_digests_and_reads_still_return_the_right_data(tgtd):
    t = tgtd(size_mb=16, params={"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})
    data = os.urandom(16 * MiB)
    with open(t.backing[0], "r+b") as f:
        f.write(data)
    with ResetProxy(t.host, t.port, corrupt_every=3 * MiB) as proxy:
        async def go():
            s = await open_session(SessionParams(proxy.host, proxy.port, INITIATOR, t.iqn, nop_interval=0,
                                                 header_digest=True, data_digest=True, login_timeout=5,
                                                 replacement_timeout=20))
            try:
                buf = bytearray(len(data))
                view = memoryview(buf)
                for off in range(0, len(data), MiB):
                    r = await s.execute(1, bytes([0x28, 0]) + (off // 512).to_bytes(4, "big") + b"\0"
                                        + (MiB // 512).to_bytes(2, "big") + b"\0", read_into=view[off:off + MiB])
                    assert r.status == 0
                return buf, s.stats.reconnects
            finally:
                await s.close()
        buf, reconnects = asyncio.run(asyncio.wait_for(go(), 50))
        assert proxy.corruptions >= 3 and reconnects >= 3
    assert buf == data


def test_a_link_that_corrupts_everything_fails_the_session_instead_of_looping(tgtd):
    t = tgtd(size_mb=8, params={"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})
    with ResetProxy(t.host, t.port, corrupt_every=96 * 1024) as proxy:
        async def go():
            s = await open_session(SessionParams(proxy.host, proxy.port, INITIATOR, t.iqn, nop_interval=0,
                                                 header_digest=True, data_digest=True, login_timeout=2,
                                                 replacement_timeout=5))
            try:
                start = time.monotonic()
                with pytest.raises(SessionFailed):
                    await s.execute(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0x08, 0, 0]), read_len=MiB)
                return time.monotonic() - start
            finally:
                await s.close()
        assert asyncio.run(asyncio.wait_for(go(), 30)) < 12
