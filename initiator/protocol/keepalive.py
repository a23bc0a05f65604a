"""NOP-Out keep-alive decisions (RFC 7143 11.18), sans-IO: time in, pings and verdicts out.

A connection silent for ``interval`` seconds gets a NOP-Out ping; a ping not answered within ``timeout``
seconds makes its connection `Unresponsive`, and the session recovers as from any lost connection. The
driver (io.recovery) owns the clock and the sockets: it calls `handle_timer(now, last_rx)` when
`next_deadline(last_rx)` comes, sends a ping for each `Ping`, reports answers with `answered`, and drops
each `Unresponsive` connection. ``last_rx`` maps each usable connection's CID to when it last received.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ping:
    """Send a NOP-Out on connection ``cid`` now."""

    cid: int


@dataclass(frozen=True, slots=True)
class Unresponsive:
    """Connection ``cid`` did not answer our ping within ``timeout`` seconds: drop it."""

    cid: int
    timeout: float


class KeepAlive:
    """Which connections to ping and which to give up on, for one session."""

    def __init__(self, interval: float, timeout: float) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("keep-alive interval and timeout must be positive")
        self.interval = interval
        self.timeout = timeout
        self._pings: dict[int, float] = {}  # CID -> when our unanswered ping went out

    def handle_timer(self, now: float, last_rx: Mapping[int, float]) -> list[Ping | Unresponsive]:
        """What is due at ``now``. Pings of connections no longer in ``last_rx`` are forgotten."""
        actions: list[Ping | Unresponsive] = []
        dead = set()
        for cid, sent in list(self._pings.items()):
            if cid not in last_rx or now - sent >= self.timeout:
                del self._pings[cid]
                if cid in last_rx:
                    dead.add(cid)
                    actions.append(Unresponsive(cid, self.timeout))
        for cid, rx in last_rx.items():
            if cid not in self._pings and cid not in dead and now - rx >= self.interval:
                self._pings[cid] = now
                actions.append(Ping(cid))
        return actions

    def answered(self, cid: int) -> None:
        """The NOP-In for our ping on ``cid`` arrived (or the ping failed with its connection)."""
        self._pings.pop(cid, None)

    def next_deadline(self, last_rx: Mapping[int, float]) -> float | None:
        """When `handle_timer` next has something to do; None while there is no connection to watch."""
        times = [sent + self.timeout for cid, sent in self._pings.items() if cid in last_rx]
        times += [rx + self.interval for cid, rx in last_rx.items() if cid not in self._pings]
        return min(times, default=None)
