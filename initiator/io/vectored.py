"""Vectored writes to a non-blocking socket: the one writev loop of the TCP links and the NBD reply path."""

from __future__ import annotations

import os

IOV_MAX = 1024  # buffers per writev (Linux UIO_MAXIOV)


def writev_from(fd: int, bufs: list) -> int:
    """Write ``bufs`` with ``os.writev``, at most IOV_MAX at a time, until all went out or the socket is full.

    Returns how many buffers left whole; a buffer that left in part is replaced in ``bufs`` by a memoryview
    of its rest. A full socket (EAGAIN) or a signal (EINTR) just ends the loop; any other OSError propagates.
    """
    i, n = 0, len(bufs)
    while i < n:
        chunk = bufs[i:i + IOV_MAX]
        try:
            sent = os.writev(fd, chunk)
        except (BlockingIOError, InterruptedError):
            return i
        for b in chunk:
            size = len(b)
            if sent < size:
                if sent:
                    bufs[i] = memoryview(b)[sent:]
                return i
            sent -= size
            i += 1
    return i
