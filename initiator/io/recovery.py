"""Keeping a session alive and bringing it back (ERL 0): the asyncio driver of the protocol's decisions.

A `Recovery` belongs to one session and talks to it through `RecoveryHost`, the few session methods it
declares. What to do is decided sans-IO in the protocol layer; this object owns the clock and the waiting:
- keep-alive (`protocol.keepalive.KeepAlive`): it sleeps until the next deadline, pings silent connections
  and drops one whose ping goes unanswered;
- target events (`protocol.events`): an Async logout request drains the connection, logs it out, then
  recovers; an announced drop closes it; a Reject is logged;
- reinstatement (`protocol.recovery`): when a connection is lost every connection is dropped, the session
  logs in again with the same ISID and TSIH 0 on the `Reinstatement` schedule, and unfinished commands are
  sent again; after ``replacement_timeout`` without a login everything fails with SessionFailed. A target
  that keeps violating the protocol is given up on after MAX_VIOLATIONS relogins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from ..errors import ConnectionLost, ISCSIError, SessionFailed, TargetProtocolError
from ..protocol import pdu
from ..protocol.connection import Event
from ..protocol.events import ConnectionDropped, LogoutRequested, Rejected, TargetEvent
from ..protocol.keepalive import KeepAlive, Ping, Unresponsive
from ..protocol.recovery import MAX_VIOLATIONS, RecoveryPolicy, Reinstatement
from ..protocol.session import SessionCore, Task
from ..protocol.session_state import SessionEvent, SessionState
from .link import Link
from .params import SessionParams

log = logging.getLogger("initiator.transport")


class RecoveryHost(Protocol):
    """What `Recovery` needs from its session (`io.session.Session`)."""

    params: SessionParams
    core: SessionCore | None
    links: dict[int, Link]

    @property
    def state(self) -> SessionState: ...
    def fire(self, event: SessionEvent, reason: str = "") -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task: ...
    async def log_in(self, deadline: float) -> None: ...
    def drop_links(self, reason: str) -> None: ...
    def unfinished(self) -> list[Task]: ...
    def reinstated(self, again: list[Task]) -> None: ...
    def fail(self, error: ISCSIError, tasks: list[Task] = ...) -> None: ...


class Recovery:
    """Keep-alive, target events and ERL0 reinstatement for one session."""

    def __init__(self, host: RecoveryHost) -> None:
        self.host = host
        self.policy = RecoveryPolicy()
        p = host.params
        self.keepalive = KeepAlive(p.nop_interval, p.nop_timeout) if p.nop_interval > 0 else None
        self._pings: dict[int, Task] = {}  # CID -> our keep-alive NOP-Out waiting for its NOP-In

    def start(self) -> None:
        """The session is logged in: start the keep-alive (discovery sessions allow Text and Logout only)."""
        if self.keepalive is not None and self.host.params.target_name is not None:
            self.host.spawn(self._keepalive())

    # -------------------------------------------------------------- keep-alive
    async def _keepalive(self) -> None:
        ka, host = self.keepalive, self.host
        while True:
            links = {cid: link for cid, link in host.links.items() if link.state.usable}
            last_rx = {cid: link.last_rx for cid, link in links.items()} if host.state is SessionState.LOGGED_IN else {}
            now = time.monotonic()
            for action in ka.handle_timer(now, last_rx):
                link = links[action.cid]
                if isinstance(action, Ping):
                    self._ping(link)
                elif isinstance(action, Unresponsive):
                    self._forget_ping(action.cid)
                    link.abort(ConnectionLost(f"no NOP-In within {action.timeout}s: the target is unresponsive"))
            deadline = ka.next_deadline(last_rx)
            await asyncio.sleep(ka.interval / 2 if deadline is None else max(0.0, deadline - now) + 0.001)

    def _ping(self, link: Link) -> None:
        core, cid = self.host.core, link.state.cid
        t = core.request("nop", pdu.NopOut(data=b"keepaliv"))
        t.waiter = fut = asyncio.get_running_loop().create_future()
        self._pings[cid] = t
        fut.add_done_callback(lambda _: self._answered(cid, t))
        link.send(core.issue_request(t, link.state))

    def _answered(self, cid: int, t: Task) -> None:
        if self._pings.get(cid) is t:
            del self._pings[cid]
            self.keepalive.answered(cid)

    def _forget_ping(self, cid: int) -> None:
        t = self._pings.pop(cid, None)
        if t is not None:
            self.host.core.forget(t)

    # -------------------------------------------------------------- target events
    def target_event(self, ev: TargetEvent) -> None:
        link = self.host.links.get(ev.cid)
        if isinstance(ev, LogoutRequested) and link is not None:
            self.host.spawn(self._requested_logout(link, ev.seconds))
        elif isinstance(ev, ConnectionDropped) and link is not None:
            link.abort(ConnectionLost(f"the target announced it drops connection {ev.cid}"))
        elif isinstance(ev, Rejected):
            log.warning("target rejected a PDU: %s", ev.reason)

    async def _requested_logout(self, link: Link, seconds: int) -> None:
        """Async logout request: let the connection drain, log it out, then recover (re-login, reissue)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds - 1.0)):
                while link.state.outstanding:
                    await asyncio.sleep(0.01)
        core, c = self.host.core, link.state
        reason = (pdu.LogoutReason.CLOSE_CONNECTION if len(self.host.links) > 1
                  else pdu.LogoutReason.CLOSE_SESSION)
        t = core.request("logout", pdu.LogoutRequest(reason=reason, cid=c.cid))
        t.waiter = asyncio.get_running_loop().create_future()
        c.fire(Event.LOGOUT)
        link.send(core.issue_request(t, c))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await t.waiter
        link.abort(ConnectionLost("logged out at the target's request"))

    # -------------------------------------------------------------- reinstatement
    def connection_lost(self, error: ISCSIError | None) -> None:
        """A connection of the logged-in session closed: reinstate the session, or give up."""
        host = self.host
        if not self.policy.connection_lost(isinstance(error, TargetProtocolError)):
            host.fail(SessionFailed(f"giving up after {MAX_VIOLATIONS} protocol violations by the target: {error}"))
            return
        log.warning("session %s: %s; recovering", host.params.target_name, error)
        host.fire(SessionEvent.CONNECTION_LOST, str(error))
        host.spawn(self._reinstate(error))

    async def _reinstate(self, cause: ISCSIError | None) -> None:
        """ERL0: drop every connection, log in again with the same ISID and TSIH 0, reissue what was unfinished."""
        host, p = self.host, self.host.params
        again = host.unfinished()
        schedule = Reinstatement(time.monotonic(), p.replacement_timeout, p.login_timeout)
        while True:
            try:
                await asyncio.sleep(schedule.delay)
                await host.log_in(schedule.login_deadline(time.monotonic()))
                break
            except (ISCSIError, OSError) as e:
                host.drop_links("session recovery")
                log.info("relogin failed: %s", e)
                if schedule.failed(time.monotonic()):
                    host.fail(SessionFailed(
                        f"could not log in again within the replacement timeout of {p.replacement_timeout:g}s "
                        f"(connection lost: {cause}; last error: {e})"), again)
                    return
        host.reinstated(again)
