"""The control socket over real Unix sockets: versioned JSON, mode 0600, SO_PEERCRED refusal of non-root."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
import threading

import pytest

from initiator.ctl.client import ControlClient, call
from initiator.daemon.control import ControlServer
from initiator.daemon.wire import ControlError

NOBODY = 65534


async def handler(command: str, args: dict) -> dict:
    if command == "echo":
        return {"args": args}
    if command == "fail":
        raise ControlError("not-found", "no target called 'x'")
    if command == "crash":
        raise RuntimeError("boom")
    if command == "slow":
        await asyncio.sleep(args["seconds"])
        return {}
    raise ControlError("unknown-command", command)


class Running:
    """A ControlServer on its own event loop thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(path, handler)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="ctl-")
    os.chmod(d, 0o755)      # so that an unprivileged child can reach the socket file itself
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(sockdir):
    r = Running(os.path.join(sockdir, "uiscsid.sock"))
    yield r
    r.stop()


def test_request_and_answer_round_trip_with_several_calls_on_one_connection(server):
    with ControlClient(server.path) as c:
        assert c.call("echo", a=1) == {"args": {"a": 1}}
        assert c.call("echo", b=[1, 2]) == {"args": {"b": [1, 2]}}


def test_socket_file_is_mode_0600(server):
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600


def test_handler_error_reaches_the_client_with_its_code(server):
    with pytest.raises(ControlError) as e:
        call(server.path, "fail")
    assert (e.value.code, e.value.message) == ("not-found", "no target called 'x'")


def test_handler_crash_is_reported_and_the_server_keeps_serving(server):
    with pytest.raises(ControlError) as e:
        call(server.path, "crash")
    assert e.value.code == "internal" and "boom" in e.value.message
    assert call(server.path, "echo") == {"args": {}}


def raw_exchange(path: str, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        try:
            s.sendall(payload)
        except BrokenPipeError:
            pass            # the server stopped reading; its answer is still there
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def test_wrong_protocol_version_is_refused_clearly(server):
    answer = raw_exchange(server.path, b'{"version": 99, "id": 1, "command": "echo", "args": {}}\n')
    assert answer["ok"] is False and answer["error"]["code"] == "version"
    assert "99" in answer["error"]["message"] and answer["version"] == 1


@pytest.mark.parametrize("payload, fragment", [
    (b"not json\n", "not JSON"),
    (b"[1, 2]\n", "JSON object"),
    (b'{"version": 1, "id": 1, "command": 5}\n', "string 'command'"),
    (b"\xff\xfe{}\n", "not JSON"),
    (b'{"version": 1, "id": ' + b"9" * 5000 + b"}\n", "not JSON"),       # over Python's int digit limit
    (b'{"version": 1, "args": ' + b"[" * 100000 + b"]" * 100000 + b"}\n", "not JSON"),  # recursion limit
])
def test_malformed_requests_get_bad_request(server, payload, fragment):
    answer = raw_exchange(server.path, payload)
    assert answer["error"]["code"] == "bad-request" and fragment in answer["error"]["message"]


def test_oversized_request_is_refused_without_buffering_it_all(server):
    answer = raw_exchange(server.path, b'{"x": "' + b"a" * (2 << 20))
    assert answer["error"]["code"] == "bad-request" and "longer than" in answer["error"]["message"]


def test_client_timeout_is_reported(server):
    with pytest.raises(ControlError) as e:
        ControlClient(server.path, timeout=0.2).call("slow", seconds=2)
    assert e.value.code == "timeout"


def test_no_daemon_gives_a_clear_message(sockdir):
    with pytest.raises(ControlError) as e:
        call(os.path.join(sockdir, "absent.sock"), "echo")
    assert e.value.code == "unavailable" and "is uiscsid running?" in e.value.message


def test_second_server_on_a_live_socket_is_refused(server):
    other = ControlServer(server.path, handler)
    with pytest.raises(ControlError) as e:
        asyncio.run(other.start())
    assert e.value.code == "busy"
    assert call(server.path, "echo") == {"args": {}}


def test_stale_socket_file_is_replaced(sockdir):
    path = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()                       # the file stays, nobody listens
    r = Running(path)
    try:
        assert call(path, "echo", z=0) == {"args": {"z": 0}}
    finally:
        r.stop()
    assert not os.path.exists(path)


def test_regular_file_in_the_way_is_not_replaced(sockdir):
    path = os.path.join(sockdir, "file")
    open(path, "w").close()
    with pytest.raises(ControlError) as e:
        asyncio.run(ControlServer(path, handler).start())
    assert "not a socket" in e.value.message and os.path.isfile(path)


def as_nobody(path: str) -> tuple[str, str]:
    """Call the server from a forked child that dropped to uid/gid 65534; returns (code, message)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                call(path, "echo", timeout=5)
                out = ("ok", "")
            except ControlError as e:
                out = (e.code, e.message)
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return tuple(json.loads(data))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_non_root_is_refused_by_the_file_mode_with_a_clear_message(server):
    code, message = as_nobody(server.path)
    assert code == "permission" and "root-only" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_non_root_is_refused_by_peercred_even_if_the_mode_is_loosened(server):
    os.chmod(server.path, 0o666)
    code, message = as_nobody(server.path)
    assert code == "permission"
    assert "serves only root" in message and f"uid {NOBODY}" in message
    assert call(server.path, "echo") == {"args": {}}
