"""The NBD request server on the host, spoken to as the kernel would: many requests at once, replies out of
order, errors mapped to errnos.

The kernel itself is the peer only in the guest (test_nbd_ioctl_vm.py): the host has no nbd module.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from initiator.kernel import nbd_ioctl, nbd_wire
from initiator.kernel.backends import FileBackend


class SlowFirstRead(FileBackend):
    """A read at offset 0 waits until a later write finished: proves requests overlap (queue depth > 1)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.later_done = asyncio.Event()

    async def read(self, offset: int, length: int) -> bytes:
        if offset == 0:
            await asyncio.wait_for(self.later_done.wait(), 5)
        return await super().read(offset, length)

    async def write(self, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        await super().write(offset, data, fua)
        self.later_done.set()


def test_serve_loop_answers_out_of_order_and_maps_errors(tmp_path):
    img = tmp_path / "d.img"
    img.write_bytes(bytes(range(256)) * 64)         # 16 KiB

    async def main() -> nbd_ioctl.Stats:
        backend = SlowFirstRead(str(img))
        ours, kernel = socket.socketpair()
        dev = nbd_ioctl.NbdDevice(-1, -1, backend, queue_depth=8)
        serve = asyncio.create_task(dev.serve_socket(ours))
        r, w = await asyncio.open_connection(sock=kernel)
        send = [nbd_wire.Request(nbd_wire.CMD_READ, 0, 1, 0, 512),             # held until request 2 finishes
                nbd_wire.Request(nbd_wire.CMD_WRITE, nbd_wire.CMD_FLAG_FUA, 2, 512, 512),
                nbd_wire.Request(nbd_wire.CMD_READ, 0, 3, 16384, 512),         # past the end
                nbd_wire.Request(nbd_wire.CMD_TRIM, 0, 4, 0, 512),             # unsupported
                nbd_wire.Request(nbd_wire.CMD_FLUSH, 0, 5, 0, 0)]
        for req in send:
            w.write(nbd_wire.encode_request(req))
            if req.cmd == nbd_wire.CMD_WRITE:
                w.write(b"\xab" * 512)
        await w.drain()
        got = {}
        for _ in send:
            magic, err, handle = nbd_wire.REPLY.unpack(await r.readexactly(16))
            assert magic == nbd_wire.REPLY_MAGIC
            data = await r.readexactly(512) if handle == 1 else b""
            got[handle] = (err, data)
            got.setdefault("order", []).append(handle)
        assert got["order"].index(1) > got["order"].index(2)
        assert got[1] == (0, bytes(range(256)) * 2)
        assert got[2][0] == 0 and got[3][0] == errno.ENOSPC and got[4][0] == errno.EOPNOTSUPP
        assert got[5][0] == 0
        w.write(nbd_wire.encode_request(nbd_wire.Request(nbd_wire.CMD_DISC, 0, 6, 0, 0)))
        await w.drain()
        await asyncio.wait_for(serve, 5)
        assert await r.read() == b""                # the server hung up after DISC
        w.close()
        return dev.stats

    stats = asyncio.run(main())
    assert img.read_bytes()[512:1024] == b"\xab" * 512
    assert stats.commands == {"read": 2, "write": 1, "trim": 1, "flush": 1}
    assert (stats.completed_ok, stats.completed_error, stats.bytes_written) == (3, 2, 512)
    assert stats.max_in_flight >= 2
    assert stats.errors_by_errno == {"ENOSPC": 1, errno.errorcode[errno.EOPNOTSUPP]: 1}
