"""The uiscsid control socket's server: versioned JSON lines (`wire`) over a root-only Unix stream socket.

A connection may carry several requests, answered in order. Two locks keep it root-only: the socket
file is mode 0600, and the server checks SO_PEERCRED on every connection, so loosening the file mode
does not open the daemon to other users. The server runs in the daemon's asyncio loop; uiscsictl's
blocking client is `ctl.client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable

from .wire import MAX_MESSAGE, PROTOCOL_VERSION, ControlError, decode_message, encode_message, failure

log = logging.getLogger("uiscsid.control")

Handler = Callable[[str, dict], Awaitable[dict]]


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


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
                writer.write(encode_message(failure(None, ControlError(
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
                    writer.write(encode_message(failure(None, ControlError(
                        "bad-request", f"message longer than {MAX_MESSAGE} bytes"))))
                    await writer.drain()
                    return
                writer.write(encode_message(await self._answer(line)))
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self._conns.discard(task)
            writer.close()

    async def _answer(self, line: bytes) -> dict:
        rid = None
        try:
            req = decode_message(line)
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
            return failure(rid, e)
        except Exception as e:  # the daemon must survive a bad request: report, log, carry on
            log.exception("control: %s failed", line[:200])
            return failure(rid, ControlError("internal", f"internal error: {e}"))


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
