"""uiscsictl's end of the uiscsid control socket: a blocking client of the versioned JSON lines (`daemon.wire`).

``ControlClient(path).call("show", what="summary")`` sends one request and returns its result, or raises
`ControlError` with the daemon's code and message. Every wait is bounded by the client's timeout.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Self

from ..daemon.wire import (
    DEFAULT_SOCKET,
    MAX_MESSAGE,
    PROTOCOL_VERSION,
    ControlError,
    decode_message,
    encode_message,
)


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
                self._sock.sendall(encode_message({"version": PROTOCOL_VERSION, "id": rid, "command": command,
                                            "args": args}))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may have refused us and hung up: its answer is still readable
            answer = decode_message(self._readline())
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
