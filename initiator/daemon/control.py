"""The uiscsid control socket: versioned JSON lines over a root-only Unix stream socket.

Wire format (one JSON object per line, UTF-8, at most `MAX_MESSAGE` bytes)::

    request:  {"version": 1, "id": 7, "command": "show", "args": {"what": "summary"}}
    answer:   {"version": 1, "id": 7, "ok": true, "result": {...}}
    failure:  {"version": 1, "id": 7, "ok": false, "error": {"code": "not-found", "message": "..."}}

A connection may carry several requests, answered in order. Two locks keep it root-only: the socket
file is mode 0600, and the server checks SO_PEERCRED on every connection, so loosening the file mode
does not open the daemon to other users. The server runs in asyncio (the daemon's loop); the client
is blocking, for uiscsictl.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Self

PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 20
DEFAULT_SOCKET = "/run/uiscsid.sock"

log = logging.getLogger("uiscsid.control")

Handler = Callable[[str, dict], Awaitable[dict]]


class ControlError(Exception):
    """A refused or failed control request; ``code`` is machine-readable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def _encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _decode(line: bytes) -> dict:
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ControlError("bad-request", f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ControlError("bad-request", "a message must be a JSON object")
    return obj


class ControlServer:
    """Serve ``handler(command, args) -> result`` on a Unix socket that only ``allowed_uid`` may use."""

    def __init__(self, path: str, handler: Handler, *, allowed_uid: int = 0) -> None:
        self.path = path
        self.handler = handler
        self.allowed_uid = allowed_uid
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task] = set()
        self._inode: int | None = None

    async def start(self) -> None:
        """Bind (mode 0600 from the first instant) and listen; refuse if another daemon answers there."""
        _remove_stale(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as e:
            sock.close()
            raise ControlError("unavailable", f"cannot bind {self.path}: {e.strerror}") from None
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._inode = os.stat(self.path).st_ino
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_MESSAGE + 1)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.wait(self._conns, timeout=1.0)
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            sock = writer.get_extra_info("socket")
            pid, uid, _ = peer_credentials(sock)
            if uid != self.allowed_uid:
                log.warning("control: refused pid %d uid %d", pid, uid)
                who = "root" if self.allowed_uid == 0 else f"uid {self.allowed_uid}"
                writer.write(_encode(_failure(None, ControlError(
                    "permission", f"permission denied: the uiscsid control socket serves only {who}, "
                                  f"and you are uid {uid}; run uiscsictl as root"))))
                await writer.drain()
                return
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_encode(_failure(None, ControlError(
                        "bad-request", f"message longer than {MAX_MESSAGE} bytes"))))
                    await writer.drain()
                    return
                writer.write(_encode(await self._answer(line)))
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self._conns.discard(task)
            writer.close()

    async def _answer(self, line: bytes) -> dict:
        rid = None
        try:
            req = _decode(line)
            rid = req.get("id")
            if req.get("version") != PROTOCOL_VERSION:
                raise ControlError("version", f"control protocol version {req.get('version')!r} is not "
                                              f"supported (uiscsid speaks {PROTOCOL_VERSION}): "
                                              "use uiscsictl and uiscsid from the same release")
            command, args = req.get("command"), req.get("args", {})
            if not isinstance(command, str) or not isinstance(args, dict):
                raise ControlError("bad-request", "a request needs a string 'command' and an object 'args'")
            result = await self.handler(command, args)
            return {"version": PROTOCOL_VERSION, "id": rid, "ok": True, "result": result}
        except ControlError as e:
            return _failure(rid, e)
        except Exception as e:  # the daemon must survive a bad request: report, log, carry on
            log.exception("control: %s failed", line[:200])
            return _failure(rid, ControlError("internal", f"internal error: {e}"))


def _failure(rid: Any, err: ControlError) -> dict:
    return {"version": PROTOCOL_VERSION, "id": rid, "ok": False,
            "error": {"code": err.code, "message": err.message}}


def _remove_stale(path: str) -> None:
    """Unlink a leftover socket file, but never one a live daemon still answers on."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError("unavailable", f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise ControlError("busy", f"another uiscsid is already listening on {path}")


class ControlClient:
    """Blocking client: ``ControlClient(path).call("show", what="summary")``; raises `ControlError`."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float = 20.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 1

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            if e.errno in (errno.EACCES, errno.EPERM):
                raise ControlError("permission", f"cannot connect to {self.path}: permission denied "
                                                 "(the control socket is root-only: run as root)") from None
            raise ControlError("unavailable", f"cannot connect to {self.path}: {e.strerror} "
                                              "(is uiscsid running?)") from None
        self._sock = sock

    def call(self, command: str, timeout: float | None = None, **args: Any) -> dict:
        """Send one request and return its result; ``timeout`` bounds this call (default: the client's)."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        rid = self._next_id
        self._next_id += 1
        self._sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            try:
                self._sock.sendall(_encode({"version": PROTOCOL_VERSION, "id": rid, "command": command,
                                            "args": args}))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may have refused us and hung up: its answer is still readable
            answer = _decode(self._readline())
        except TimeoutError:
            self.close()
            raise ControlError("timeout", f"uiscsid did not answer {command!r} in time") from None
        except OSError as e:
            self.close()
            raise ControlError("unavailable", f"lost the connection to uiscsid: {e.strerror or e}") from None
        if answer.get("version") != PROTOCOL_VERSION:
            raise ControlError("version", f"uiscsid answered with protocol version {answer.get('version')!r},"
                                          f" this uiscsictl speaks {PROTOCOL_VERSION}")
        if not answer.get("ok"):
            err = answer.get("error") or {}
            raise ControlError(str(err.get("code", "failed")), str(err.get("message", "request failed")))
        if answer.get("id") != rid:
            raise ControlError("bad-answer", f"uiscsid answered request {answer.get('id')!r}, expected {rid}")
        result = answer.get("result")
        return result if isinstance(result, dict) else {}

    def _readline(self) -> bytes:
        assert self._sock is not None
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_MESSAGE:
                raise ControlError("bad-answer", f"uiscsid sent more than {MAX_MESSAGE} bytes in one message")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ControlError("unavailable", "uiscsid closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call(path: str, command: str, timeout: float = 20.0, **args: Any) -> dict:
    """One request on a fresh connection."""
    with ControlClient(path, timeout) as client:
        return client.call(command, **args)
