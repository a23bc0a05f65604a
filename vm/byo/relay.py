"""A TCP relay on the host's loopback to an admin's target: how a test takes a target it does not own "down".

The target-down proof needs the target away at boot and back later. The built-in tgtd is simply started
late; an admin's target is left alone, and the guest is pointed at a relay on 127.0.0.1:PORT (10.0.2.2 in
the guest) that does not listen until the proof brings it up, then passes bytes both ways unchanged (the
iSCSI login names the target; the relay knows nothing of the protocol).
"""

from __future__ import annotations

import socket
import threading
from typing import Self

BUFFER = 1 << 16


class Relay:
    """Listens on 127.0.0.1:``port``; each connection is joined to a new one to ``host``:``target_port``."""

    def __init__(self, port: int, host: str, target_port: int) -> None:
        self.port, self.host, self.target_port = port, host, target_port
        self.listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, name=f"relay-{port}", daemon=True)

    @classmethod
    def start(cls, port: int, host: str, target_port: int) -> Relay:
        r = cls(port, host, target_port)
        r.thread.start()
        return r

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(BUFFER):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                s.close()
        self.thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
