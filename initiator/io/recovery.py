"""Keeping a session alive and bringing it back (ERL 0), as a mixin of `transport.Session`.

- keep-alive: a connection silent for ``nop_interval`` is pinged; no NOP-In within ``nop_timeout`` drops it;
- target events: an Async logout request drains the connection, logs it out, then recovers; an announced
  drop closes it; a Reject is logged;
- recovery: when a connection is lost every connection is dropped, the session logs in again with the same
  ISID and TSIH 0 (reinstatement) with bounded exponential backoff, and unfinished commands are reissued
  (ramping up from one in flight); after ``replacement_timeout`` without a login everything fails with
  SessionFailed. A target that keeps violating the protocol is given up on after MAX_VIOLATIONS relogins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..errors import ConnectionLost, ISCSIError, SessionFailed, TargetProtocolError
from ..protocol import pdu
from ..protocol.connection import Event

if TYPE_CHECKING:
    from ..protocol.session import SessionCore
    from .link import Link
    from .session import SessionConfig

log = logging.getLogger("initiator.transport")
MAX_VIOLATIONS = 3  # consecutive target protocol errors (each followed by a relogin) before the session fails


class Recovery:
    """Keep-alive, target events and ERL0 recovery for `transport.Session` (which provides the state)."""

    cfg: SessionConfig
    core: SessionCore
    _conns: dict

    # -------------------------------------------------------------- keep-alive, events, recovery
    async def _keepalive(self) -> None:
        """Ping a connection that has been silent for nop_interval; no answer within nop_timeout = dead."""
        cfg = self.cfg
        while True:
            await asyncio.sleep(cfg.nop_interval / 2)
            if self._state != "up":
                continue
            now = time.monotonic()
            for conn in list(self._conns.values()):
                if conn.pinging or not conn.state.usable or now - conn.last_rx < cfg.nop_interval:
                    continue
                self._spawn(self._ping_conn(conn))

    async def _ping_conn(self, conn: Link) -> None:
        t = self.core.request("nop", pdu.NopOut(data=b"keepaliv"))
        t.waiter = asyncio.get_running_loop().create_future()
        conn.pinging = True
        conn.send(self.core.issue_request(t, conn.state))
        try:
            async with asyncio.timeout(self.cfg.nop_timeout):
                await t.waiter
        except TimeoutError:
            self.core.forget(t)
            conn.abort(ConnectionLost(f"no NOP-In within {self.cfg.nop_timeout}s: the target is unresponsive"))
        finally:
            conn.pinging = False

    def _event(self, ev: tuple) -> None:
        kind, cid = ev[0], ev[1]
        conn = self._conns.get(cid)
        if kind == "logout_request" and conn is not None:
            self._spawn(self._requested_logout(conn, ev[2]))
        elif kind == "drop" and conn is not None:
            conn.abort(ConnectionLost(f"the target announced it drops connection {cid}"))
        elif kind == "reject":
            log.warning("target rejected a PDU: %s", ev[2])

    async def _requested_logout(self, conn: Link, seconds: int) -> None:
        """Async logout request: let the connection drain, log it out, then recover (re-login, reissue)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds - 1.0)):
                while conn.state.outstanding:
                    await asyncio.sleep(0.01)
        c = conn.state
        reason = pdu.LogoutReason.CLOSE_CONNECTION if len(self._conns) > 1 else pdu.LogoutReason.CLOSE_SESSION
        t = self.core.request("logout", pdu.LogoutRequest(reason=reason, cid=c.cid))
        t.waiter = asyncio.get_running_loop().create_future()
        c.fire(Event.LOGOUT)
        conn.send(self.core.issue_request(t, c))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await t.waiter
        conn.abort(ConnectionLost("logged out at the target's request"))

    def _conn_lost(self, conn: Link) -> None:
        c = conn.state
        if c.state.name in ("LOGGED_IN", "IN_LOGOUT", "LOGOUT_REQUESTED"):
            c.fire(Event.FAIL)
        if self._conns.get(c.cid) is not conn:
            return  # a connection that never joined (failed login)
        if self._state != "up":
            return
        if isinstance(conn.error, TargetProtocolError):
            self._violations += 1
            if self._violations > MAX_VIOLATIONS:  # relogging in cannot fix a target that keeps breaking rules
                self._teardown("failed", SessionFailed(
                    f"giving up after {MAX_VIOLATIONS} protocol violations by the target: {conn.error}"))
                return
        log.warning("session %s: %s; recovering", self.cfg.target_name, conn.error)
        self._state = "recovering"
        self._recovery = self._spawn(self._recover(conn.error))

    async def _recover(self, cause: ISCSIError | None) -> None:
        """ERL0: drop every connection, re-login with the same ISID and TSIH 0, reissue unfinished commands."""
        core = self.core
        for conn in list(self._conns.values()):
            conn.abort(ConnectionLost("session recovery"))
            if conn.state.state.name == "CLEANUP_WAIT":
                conn.state.fire(Event.CLEANED)
            core.detach(conn.state.cid)
        self._conns.clear()
        queued = set(self._pending)
        again = [t for t in core.unfinished() if t not in queued]
        self._flush_waiters()
        deadline = time.monotonic() + self.cfg.replacement_timeout
        delay = 0.1
        while True:
            try:
                await asyncio.sleep(delay)
                await self._login_all(min(deadline, time.monotonic() + self.cfg.login_timeout))
                break
            except (ISCSIError, OSError) as e:
                for conn in list(self._conns.values()):
                    conn.abort(ConnectionLost("session recovery"))
                    core.detach(conn.state.cid)
                self._conns.clear()
                log.info("relogin failed: %s", e)
                if time.monotonic() + delay >= deadline:
                    self._state = "failed"
                    core.fail_all(SessionFailed(
                        f"could not log in again within the replacement timeout of "
                        f"{self.cfg.replacement_timeout:g}s (connection lost: {cause}; last error: {e})"),
                        [*again, *self._pending])
                    self._pending.clear()
                    self._flush_waiters()
                    return
                delay = min(delay * 2, 8.0, max(0.05, deadline - time.monotonic()))
        self.stats.reconnects += 1
        self._ramp = 1
        self._pending.extendleft(reversed([t for t in again if t.itt in core.tasks]))
        self._state = "up"
        self._pump()
