"""The kernel bridge (our vscsi(4)): serve a block backend as /dev/nbdN through the NBD ioctls.

The kernel gets one end of a socketpair (NBD_SET_SOCK) and sends requests on it; we answer on the other
end from the asyncio loop, many requests at once (queue depth > 1: the kernel tags each one with a
handle, and replies may come back in any order). NBD_DO_IT blocks for the life of the device, so it runs
in its own thread **with every signal blocked**: a signal landing in that thread (a SIGCHLD from mkfs,
say) interrupts the ioctl and the kernel tears the device down (../shared/VM-NOTES.md).

`NbdDevice` is also the request server every bridge shares (the codec is `nbd_wire`, the sysfs queries
`nbd_sysfs`). Linux only; attaching needs root (opening /dev/nbdN). nbd_netlink.KeptDevice is the same server
attached over NBD netlink instead: it survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import threading

from . import nbd_queue
from .backends import BlockBackend
from .nbd_server import WINDOW, RequestServer, Stats
from .nbd_sysfs import device_indexes, is_connected, sectors, users
from .nbd_wire import (
    NBD_CLEAR_QUE,
    NBD_CLEAR_SOCK,
    NBD_DISCONNECT,
    NBD_DO_IT,
    NBD_SET_BLKSIZE,
    NBD_SET_FLAGS,
    NBD_SET_SIZE_BLOCKS,
    NBD_SET_SOCK,
    NbdError,
    transmission_flags,
)

log = logging.getLogger("uiscsid.nbd")

# Indexes this process is setting up or serving. The kernel's own busy check (NBD_SET_SOCK -> EBUSY)
# does not fire for a second socket from the *same* task before DO_IT, so we keep our own list.
_claimed: set[int] = set()


class NbdDevice:
    """One attached /dev/nbdN serving ``backend``. Create with `attach`; end with `disconnect`."""

    def __init__(self, index: int, fd: int, backend: BlockBackend, queue_depth: int) -> None:
        self.index = index
        self.path = f"/dev/nbd{index}"
        self.backend = backend
        self.stats = Stats()
        self._fd = fd
        self.queue_depth = queue_depth
        self._server: RequestServer | None = None
        self._done = asyncio.get_running_loop().create_future()
        self._serve_task: asyncio.Task | None = None
        self._ours: socket.socket | None = None
        self.got_disc = False

    @classmethod
    async def attach(cls, backend: BlockBackend, index: int | None = None, queue_depth: int = WINDOW) -> NbdDevice:
        """Give ``backend`` to the kernel as the first free /dev/nbdN (or exactly ``index``)."""
        candidates = [index] if index is not None else device_indexes()
        if not candidates or not os.path.exists(f"/dev/nbd{candidates[0]}"):
            raise NbdError("no /dev/nbd* devices: load the nbd kernel module (modprobe nbd)")
        for i in candidates:
            if i in _claimed or is_connected(i):
                continue
            try:
                fd = os.open(f"/dev/nbd{i}", os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                raise NbdError(f"cannot open /dev/nbd{i}: {e.strerror}") from None
            try:
                kernel_end, ours = _configure(fd, backend)
            except OSError as e:
                os.close(fd)
                if e.errno == errno.EBUSY and index is None:
                    continue                # someone else took it between our check and SET_SOCK
                raise NbdError(f"cannot set up /dev/nbd{i}: {e.strerror}") from None
            _claimed.add(i)
            dev = cls(i, fd, backend, queue_depth)
            try:
                await dev._start(kernel_end, ours)
            except BaseException:
                await dev.disconnect(force=True, timeout=2.0)
                raise
            return dev
        raise NbdError("every /dev/nbd* device is in use")

    async def _start(self, kernel_end: socket.socket, ours: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._ours = ours
        self._serve_task = asyncio.create_task(self.serve_socket(ours), name=f"nbd{self.index}-serve")
        threading.Thread(target=self._do_it, args=(loop, kernel_end), name=f"nbd{self.index}-do-it",
                         daemon=True).start()
        for _ in range(500):    # live once the kernel shows our pid *and* the size (it sets the size last)
            if self._done.done() or is_connected(self.index) and sectors(self.index) == self.backend.size // 512:
                break
            await asyncio.sleep(0.01)
        if self._done.done():
            raise NbdError(f"/dev/nbd{self.index}: the kernel refused the device: {self._done.result()}")
        log.info("attached %s (%d bytes, block size %d)", self.path, self.backend.size, self.backend.block_size)
        self.tune_queue()

    def tune_queue(self) -> None:
        """Raise the device's largest request to what the LUN takes (nbd_queue); after every attach."""
        b = self.backend
        done = nbd_queue.tune(self.index, b.block_size, getattr(b, "max_transfer_blocks", 0),
                              getattr(b, "optimal_transfer_blocks", 0))
        if done:
            log.info("%s: %s", self.path, ", ".join(f"{k} {v}" for k, v in done.items()))

    def _do_it(self, loop: asyncio.AbstractEventLoop, kernel_end: socket.socket) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        outcome = "disconnected"
        try:
            fcntl.ioctl(self._fd, NBD_DO_IT)
        except OSError as e:
            outcome = f"NBD_DO_IT ended: {e.strerror}"
        for request in (NBD_CLEAR_QUE, NBD_CLEAR_SOCK):
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, request)
        kernel_end.close()
        with contextlib.suppress(RuntimeError):     # the loop may already be gone at exit
            loop.call_soon_threadsafe(self._finish, outcome)

    def _finish(self, outcome: str) -> None:
        if not self._done.done():
            self._done.set_result(outcome)

    async def serve_socket(self, sock: socket.socket) -> None:
        """Answer requests on ``sock`` until the kernel disconnects (``attach`` runs this; tests may too)."""
        server = self._server = RequestServer(sock, self.backend, self.stats, self.path, self.queue_depth)
        try:
            outcome = await asyncio.shield(server.closed)
        except asyncio.CancelledError:      # we are exiting: stop serving, leave the device to the kernel
            server.abort()
            sock.close()
            raise
        self.got_disc = outcome == "disconnect"
        sock.close()
        self._served_out()

    def _served_out(self) -> None:
        """Our socket is finished (DISC or EOF). The ioctl bridge learns the rest from its DO_IT thread."""

    @property
    def connected(self) -> bool:
        return not self._done.done()

    def users(self) -> list[str]:
        return users(self.index)

    async def disconnect(self, force: bool = False, timeout: float = 5.0) -> None:
        """Detach from the kernel; refuse while mounted or held, unless ``force`` (then I/O fails)."""
        if self._done.done():
            await self.wait_closed()
            return
        busy = self.users()
        if busy and not force:
            raise NbdError(f"{self.path} is in use ({', '.join(busy)}); unmount it first or force")
        with contextlib.suppress(OSError):
            fcntl.ioctl(self._fd, NBD_DISCONNECT)
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except TimeoutError:
            log.warning("%s: no clean disconnect in %.0fs; closing the socket", self.path, timeout)
            if self._ours is not None:
                with contextlib.suppress(OSError):
                    self._ours.shutdown(socket.SHUT_RDWR)
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        await self.wait_closed()

    async def wait_closed(self) -> str:
        """Wait until the kernel let go of the device; returns how it ended."""
        outcome = await asyncio.shield(self._done)
        if self._serve_task is not None:
            with contextlib.suppress(Exception):
                await self._serve_task
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            _claimed.discard(self.index)
            log.info("detached %s (%s)", self.path, outcome)
        return outcome


def _configure(fd: int, backend: BlockBackend) -> tuple[socket.socket, socket.socket]:
    """Size, block size and flags, then hand the kernel its end of a fresh socketpair."""
    if backend.size % backend.block_size or backend.size == 0:
        raise OSError(errno.EINVAL, f"backend size {backend.size} is not a positive multiple of the block size")
    fcntl.ioctl(fd, NBD_SET_BLKSIZE, backend.block_size)
    fcntl.ioctl(fd, NBD_SET_SIZE_BLOCKS, backend.size // backend.block_size)
    fcntl.ioctl(fd, NBD_SET_FLAGS, transmission_flags(backend))
    kernel_end, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fcntl.ioctl(fd, NBD_SET_SOCK, kernel_end.fileno())
    except OSError:
        kernel_end.close()
        ours.close()
        raise
    return kernel_end, ours
