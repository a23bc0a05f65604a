"""The NBD bridge on the host: the request/reply codec and the serve loop, spoken to as the kernel would.

The kernel itself is the peer only in the guest (tests/test_nbd_vm.py): the host has no nbd module.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct

import pytest

from initiator.kernel import nbd_ioctl as nbd
from initiator.kernel.backends import BlockError, FileBackend


def test_request_header_is_28_bytes_and_round_trips():
    req = nbd.Request(nbd.CMD_WRITE, nbd.CMD_FLAG_FUA, 0xDEADBEEF01, 4096, 512)
    raw = nbd.encode_request(req)
    assert len(raw) == 28 and raw[:4] == b"\x25\x60\x95\x13"
    assert nbd.parse_request(raw) == req and req.fua


def test_reply_header_is_16_bytes():
    raw = nbd.encode_reply(7, errno.EIO)
    assert len(raw) == 16 and raw[:4] == b"\x67\x44\x66\x98"
    assert nbd.REPLY.unpack(raw) == (nbd.REPLY_MAGIC, errno.EIO, 7)


def test_bad_magic_and_oversized_requests_are_refused():
    with pytest.raises(nbd.NbdError, match="magic"):
        nbd.parse_request(b"\0" * 28)
    with pytest.raises(nbd.NbdError, match="larger than"):
        nbd.parse_request(nbd.encode_request(nbd.Request(nbd.CMD_READ, 0, 1, 0, nbd.MAX_REQUEST + 512)))


def test_flags_follow_what_the_backend_can_do(tmp_path):
    f = tmp_path / "d.img"
    f.write_bytes(bytes(4096))
    b = FileBackend(str(f))
    flags = nbd.transmission_flags(b)
    assert flags & nbd.FLAG_SEND_FLUSH and flags & nbd.FLAG_SEND_FUA and not flags & nbd.FLAG_SEND_TRIM
    assert not flags & nbd.FLAG_READ_ONLY
    os.close(b.fd)


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

    async def main() -> nbd.Stats:
        backend = SlowFirstRead(str(img))
        ours, kernel = socket.socketpair()
        dev = nbd.NbdDevice(-1, -1, backend, queue_depth=8)
        r_ours, w_ours = await asyncio.open_connection(sock=ours)
        serve = asyncio.create_task(dev.serve(r_ours, w_ours))
        r, w = await asyncio.open_connection(sock=kernel)
        send = [nbd.Request(nbd.CMD_READ, 0, 1, 0, 512),             # held until request 2 finishes
                nbd.Request(nbd.CMD_WRITE, nbd.CMD_FLAG_FUA, 2, 512, 512),
                nbd.Request(nbd.CMD_READ, 0, 3, 16384, 512),         # past the end
                nbd.Request(nbd.CMD_TRIM, 0, 4, 0, 512),             # unsupported
                nbd.Request(nbd.CMD_FLUSH, 0, 5, 0, 0)]
        for req in send:
            w.write(nbd.encode_request(req))
            if req.cmd == nbd.CMD_WRITE:
                w.write(b"\xab" * 512)
        await w.drain()
        got = {}
        for _ in send:
            magic, err, handle = nbd.REPLY.unpack(await r.readexactly(16))
            assert magic == nbd.REPLY_MAGIC
            data = await r.readexactly(512) if handle == 1 else b""
            got[handle] = (err, data)
            got.setdefault("order", []).append(handle)
        assert got["order"].index(1) > got["order"].index(2)
        assert got[1] == (0, bytes(range(256)) * 2)
        assert got[2][0] == 0 and got[3][0] == errno.ENOSPC and got[4][0] == errno.EOPNOTSUPP
        assert got[5][0] == 0
        w.write(nbd.encode_request(nbd.Request(nbd.CMD_DISC, 0, 6, 0, 0)))
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


def test_unaligned_io_is_refused_by_the_backend(tmp_path):
    img = tmp_path / "d.img"
    img.write_bytes(bytes(4096))
    b = FileBackend(str(img))
    with pytest.raises(BlockError) as e:
        asyncio.run(b.read(100, 512))
    assert e.value.errno == errno.EINVAL
    os.close(b.fd)


def test_an_unattached_index_has_no_users():
    assert nbd.users(99999) == []
    assert not nbd.is_connected(99999)


def test_netlink_attributes_round_trip_with_padding_and_nesting():
    from initiator.kernel import nbd_netlink as nl
    raw = nl.u32(1, 7) + nl.attr(10, b"iqn\0") + nl.nested(7, nl.nested(1, nl.u32(1, 5)))
    attrs = nl.parse_attrs(raw)
    assert attrs[1] == struct.pack("=I", 7) and attrs[10] == b"iqn\0"
    assert nl.parse_attrs(nl.parse_attrs(attrs[7])[1]) == {1: struct.pack("=I", 5)}
    assert nl.parse_attrs(b"\xff\x00\x01\x00junk") == {}         # a bad length ends the walk


def test_generic_netlink_family_lookup_against_the_host_kernel():
    from initiator.kernel import nbd_netlink as nl
    with nl.Genl() as g:
        assert g.family("nlctrl") == nl.GENL_ID_CTRL
        if not os.path.exists("/sys/module/nbd"):
            with pytest.raises(nl.NetlinkError, match="no generic netlink family 'nbd'"):
                g.family("nbd")
