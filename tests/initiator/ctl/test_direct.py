"""A listener that stalls, sends garbage or announces an oversize PDU: every direct tool gives one clear line
within --timeout, never a hang or a traceback.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.initiator.ctl.helpers import one_line_error, uiscsictl


class Listener:
    """A TCP listener on loopback that does ``behaviour(conn)`` with each connection (a fault, not a peer)."""

    def __init__(self, behaviour):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            try:
                self.behaviour(conn)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def listener():
    made = []

    def factory(behaviour):
        made.append(Listener(behaviour))
        return made[-1]

    yield factory
    for lst in made:
        lst.close()


def _garbage(conn):
    conn.recv(4096)
    conn.sendall(bytes(range(256)) * 8)


def _oversize(conn):
    conn.recv(4096)
    bhs = bytearray(48)
    bhs[0] = 0x23  # Login Response
    bhs[5:8] = b"\xff\xff\xff"  # DataSegmentLength 16 MiB - 1
    conn.sendall(bytes(bhs))


@pytest.mark.parametrize("tool", ["capacity", "inquiry", "discover"])
def test_stalled_target_gives_a_clear_error_within_timeout(listener, tool):
    lst = listener(lambda conn: None)  # accepts, then says nothing
    where = f"127.0.0.1:{lst.port}" if tool == "discover" else f"iscsi://127.0.0.1:{lst.port}/iqn.2026-11.x:y/1"
    start = time.monotonic()
    err = one_line_error(uiscsictl(tool, "--timeout", "2", where))
    assert time.monotonic() - start < 2 + 5  # interpreter start-up and teardown on a loaded machine
    assert "within 2 s" in err or "timed out" in err.lower(), err


@pytest.mark.parametrize("behaviour", [_garbage, _oversize], ids=["garbage", "oversize-length"])
def test_target_sending_nonsense_gives_a_clear_error(listener, behaviour):
    lst = listener(behaviour)
    start = time.monotonic()
    err = one_line_error(uiscsictl("capacity", "--timeout", "5", f"iscsi://127.0.0.1:{lst.port}/iqn.2026-11.x:y/1"))
    assert time.monotonic() - start < 5 + 5
    assert "internal error" not in err, err
