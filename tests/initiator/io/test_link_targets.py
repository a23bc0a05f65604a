"""The fast data path against tgtd: vectored sends, 1 MiB Data-In PDUs, on asyncio's loop and on uvloop.

Many large writes in flight overfill the socket (its send buffer is shrunk to make sure), so the vectored write (``os.writev`` of BHS + data-slice
segments on asyncio, ``writelines`` on uvloop) stops part-way and hands the rest to the transport; tgt's
8 KiB MaxRecvDataSegmentLength makes those writes hundreds of small Data-Out PDUs. The backing file,
read directly, is the independent check.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from initiator.io import eventloop
from initiator.io.params import SessionParams
from initiator.io.session import open_session
from initiator.scsi import cdb

pytestmark = [pytest.mark.target, pytest.mark.timeout(120)]

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    eventloop.choice({"UISCSI_EVENT_LOOP": "auto"}) != "uvloop", reason="uvloop is not installed"))]


@pytest.mark.parametrize("loop", LOOPS)
def test_many_large_writes_in_flight_land_intact_in_the_backing_file(tgtd, loop):
    t = tgtd(size_mb=16)
    bs, count = 1 << 20, 12
    chunks = [os.urandom(bs) for _ in range(count)]
    order = list(range(count))
    order.reverse()  # not in LBA order

    async def go():
        s = await open_session(SessionParams(t.host, t.port, "iqn.2026-11.test.bootkit:datapath", t.iqn,
                                             nop_interval=0, login_timeout=10.0))
        try:
            assert s.negotiated.max_xmit_dsl == 8192  # tgt's default: Data-Out goes in 8 KiB PDUs
            assert s.negotiated.max_recv_dsl == 1 << 20  # a 1 MiB read comes back as one Data-In PDU
            for link in s.links.values():  # a small send buffer: most vectored writes stop part-way
                link.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
            sem = asyncio.Semaphore(16)

            async def write(i):
                async with sem:
                    r = await s.execute(1, cdb.write_cdb(i * (bs // 512), bs // 512), data_out=chunks[i])
                    assert r.status == 0, r.sense

            await asyncio.gather(*(write(i) for i in order))
            bufs = [bytearray(bs) for _ in range(count)]

            async def read(i):
                async with sem:
                    r = await s.execute(1, cdb.read_cdb(i * (bs // 512), bs // 512), read_into=memoryview(bufs[i]))
                    assert r.status == 0 and not r.underflow

            await asyncio.gather(*(read(i) for i in order))
            assert all(bytes(bufs[i]) == chunks[i] for i in range(count))
            assert s.stats.reconnects == 0  # a garbled stream would be masked by ERL0 recovery
        finally:
            await s.close()

    eventloop.run(asyncio.wait_for(go(), 100), {"UISCSI_EVENT_LOOP": loop})
    with open(t.backing[0], "rb") as f:
        for i in range(count):
            assert f.read(bs) == chunks[i], f"backing file differs in MiB {i}"
