"""The NBD request server: answers the kernel's requests on one socket, many at once, from a block backend.

Every bridge (nbd_ioctl's NbdDevice, nbd_netlink's KeptDevice) serves its socket with `RequestServer`.
Built for few system calls and few wake-ups per request, which is what a request costs most in a guest:

- the socket is read by a reader callback straight into a receive buffer, and **every** request that
  buffer holds is dispatched at once (the kernel queues many per wake-up at depth); a large write payload
  is received straight into its own buffer, never through the receive buffer;
- a read's data lands in its own buffer (the backend's ``read_into``: an iSCSI Data-In payload goes there
  from the TCP socket) and goes back with its 16-byte reply header in one vectored write, never joined;
- the replies finished in one loop iteration go out together in **one** ``writev``, so the kernel's
  receive thread wakes once for them all; the reply that leaves nothing else in flight (queue depth 1)
  goes out at once instead of a loop iteration later;
- a read or a write costs no task, future or coroutine: a backend with ``start_read``/``start_write``
  (IscsiLun, through `Session.submit`) calls back when the command ends, in the same loop iteration as the
  receive that ended it; other requests (flush, trim, other backends) run as one small coroutine each;
- there is no semaphore: when ``window`` requests (or ``window_bytes``) are in flight the server stops
  reading until one finishes; the back pressure reaches the kernel, whose own tag limit is 128 per socket.

The module is long on purpose (over 400 lines): reading, the window, dispatch and the batched replies share
one object's state on the per-request path, and splitting them across modules would add calls to every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
from dataclasses import dataclass, field

from ..io.vectored import writev_from
from .backends import BlockBackend, BlockError
from .nbd_wire import (
    CMD_DISC,
    CMD_FLAG_FUA,
    CMD_FLUSH,
    CMD_NAMES,
    CMD_READ,
    CMD_TRIM,
    CMD_WRITE,
    MAX_REQUEST,
    REPLY,
    REPLY_MAGIC,
    REQUEST,
    REQUEST_MAGIC,
    NbdError,
)

log = logging.getLogger("uiscsid.nbd")

WINDOW = 128                 # requests in flight before we stop reading (nbd.c's tag set depth per socket)
WINDOW_BYTES = 64 << 20      # payload bytes in flight before we stop reading (bounded memory)
RECV_BUFFER = 256 << 10      # request headers and small write payloads land here
_REQ = REQUEST.size
_unpack_request = REQUEST.unpack_from
_pack_reply = REPLY.pack


class BufferPool:
    """Request buffers (read data, write payloads) used again instead of made anew: a new bytearray is
    zero-filled, and for a 1 MiB request that fill cost more than the rest of the request (valgrind: 4/5 of
    the server's instructions; in a TCG guest memset is slower still). Holds at most ``max_bytes``, and
    lets go of everything once unused for ``idle`` seconds. A buffer comes back only after its request
    succeeded and its reply left: nothing else can still write into it or send from it then."""

    def __init__(self, max_bytes: int = 32 << 20, idle: float = 10.0) -> None:
        self.max_bytes, self.idle = max_bytes, idle
        self._free: dict[int, list[bytearray]] = {}
        self._bytes = 0
        self._used = False
        self._timer: asyncio.TimerHandle | None = None

    def take(self, size: int) -> bytearray:
        self._used = True
        free = self._free.get(size)
        if free:
            self._bytes -= size
            return free.pop()
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        size = len(buf)
        if self._bytes + size > self.max_bytes:
            return
        self._free.setdefault(size, []).append(buf)
        self._bytes += size
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.idle, self._trim)

    def _trim(self) -> None:
        self._timer = None
        if self._used:          # in use: look again later
            self._used = False
            self._timer = asyncio.get_running_loop().call_later(self.idle, self._trim)
            return
        self._free.clear()
        self._bytes = 0


POOL = BufferPool()     # one per process: every device's server shares it (one loop, one thread)


@dataclass
class Stats:
    """Counters like OpenBSD's ``show vscsi stats``: commands by kind, bytes, completions by status."""

    commands: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    completed_ok: int = 0
    completed_error: int = 0
    errors_by_errno: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0


class RequestServer:
    """Serve NBD requests from ``sock`` (non-blocking; the server owns it until `closed`) with ``backend``.

    `closed` resolves to "disconnect" (the kernel sent NBD_CMD_DISC), "eof" (the socket closed) or an error
    message, once every request taken finished and its reply went out (or could not).
    """

    def __init__(self, sock: socket.socket, backend: BlockBackend, stats: Stats, name: str,
                 window: int = WINDOW, window_bytes: int = WINDOW_BYTES) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.fd = sock.fileno()
        self.backend = backend
        self.stats = stats
        self.name = name
        self.window = window
        self.window_bytes = window_bytes
        self.closed: asyncio.Future[str] = self.loop.create_future()
        self._buf = bytearray(RECV_BUFFER)
        self._mv = memoryview(self._buf)
        self._start = self._end = 0
        self._payload: memoryview | None = None      # a write payload being received straight into its buffer
        self._payload_req: tuple | None = None
        self._ppos = 0
        self._bytes = 0                               # payload bytes in flight
        self._in_flight = 0                           # requests taken and not yet answered
        self._parsing = False
        self._idle: asyncio.Future | None = None      # set when the last one is answered (at the end)
        self._reading = False
        self._ending: str | None = None               # why we stopped taking requests
        self._out: list = []                          # reply buffers not yet written
        self._flush_soon = False
        self._writer = False
        self._tasks: set[asyncio.Task] = set()
        self._start_read = getattr(backend, "start_read", None)      # the callback data path, when it has one
        self._start_write = getattr(backend, "start_write", None)
        sock.setblocking(False)
        self._resume()

    # ------------------------------------------------------------------ receiving
    def _resume(self) -> None:
        if not self._reading and self._ending is None:
            self._reading = True
            self.loop.add_reader(self.fd, self._readable)

    def _pause(self) -> None:
        if self._reading:
            self._reading = False
            self.loop.remove_reader(self.fd)

    def _readable(self) -> None:
        try:
            if self._payload is not None:
                n = self.sock.recv_into(self._payload[self._ppos:])
                if n:
                    self._ppos += n
                    if self._ppos == len(self._payload):
                        self._payload_done()
                        self._parse()
            else:
                if self._start and len(self._buf) - self._end < _REQ + 4096:
                    self._compact()
                n = self.sock.recv_into(self._mv[self._end:])
                if n:
                    self._end += n
                    self._parse()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._stop(f"receive failed: {e.strerror or e}")
            return
        except NbdError as e:
            log.error("%s: %s; dropping the device", self.name, e)
            self._stop(str(e))
            return
        if not n:
            self._stop("eof")

    def _compact(self) -> None:
        live = self._end - self._start
        self._buf[:live] = self._mv[self._start:self._end]
        self._start, self._end = 0, live

    def _full(self) -> bool:
        return self._in_flight >= self.window or self._bytes >= self.window_bytes

    def _parse(self) -> None:
        """Dispatch every whole request in the receive buffer, as long as the window has room."""
        if self._parsing:           # a request failed at once, inside _dispatch: its caller goes on
            return
        self._parsing = True
        try:
            self._parse_all()
        finally:
            self._parsing = False
        if self._start == self._end:
            self._start = self._end = 0
        if self._reading and self._full():
            self._pause()

    def _parse_all(self) -> None:
        mv = self._mv
        while self._ending is None and self._payload is None and not self._full():
            p = self._start
            if self._end - p < _REQ:
                break
            magic, flags, cmd, handle, offset, length = _unpack_request(mv, p)
            if magic != REQUEST_MAGIC:
                raise NbdError(f"bad NBD request magic 0x{magic:08x}")
            p += _REQ
            if cmd == CMD_WRITE:
                if length > MAX_REQUEST:
                    raise NbdError(f"NBD write of {length} bytes is larger than {MAX_REQUEST}")
                payload = POOL.take(length)
                have = min(length, self._end - p)
                payload[:have] = mv[p:p + have]
                self._start = p + have
                if have < length:       # the rest goes straight into the payload's buffer
                    self._payload, self._payload_req, self._ppos = memoryview(payload), (cmd, flags, handle,
                                                                                         offset, length), have
                    break
                self._dispatch(cmd, flags, handle, offset, length, payload)
            else:
                self._start = p
                if cmd == CMD_DISC:
                    log.info("%s: the kernel asked to disconnect", self.name)
                    self._stop("disconnect")
                    break
                if cmd == CMD_READ and length > MAX_REQUEST:
                    raise NbdError(f"NBD read of {length} bytes is larger than {MAX_REQUEST}")
                self._dispatch(cmd, flags, handle, offset, length, None)

    def _payload_done(self) -> None:
        cmd, flags, handle, offset, length = self._payload_req
        payload = self._payload.obj
        self._payload = self._payload_req = None
        self._dispatch(cmd, flags, handle, offset, length, payload)

    # ------------------------------------------------------------------ running requests
    def _dispatch(self, cmd: int, flags: int, handle: int, offset: int, length: int, payload) -> None:
        st = self.stats
        name = CMD_NAMES.get(cmd, f"cmd{cmd}")
        st.commands[name] = st.commands.get(name, 0) + 1
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        self._in_flight += 1
        size = length if cmd == CMD_READ or cmd == CMD_WRITE else 0
        self._bytes += size
        if cmd == CMD_READ and self._start_read is not None:
            data = POOL.take(length)
            done = functools.partial(self._done, cmd, handle, offset, length, size, data, None)
            try:
                self._start_read(offset, memoryview(data), done)
            except BlockError as e:
                done(e.errno, str(e))
            except Exception:           # the daemon must survive a backend bug: fail this I/O only
                log.exception("%s: read at %d+%d failed", self.name, offset, length)
                done(errno.EIO, "")
            return
        if cmd == CMD_WRITE and self._start_write is not None:
            done = functools.partial(self._done, cmd, handle, offset, length, size, None, payload)
            try:
                self._start_write(offset, payload, bool(flags & CMD_FLAG_FUA), done)
            except BlockError as e:
                done(e.errno, str(e))
            except Exception:
                log.exception("%s: write at %d+%d failed", self.name, offset, length)
                done(errno.EIO, "")
            return
        task = self.loop.create_task(self._handle(cmd, flags, handle, offset, length, size, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, cmd: int, flags: int, handle: int, offset: int, length: int, size: int,
                      payload) -> None:
        """A request the backend serves as a coroutine (flush, trim; reads and writes of backends without
        ``start_read``/``start_write``)."""
        backend = self.backend
        data = None
        err, message = 0, ""
        try:
            if cmd == CMD_READ:
                data = await backend.read(offset, length)
            elif cmd == CMD_WRITE:
                await backend.write(offset, payload, bool(flags & CMD_FLAG_FUA))
            elif cmd == CMD_FLUSH:
                await backend.flush()
            elif cmd == CMD_TRIM:
                await backend.trim(offset, length)
            else:
                err = errno.EINVAL
        except BlockError as e:
            err, message = e.errno, str(e)
        except asyncio.CancelledError:
            self.stats.in_flight -= 1
            self._in_flight -= 1
            self._bytes -= size
            raise
        except Exception:               # the daemon must survive a backend bug: fail this I/O only
            err = errno.EIO
            log.exception("%s: %s at %d+%d failed", self.name, CMD_NAMES.get(cmd, cmd), offset, length)
        self._done(cmd, handle, offset, length, size, data, None, err, message)

    def _done(self, cmd: int, handle: int, offset: int, length: int, size: int, data, payload, err: int,
              message: str) -> None:
        """One request finished (``err`` 0) or failed: count it, reply, read again if the window allows.
        ``payload``: a write's buffer, back to the pool when the write succeeded (a failed one may still be
        on its way out behind an abort, so it is left to the garbage collector)."""
        st = self.stats
        st.in_flight -= 1
        self._in_flight -= 1
        self._bytes -= size
        if err:
            st.completed_error += 1
            key = errno.errorcode.get(err, str(err))
            st.errors_by_errno[key] = st.errors_by_errno.get(key, 0) + 1
            if message:
                log.warning("%s: %s at %d+%d failed: %s", self.name, CMD_NAMES.get(cmd, cmd), offset, length,
                            message)
            data = None
        else:
            st.completed_ok += 1
            if cmd == CMD_READ:
                st.bytes_read += length
            elif cmd == CMD_WRITE:
                st.bytes_written += length
                if payload is not None:
                    POOL.give(payload)
        self._reply(handle, err, data)
        if self._ending is not None:
            if not self._in_flight and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)
        elif not self._reading and not self._full():
            self._resume()
            if self._end > self._start and self._payload is None:     # requests the window held back
                try:
                    self._parse()
                except NbdError as e:
                    log.error("%s: %s; dropping the device", self.name, e)
                    self._stop(str(e))

    # ------------------------------------------------------------------ replying
    def _reply(self, handle: int, err: int, data) -> None:
        if self.closed.done():
            return
        out = self._out
        out.append(_pack_reply(REPLY_MAGIC, err, handle))
        if data is not None:
            out.append(data)
        if self._writer:
            return                      # the socket is full: the writer callback sends it all
        if not self._in_flight:         # nothing else is coming soon: no reason to wait a loop iteration
            self._flush()
        elif not self._flush_soon:
            self._flush_soon = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        out = self._out
        if not out or self._writer:
            return
        fd = self.fd
        try:
            i = writev_from(fd, out)
        except OSError as e:            # the kernel went away: these replies have no reader
            log.debug("%s: reply not sent: %s", self.name, e)
            out.clear()
            self._stop(f"send failed: {e.strerror or e}")
            return
        for b in out[:i]:       # read data that left: its buffer may serve another request
            if type(b) is bytearray:
                POOL.give(b)
            elif type(b) is memoryview and type(b.obj) is bytearray:
                POOL.give(b.obj)
        del out[:i]
        if out:
            self._writer = True
            self.loop.add_writer(fd, self._writable)

    def _writable(self) -> None:
        self._writer = False
        self.loop.remove_writer(self.fd)
        self._flush()

    # ------------------------------------------------------------------ ending
    def _stop(self, why: str) -> None:
        """Take no more requests; `closed` resolves once those taken are answered (or 30 s passed)."""
        if self._ending is not None:
            return
        self._ending = why
        self._pause()
        self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        if self._in_flight:
            self._idle = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle, 30)
        for _ in range(500):        # the last replies, while the kernel still reads them (at most 5 s)
            self._flush()
            if not self._out:
                break
            await asyncio.sleep(0.01)
        self._finish()

    def _finish(self) -> None:
        self._out.clear()
        if self._writer:
            self._writer = False
            self.loop.remove_writer(self.fd)
        if not self.closed.done():
            self.closed.set_result(self._ending or "eof")

    def abort(self) -> None:
        """We are exiting: stop reading and writing now, cancel what runs. The socket stays open."""
        self._ending = self._ending or "aborted"
        self._pause()
        for task in list(self._tasks):
            task.cancel()
        self._finish()
