"""io.vectored.writev_from against a real socketpair: whole buffers counted, a partial one replaced by its rest."""

from __future__ import annotations

import socket

from initiator.io.vectored import IOV_MAX, writev_from


def test_everything_leaves_when_the_socket_has_room_even_past_iov_max():
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        bufs = [bytes([i % 251]) * 3 for i in range(IOV_MAX + 5)]
        assert writev_from(a.fileno(), bufs) == len(bufs)
        got = b""
        while len(got) < 3 * len(bufs):
            got += b.recv(1 << 16)
        assert got == b"".join(bufs)


def test_a_full_socket_stops_the_loop_and_leaves_the_rest_in_place():
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        bufs = [bytearray(b"x" * 1000) + bytearray(b"y" * 1000) for _ in range(2000)]
        whole = writev_from(a.fileno(), bufs)
        assert 0 < whole < len(bufs)
        sent = 2000 * whole
        got = b""
        b.setblocking(False)
        try:
            while True:
                got += b.recv(1 << 20)
        except BlockingIOError:
            pass
        rest = bytes(bufs[whole])                       # the first buffer not sent whole, or its rest
        assert len(got) - sent == 2000 - len(rest)      # what left of it, and nothing after it
        assert bytes(bufs[whole - 1]) == b"x" * 1000 + b"y" * 1000
