"""The real uiscsid process (`uiscsid -d --attach none --no-flag`) through its control socket, without any
target: what it does for targets that are down."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from initiator.ctl.client import ControlClient
from initiator.daemon.wire import PROTOCOL_VERSION, encode_message
from tests.initiator.daemon.test_uiscsid_targets import HOST_IQN, Uiscsid

IQN = "iqn.2026-11.test.bootkit:down"


@pytest.fixture
def daemon():
    workdir = Path(tempfile.mkdtemp(prefix="uiscsid-"))
    d = Uiscsid(workdir)
    yield d
    d.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def closed_port() -> int:
    """A loopback port nothing listens on (a target that is down: the connection is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(rid: int, command: str, **args) -> bytes:
    return encode_message({"version": PROTOCOL_VERSION, "id": rid, "command": command, "args": args})


def test_a_detach_written_with_a_reload_cancels_the_target_kicked_out_of_its_backoff(daemon):
    """A target that is down waits in its login backoff; a reload kicks it out (retry now) and a detach in
    the same write cancels its login loop at that very moment. Python 3.11's asyncio.wait_for loses a cancel
    that lands when the awaited event is already set (cpython#86296): detach then never answered and held
    the reload/detach lock for good. Found by the control fuzz target (control-reload-detach-hang.bin)."""
    target = {"name": "down", "address": "127.0.0.1", "port": closed_port(), "target_name": IQN,
              "initiator_name": HOST_IQN}
    result = ControlClient(daemon.sock, timeout=10).call("reload", targets=[target], wait=5.0)
    assert result["failed"] == ["down"]   # refused: now in its 1 s backoff
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(daemon.sock)
        start = time.monotonic()
        s.sendall(request(1, "reload", targets=[target], wait=None) + request(2, "detach", name="down"))
        answers = b""
        while answers.count(b"\n") < 2:
            chunk = s.recv(65536)      # socket.timeout here is the hang
            assert chunk, "uiscsid closed the connection"
            answers += chunk
    took = time.monotonic() - start
    reload, detach = (json.loads(line) for line in answers.splitlines())
    assert reload["ok"] and reload["result"]["pending"] == ["down"]
    assert detach["ok"] and detach["result"]["state"] == "detached", detach
    assert took < 2.0, took
    assert ControlClient(daemon.sock, timeout=5).call("show")["targets"][0]["state"] == "detached"
