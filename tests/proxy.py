"""A TCP proxy on loopback that resets its connections on purpose (for the recovery tests).

`LoopbackProxy` is the plumbing both proxies here share (tests/stall_proxy.py builds on it too).

``ResetProxy(target_host, target_port, reset_every=N)`` forwards every accepted connection to the
target and, each time another N bytes have gone from the initiator to the target, kills the connection
that carried them with an RST on both sides (SO_LINGER 0), as a flaky network or a NAT timeout would.
New connections are accepted as usual, so an initiator can log in again. ``max_resets`` bounds the
damage; ``resets`` counts what happened. ``corrupt_every=N`` instead flips one byte in every N bytes
going from the target to the initiator (``corruptions`` counts them), for digest tests. Threads only: it does not touch the test's event loop.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from typing import Self


def _rst(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (SO_LINGER 0), as a crashed peer or a NAT timeout would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class LoopbackProxy:
    """A listener on 127.0.0.1 that connects each accepted client to the target and hands the pair to
    ``_serve`` in a thread of its own (subclasses forward, reset or stall). ``close()`` stops it all."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepted = 0

    def start(self) -> None:
        t = threading.Thread(target=self._accept, name=type(self).__name__, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _rst(client)
                continue
            self._accepted += 1
            t = threading.Thread(target=self._serve, args=(client, upstream, self._accepted), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, client: socket.socket, upstream: socket.socket, index: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ResetProxy(LoopbackProxy):
    def __init__(self, target_host: str, target_port: int, reset_every: int | None = None,
                 max_resets: int = 1000, corrupt_every: int | None = None) -> None:
        super().__init__(target_host, target_port)
        self.corrupt_every = corrupt_every
        self.corruptions = 0
        self._returned = 0
        self.reset_every = reset_every
        self.max_resets = max_resets
        self.resets = 0
        self.forwarded = 0  # initiator -> target bytes since the last reset
        self._open: set[socket.socket] = set()
        self.start()

    def _serve(self, client: socket.socket, upstream: socket.socket, index: int) -> None:
        for s in (client, upstream):
            s.setblocking(False)
            self._open.add(s)
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    src, dst = key.fileobj, key.data
                    try:
                        data = src.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not data:
                        return
                    if src is client and self._count(len(data)):
                        return
                    if src is upstream and self.corrupt_every:
                        data = self._corrupt(data)
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
        except OSError:
            return
        finally:
            sel.close()
            for s in (client, upstream):
                self._open.discard(s)
                _rst(s)

    def _count(self, n: int) -> bool:
        """Account ``n`` initiator bytes; True when this connection must be reset now."""
        if self.reset_every is None:
            return False
        with self._lock:
            self.forwarded += n
            if self.forwarded >= self.reset_every and self.resets < self.max_resets:
                self.forwarded = 0
                self.resets += 1
                return True
        return False

    def _corrupt(self, data: bytes) -> bytes:
        before = self._returned
        self._returned += len(data)
        if self._returned // self.corrupt_every == before // self.corrupt_every:
            return data
        self.corruptions += 1
        pos = len(data) // 2
        return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]

