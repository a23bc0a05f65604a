"""The NBD request server over a real tgtd LUN, spoken to as the kernel would: many reads and writes in flight
through the callback path (IscsiLun.start_read/start_write, Session.submit), flush through the coroutine
path, replies batched, and every byte checked on the target's file."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import socket

import pytest

from initiator.io.params import SessionParams
from initiator.io.session import open_session
from initiator.kernel import nbd_ioctl, nbd_wire
from initiator.kernel.backends import IscsiLun

pytestmark = pytest.mark.target


def test_many_requests_in_flight_are_answered_by_handle_and_land_on_the_lun(tgtd):
    t = tgtd(size_mb=8)
    rng = random.Random(7)
    blocks = {i: os.urandom(4096) for i in rng.sample(range(1024), 96)}   # the first 4 MiB: the 1 MiB write goes above
    big = os.urandom(1 << 20)

    async def main() -> dict:
        s = await open_session(SessionParams(host="127.0.0.1", port=t.port, initiator_name="iqn.2026-12.test:nbd",
                                             target_name=t.iqn))
        try:
            lun = await IscsiLun.open(s, 1)
            ours, kernel = socket.socketpair()
            dev = nbd_ioctl.NbdDevice(-1, -1, lun, queue_depth=16)     # a window smaller than the burst
            serve = asyncio.create_task(dev.serve_socket(ours))
            r, w = await asyncio.open_connection(sock=kernel)
            for handle, (i, data) in enumerate(blocks.items(), 1):  # 96 writes, a 1 MiB one, a flush, a bad read
                w.write(nbd_wire.encode_request(nbd_wire.Request(nbd_wire.CMD_WRITE, 0, handle, i * 4096, 4096)))
                w.write(data)
            w.write(nbd_wire.encode_request(nbd_wire.Request(nbd_wire.CMD_WRITE, nbd_wire.CMD_FLAG_FUA, 1000,
                                                             4 << 20, len(big))) + big)
            w.write(nbd_wire.encode_request(nbd_wire.Request(nbd_wire.CMD_FLUSH, 0, 1001, 0, 0)))
            w.write(nbd_wire.encode_request(nbd_wire.Request(nbd_wire.CMD_READ, 0, 1002, (8 << 20) - 512, 1024)))
            await w.drain()
            errors = {}
            for _ in range(len(blocks) + 3):
                magic, err, h = nbd_wire.REPLY.unpack(await r.readexactly(16))
                assert magic == nbd_wire.REPLY_MAGIC
                errors[h] = err
            for i, h in zip(blocks, range(1, 1 + len(blocks)), strict=True):   # now read them all back at once
                w.write(nbd_wire.encode_request(nbd_wire.Request(nbd_wire.CMD_READ, 0, 5000 + h, i * 4096, 4096)))
            w.write(nbd_wire.encode_request(nbd_wire.Request(nbd_wire.CMD_READ, 0, 9999, 4 << 20, len(big))))
            await w.drain()
            got = {}
            for _ in range(len(blocks) + 1):
                _, err, h = nbd_wire.REPLY.unpack(await r.readexactly(16))
                assert err == 0
                got[h] = await r.readexactly(len(big) if h == 9999 else 4096)
            w.write(nbd_wire.encode_request(nbd_wire.Request(nbd_wire.CMD_DISC, 0, 1, 0, 0)))
            await w.drain()
            await asyncio.wait_for(serve, 10)
            w.close()
            return {"errors": errors, "got": got, "stats": dev.stats}
        finally:
            await s.close()

    out = asyncio.run(main())
    errs = out["errors"]
    assert all(errs[h] == 0 for h in range(1, len(blocks) + 1)) and errs[1000] == 0 and errs[1001] == 0
    assert errs[1002] == errno.ENOSPC
    assert [out["got"][5000 + h] for h in range(1, len(blocks) + 1)] == list(blocks.values())
    assert out["got"][9999] == big
    st = out["stats"]
    assert st.max_in_flight <= 16 and st.in_flight == 0 and st.completed_error == 1
    assert st.bytes_written == len(blocks) * 4096 + len(big) and st.commands["flush"] == 1
    image = t.backing[0].read_bytes()
    assert all(image[i * 4096:(i + 1) * 4096] == data for i, data in blocks.items())
    assert image[4 << 20:(4 << 20) + len(big)] == big
