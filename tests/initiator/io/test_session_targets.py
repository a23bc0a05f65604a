"""The asyncio session against real targets (tgtd, istgt): data integrity, negotiation variants, MC/S, NOPs."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess

import pytest

from initiator.io.params import Chap, SessionParams
from initiator.io.session import open_session
from initiator.protocol import pdu

pytestmark = [pytest.mark.target, pytest.mark.timeout(60)]

INITIATOR = "iqn.2026-11.test.bootkit:transport"


def cfg_for(t, lun_target: bool = True, **kw) -> SessionParams:
    kw.setdefault("nop_interval", 0)
    kw.setdefault("login_timeout", 10.0)
    return SessionParams(t.host, t.port, INITIATOR, t.iqn if lun_target else None, **kw)


def write10(lba: int, blocks: int) -> bytes:
    return bytes([0x2A, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes([0])


def read10(lba: int, blocks: int) -> bytes:
    return bytes([0x28, 0]) + lba.to_bytes(4, "big") + bytes([0]) + blocks.to_bytes(2, "big") + bytes([0])


def backing_bytes(path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 50))


async def write_read_verify(s, lun: int, lba: int, data: bytes) -> None:
    r = await s.execute(lun, write10(lba, len(data) // 512), data_out=data)
    assert r.status == 0, r.sense
    buf = bytearray(len(data))
    r = await s.execute(lun, read10(lba, len(data) // 512), read_into=memoryview(buf))
    assert r.status == 0 and not r.underflow
    assert buf == data


def test_write_larger_than_max_burst_reads_back_and_lands_in_the_backing_file(tgtd):
    t = tgtd(size_mb=32)
    data = os.urandom(4 << 20)  # 4 MiB, tgt's MaxBurstLength is 256 KiB

    async def go():
        s = await open_session(cfg_for(t))
        try:
            assert s.negotiated.max_burst < len(data)
            await write_read_verify(s, 1, 2048, data)
        finally:
            await s.close()
    run(go())
    assert backing_bytes(t.backing[0], 2048 * 512, len(data)) == data


@pytest.mark.parametrize("immediate", ["Yes", "No"])
@pytest.mark.parametrize("initial_r2t", ["Yes", "No"])
def test_every_immediate_data_and_initial_r2t_combination_moves_data_intact(tgtd, immediate, initial_r2t):
    t = tgtd(size_mb=16, params={"ImmediateData": immediate, "InitialR2T": initial_r2t,
                                 "FirstBurstLength": "65536", "MaxBurstLength": "131072"})
    sizes = [512, 8192, 65536, 65536 + 512, 1 << 20]

    async def go():
        s = await open_session(cfg_for(t))
        try:
            assert s.negotiated.immediate_data == (immediate == "Yes")
            assert s.negotiated.initial_r2t == (initial_r2t == "Yes")
            lba = 0
            for n in sizes:
                await write_read_verify(s, 1, lba, os.urandom(n))
                lba += n // 512 + 8
        finally:
            await s.close()
    run(go())


def test_queue_depth_64_of_mixed_writes_lands_in_the_backing_file(tgtd):
    t = tgtd(size_mb=16)
    rng = random.Random(7)
    blocks = rng.sample(range(16 * 2048 // 16), 64)  # 64 distinct 8 KiB slots
    chunks = {b: os.urandom(8192) for b in blocks}

    async def go():
        s = await open_session(cfg_for(t))
        try:
            assert s.core.maxcmdsn - s.core.expcmdsn + 1 >= 1
            results = await asyncio.gather(*(s.execute(1, write10(b * 16, 16), data_out=d)
                                             for b, d in chunks.items()))
            assert all(r.status == 0 for r in results)
            bufs = {b: bytearray(8192) for b in blocks}
            await asyncio.gather(*(s.execute(1, read10(b * 16, 16), read_into=memoryview(bufs[b]))
                                   for b in blocks))
            assert all(bufs[b] == chunks[b] for b in blocks)
        finally:
            await s.close()
    run(go())
    for b, d in chunks.items():
        assert backing_bytes(t.backing[0], b * 8192, 8192) == d


def test_digests_on_both_ways_move_data_intact(tgtd):
    t = tgtd(size_mb=16, params={"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})  # tgt then accepts our offer

    async def go():
        s = await open_session(cfg_for(t, header_digest=True, data_digest=True))
        try:
            assert s.negotiated.header_digest and s.negotiated.data_digest
            await write_read_verify(s, 1, 100, os.urandom(3 << 20))
        finally:
            await s.close()
    run(go())


def test_mcs_with_four_connections_spreads_commands_over_all_of_them(tgtd):
    t = tgtd(size_mb=16, params={"MaxConnections": "4"})
    data = {i: os.urandom(65536) for i in range(32)}

    async def go():
        s = await open_session(cfg_for(t, max_connections=4))
        try:
            assert s.connections == 4 and s.negotiated.max_connections == 4
            assert s.connections_granted == 4 and s.connections_notice() is None
            await asyncio.gather(*(s.execute(1, write10(i * 128, 128), data_out=d) for i, d in data.items()))
            bufs = {i: bytearray(65536) for i in data}
            await asyncio.gather(*(s.execute(1, read10(i * 128, 128), read_into=memoryview(bufs[i]))
                                   for i in data))
            assert bufs == {i: bytearray(d) for i, d in data.items()}
            assert all(c.commands >= 4 for c in s.core.conns.values())
        finally:
            await s.close()
    run(go())


def test_istgt_mcs_is_bounded_by_its_max_connections(istgt):
    t = istgt(size_mb=16, max_connections=2)

    async def go():
        s = await open_session(cfg_for(t, max_connections=4))
        try:
            assert s.connections == s.connections_granted == 2
            notice = s.connections_notice()
            assert notice is not None and "granted 2 of the 4 connections asked" in notice
            await write_read_verify(s, 0, 0, os.urandom(1 << 20))
        finally:
            await s.close()
    run(go())


def test_istgt_with_four_connections_moves_data_intact(istgt):
    t = istgt(size_mb=16, max_connections=4)  # istgt 0.4 refuses "InitialR2T No" in its config

    async def go():
        s = await open_session(cfg_for(t, max_connections=4))
        try:
            assert s.connections == 4
            await asyncio.gather(*(write_read_verify(s, 0, i * 2048, os.urandom(1 << 20)) for i in range(4)))
        finally:
            await s.close()
    run(go())


def test_target_pings_are_answered_and_our_own_ping_round_trips(tgtd):
    t = tgtd(size_mb=8, params={"nop_interval": "1", "nop_count": "2"})

    async def go():
        s = await open_session(cfg_for(t, nop_interval=1.0, nop_timeout=2.0))
        try:
            await asyncio.sleep(4.5)  # tgtd pings every second and drops us after 2 unanswered
            assert s.stats.reconnects == 0
            assert 0 <= await s.ping() < 2
            r = await s.execute(1, bytes(6))  # TEST UNIT READY still works on the same connection
            assert r.status == 0 and s.stats.reconnects == 0
        finally:
            await s.close()
    run(go())


def test_send_targets_discovery_lists_the_target_and_its_portal(tgtd):
    t = tgtd(size_mb=8)

    async def go():
        s = await open_session(cfg_for(t, lun_target=False))
        try:
            found = await s.send_targets()
        finally:
            await s.close()
        return found
    found = run(go())
    assert [d.name for d in found] == [t.iqn]
    assert any(p[1] == t.port for p in found[0].portals)


def test_task_management_lun_reset_completes(tgtd):
    t = tgtd(size_mb=8)

    async def go():
        s = await open_session(cfg_for(t))
        try:
            assert await s.task_mgmt(pdu.TMF.LOGICAL_UNIT_RESET, 1) == 0
            r = await s.execute(1, bytes(6))  # the reset's UNIT ATTENTION is retried away
            assert r.status == 0
            assert await s.task_mgmt(pdu.TMF.ABORT_TASK, 1, rtt=0x12345) in (0, 1)
        finally:
            await s.close()
    run(go())


def test_data_written_by_us_is_read_identically_by_libiscsi(tgtd, tmp_path):
    t = tgtd(size_mb=8)
    data = os.urandom(2 << 20)

    async def go():
        s = await open_session(cfg_for(t))
        try:
            r = await s.execute(1, write10(0, len(data) // 512), data_out=data)
            assert r.status == 0
        finally:
            await s.close()
    run(go())
    out = tmp_path / "read.img"
    subprocess.run(["qemu-img", "dd", "-f", "raw", "-O", "raw", f"if={t.url(1)}", f"of={out}", "bs=1M",
                    "count=2"], check=True, capture_output=True, timeout=30)
    assert out.read_bytes() == data


def test_chap_one_way_and_mutual_log_in_and_a_wrong_secret_is_refused(tgtd):
    from initiator.errors import AuthenticationError
    t = tgtd(size_mb=8, chap=("iuser", "isecret-123456"), mutual=("tuser", "tsecret-654321"))

    async def go():
        s = await open_session(cfg_for(t, chap=Chap("iuser", "isecret-123456"),
                                       mutual=Chap("tuser", "tsecret-654321")))
        try:
            assert (await s.execute(1, bytes(6))).status == 0
        finally:
            await s.close()
        s = await open_session(cfg_for(t, chap=Chap("iuser", "isecret-123456")))
        await s.close()
        with pytest.raises(AuthenticationError):
            await open_session(cfg_for(t, chap=Chap("iuser", "wrong-secret-000")))
    run(go())


def test_logout_ends_the_session_at_the_target(tgtd):
    t = tgtd(size_mb=8)

    async def go():
        s = await open_session(cfg_for(t))
        assert "I_T nexus:" in t.adm("--op", "show", "--mode", "target").stdout
        await s.logout()
        await s.close()
        for _ in range(50):
            if "I_T nexus:" not in t.adm("--op", "show", "--mode", "target").stdout:
                return True
            await asyncio.sleep(0.05)
        return False
    assert run(go())


def test_a_narrow_cmdsn_window_queues_commands_instead_of_overrunning_it(tgtd):
    t = tgtd(size_mb=8, params={"MaxQueueCmd": "4"})
    data = {i: os.urandom(4096) for i in range(64)}

    async def go():
        s = await open_session(cfg_for(t))
        try:
            window = (s.core.maxcmdsn - s.core.expcmdsn + 1) & 0xFFFFFFFF
            await asyncio.gather(*(s.execute(1, write10(i * 8, 8), data_out=d) for i, d in data.items()))
            return window
        finally:
            await s.close()
    assert run(go()) <= 8
    for i, d in data.items():
        assert backing_bytes(t.backing[0], i * 4096, 4096) == d


def test_istgt_discovery_does_not_spin_on_its_expcmdsn_quirk(istgt):
    t = istgt(size_mb=8)

    async def go():
        s = await open_session(cfg_for(t, lun_target=False))
        try:
            first = await s.send_targets()
            second = await s.send_targets()  # a second Text exchange on the same session still works
        finally:
            await s.close()
        return first, second
    first, second = run(go())
    assert [d.name for d in first] == [t.iqn] == [d.name for d in second]


def test_a_captured_session_decodes_without_malformed_pdus(tgtd, tmp_path):
    import shutil
    import signal
    import time
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    t = tgtd(size_mb=8)  # no digests: this tshark's iSCSI dissector has no digest setting
    cap = tmp_path / "cap.pcapng"
    proc = subprocess.Popen(["tshark", "-i", "lo", "-f", f"tcp port {t.port}", "-a", "duration:25", "-w", str(cap),
                             "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        line = ""
        while "File:" not in line and time.monotonic() < deadline:  # dumpcap is writing
            line = proc.stderr.readline()

        async def go():
            s = await open_session(cfg_for(t))
            try:
                await write_read_verify(s, 1, 0, os.urandom(65536))
                await s.ping()
                await s.execute(1, bytes([0x12, 0, 0, 0, 96, 0]), read_len=96)
            finally:
                await s.close()
        run(go())
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    decode = ["tshark", "-r", str(cap), "-d", f"tcp.port=={t.port},iscsi"]
    count = subprocess.run(decode + ["-Y", f"iscsi && tcp.port=={t.port}"], check=True, capture_output=True, text=True, timeout=30).stdout
    bad = subprocess.run(decode + ["-Y", f"_ws.malformed && tcp.port=={t.port}"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    assert len(count.splitlines()) >= 10
    assert bad == ""
