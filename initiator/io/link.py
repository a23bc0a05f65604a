"""One TCP connection of a session, in asyncio: the login exchange, then PDUs into the session core.

`Link` is an `asyncio.BufferedProtocol`: the event loop's ``recv_into`` fills the connection's `Framer`
buffer, and a large Data-In payload lands straight in the caller's buffer. Sends from one loop iteration
are corked into one write when other commands are in flight, and that write is vectored (``os.writev`` of
the PDU segments on asyncio's loop, ``writelines`` on uvloop): data is never joined in user space.
A link tells its owner (the session) what happened through the small interface `LinkOwner` declares:
PDUs were handed to the core, the connection was lost, the socket can take more.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from asyncio import selector_events
from typing import Protocol

from ..errors import CommandTimeout, ConnectionLost, ISCSIError, TargetProtocolError
from ..protocol import pdu
from ..protocol.connection import Connection, Event
from ..protocol.framer import Framer, PduReader
from ..protocol.login import LoginMachine, LoginParams
from ..protocol.session import SessionCore
from .vectored import writev_from

log = logging.getLogger("initiator.transport")


class LinkOwner(Protocol):
    """What a link tells the session that owns it."""

    def link_received(self) -> None:
        """PDUs arrived and went into the session core: send what it produced, wake finished callers."""

    def link_lost(self, link: Link) -> None:
        """``link``'s connection closed (``link.error`` says why)."""

    def link_writable(self) -> None:
        """A link's socket drained: send what waits."""


class Link(asyncio.BufferedProtocol):
    """One TCP connection: login exchange, then PDUs into the session core."""

    def __init__(self, owner: LinkOwner, cid: int) -> None:
        self.owner = owner
        self.state = Connection(cid)
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self.framer = PduReader(pdu.LOGIN_MAX_DATA, on_pdu=self._login_pdu).framer
        self.login_q: asyncio.Queue = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()
        self.last_rx = time.monotonic()
        self.error: ISCSIError | None = None
        self.paused = False
        self.ffp = False  # in the full-feature phase: PDUs go to the session core
        self.cork: list | None = None
        self.loop = asyncio.get_running_loop()

    # asyncio protocol --------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        # asyncio's selector transport joins writelines() and copies a partial write; with its socket's
        # fd we write PDU segments with writev ourselves (see _write). uvloop's writelines is vectored.
        self.fd = -1
        if isinstance(transport, selector_events._SelectorSocketTransport):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self.fd = sock.fileno()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.framer.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.last_rx = time.monotonic()
        try:
            self.framer.buffer_updated(nbytes)
        except ISCSIError as e:
            self.abort(e)
            return
        if self.ffp:
            self.owner.link_received()

    def connection_lost(self, exc) -> None:
        self.fd = -1  # the transport closes the socket: its number may be reused
        if self.error is None:
            self.error = ConnectionLost(f"connection {self.state.cid} to the target closed"
                                        + (f": {exc}" if exc else ""))
        self.login_q.put_nowait(self.error)
        if not self.closed.done():
            self.closed.set_result(None)
        self.owner.link_lost(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.owner.link_writable()

    # ------------------------------------------------------------------------------
    def _login_pdu(self, p: pdu.PDU) -> None:
        if isinstance(p, pdu.LoginResponse) and p.transit and p.nsg == 3 and p.status_class == 0:
            self.framer.hold = True  # what follows is full-feature traffic for the session's framer
        self.login_q.put_nowait(p)

    def enter_ffp(self, core: SessionCore) -> None:
        """Login done: PDUs from now on go to the session core, payloads into callers' buffers."""
        st = self.state
        rest = self.framer.take_rest()
        self.framer = Framer(functools.partial(core.receive, st), core.data_in_sink, st.max_recv_dsl,
                             st.header_digest, st.data_digest)
        self.framer.on_bad_data = core.digest_error_handler(st)
        self.ffp = True
        # receive straight into the framer's buffers: uvloop takes get_buffer once per set_protocol
        self.get_buffer = self.framer.get_buffer
        if self.transport is not None:
            self.transport.set_protocol(self)
        if rest:
            self.buffer_updated_from(rest)

    def buffer_updated_from(self, data: bytes) -> None:
        try:
            self.framer.feed(data)
        except ISCSIError as e:
            self.abort(e)

    def abort(self, error: ISCSIError) -> None:
        """Drop the connection because of ``error`` (a protocol violation or a dead peer)."""
        if self.error is None:
            self.error = error
            log.warning("connection %d: %s", self.state.cid, error)
        if self.transport is not None:
            self.transport.abort()

    def send(self, bufs: list) -> None:
        """Queue PDUs for this connection. With other commands in flight, sends issued in the same loop
        iteration are corked into one write (one syscall for a burst of commands); a lone command goes
        out at once, which keeps QD1 latency low."""
        if self.cork is not None:
            self.cork.extend(bufs)
        elif self.state.outstanding > 1:
            self.cork = list(bufs)
            self.loop.call_soon(self._uncork)
        elif self.fd < 0 and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(bufs)     # uvloop: its writelines is the vectored write
        else:
            self._write(bufs)

    def _uncork(self) -> None:
        bufs, self.cork = self.cork, None
        if self.transport is not None and not self.transport.is_closing():
            self._write(bufs)

    def _write(self, bufs: list) -> None:
        """Scatter-gather: on asyncio's selector loop, ``os.writev`` straight from the PDU segments (BHS,
        caller's data slices, padding) while the transport has nothing queued, so nothing is joined or
        copied in user space; a remainder the socket did not take goes to the transport (which copies it).
        On other loops (uvloop) ``writelines`` does the scatter-gather write itself."""
        t = self.transport
        fd = self.fd
        if fd < 0 or t.is_closing():
            t.writelines(bufs)
            return
        if not t.get_write_buffer_size():
            try:
                i = writev_from(fd, bufs)
            except OSError:
                i = 0   # the transport's own write below meets the same error and reports it
            n = len(bufs)
            if i == n:
                return
            bufs = bufs[i:]
        w = t.write
        for b in bufs:
            w(b)

    async def login(self, params: LoginParams, deadline: float) -> LoginMachine:
        m = LoginMachine(params)
        req = m.start()
        while req is not None:
            self.transport.write(pdu.encode_bytes(req))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout("login timed out")
            try:
                async with asyncio.timeout(remaining):
                    rsp = await self.login_q.get()
            except TimeoutError:
                raise CommandTimeout("the target did not answer the login in time") from None
            if isinstance(rsp, ISCSIError):
                raise m.closed(rsp)
            if not isinstance(rsp, pdu.LoginResponse):
                raise TargetProtocolError(f"{type(rsp).__name__} during login")
            req = m.receive(rsp)
        self.state.logged_in(m.result, (m.statsn + 1) & 0xFFFFFFFF)
        return m


async def dial(owner: LinkOwner, cid: int, host: str, port: int, deadline: float) -> Link:
    """Connect a new link for ``owner`` to host:port by ``deadline`` (time.monotonic())."""
    loop = asyncio.get_running_loop()
    conn = Link(owner, cid)
    conn.state.fire(Event.CONNECT)
    try:
        async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
            await loop.create_connection(lambda: conn, host, port)
    except TimeoutError:
        conn.state.fire(Event.FAIL)
        raise CommandTimeout(f"connecting to {host}:{port} timed out") from None
    except OSError as e:
        conn.state.fire(Event.FAIL)
        raise ConnectionLost(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
    conn.state.fire(Event.CONNECTED)
    return conn
