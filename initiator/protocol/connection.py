"""One iSCSI connection's state machine, sans-IO (RFC 7143 8.1.3, initiator side) and its per-connection state.

Everything that changes a connection's state lives in `TRANSITIONS`; `Connection.fire()` is the only
writer of `Connection.state`. Receiving bytes is `framer.Framer`'s job.
"""

from __future__ import annotations

import enum

from ..errors import LocalProtocolError


class State(enum.Enum):
    """Initiator connection states; S3 (XPT_UP) is target-only and absent here."""

    FREE = "S1"
    XPT_WAIT = "S2"
    IN_LOGIN = "S4"
    LOGGED_IN = "S5"
    IN_LOGOUT = "S6"
    LOGOUT_REQUESTED = "S7"
    CLEANUP_WAIT = "S8"


class Event(enum.Enum):
    CONNECT = "transport connect requested"
    CONNECTED = "transport connection established, login started"
    LOGIN_OK = "final login response, status class 0"
    FAIL = "transport reset/timeout, login refused, or protocol violation"
    LOGOUT_REQUESTED = "target asked for a logout (Async Message event 1)"
    LOGOUT = "logout request sent"
    LOGOUT_OK = "logout response received"
    DROPPED = "target dropped the connection or session (Async Message event 2/3)"
    CLEANED = "outstanding tasks handed to session recovery"


S, E = State, Event
# (state, event) -> next state.  A pair missing here is a local misuse: fire() raises.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.FREE, E.CONNECT): S.XPT_WAIT,                       # T1
    (S.XPT_WAIT, E.CONNECTED): S.IN_LOGIN,                 # T4
    (S.XPT_WAIT, E.FAIL): S.FREE,                          # T2
    (S.IN_LOGIN, E.LOGIN_OK): S.LOGGED_IN,                 # T5
    (S.IN_LOGIN, E.FAIL): S.FREE,                          # T7
    (S.LOGGED_IN, E.LOGOUT): S.IN_LOGOUT,
    (S.LOGGED_IN, E.LOGOUT_REQUESTED): S.LOGOUT_REQUESTED,
    (S.LOGOUT_REQUESTED, E.LOGOUT): S.IN_LOGOUT,
    (S.IN_LOGOUT, E.LOGOUT_OK): S.FREE,
    (S.LOGGED_IN, E.FAIL): S.CLEANUP_WAIT,
    (S.LOGGED_IN, E.DROPPED): S.CLEANUP_WAIT,
    (S.LOGOUT_REQUESTED, E.FAIL): S.CLEANUP_WAIT,
    (S.LOGOUT_REQUESTED, E.DROPPED): S.CLEANUP_WAIT,
    (S.IN_LOGOUT, E.FAIL): S.CLEANUP_WAIT,
    (S.IN_LOGOUT, E.DROPPED): S.CLEANUP_WAIT,
    (S.CLEANUP_WAIT, E.CLEANED): S.FREE,
    (S.CLEANUP_WAIT, E.FAIL): S.CLEANUP_WAIT,              # a late reset while cleaning up changes nothing
    (S.FREE, E.FAIL): S.FREE,
}


class Connection:
    """Per-connection protocol state: FSM, ExpStatSN, negotiated limits, digests, load."""

    __slots__ = ("cid", "commands", "data_digest", "expstatsn", "header_digest", "history", "max_recv_dsl",
                 "max_xmit_dsl", "outstanding", "state")

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self.state = State.FREE
        self.expstatsn = 0
        self.header_digest = False
        self.data_digest = False
        self.max_xmit_dsl = 8192
        self.max_recv_dsl = 8192
        self.outstanding = 0  # SCSI tasks allegiant to this connection (MC/S scheduling)
        self.commands = 0  # SCSI commands issued here, for stats
        self.history: list[tuple[State, Event, State]] = []

    def fire(self, event: Event) -> State:
        """Apply ``event``; raises LocalProtocolError when the table has no such transition."""
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"connection {self.cid}: event {event.name} is not valid in {self.state.name}")
        self.history.append((self.state, event, nxt))
        del self.history[:-16]
        self.state = nxt
        return nxt

    @property
    def usable(self) -> bool:
        """New commands may be scheduled here."""
        return self.state is State.LOGGED_IN

    def logged_in(self, negotiated, expstatsn: int) -> None:
        """Adopt the login's results (a login.Negotiated) and enter the full-feature phase."""
        self.header_digest = negotiated.header_digest
        self.data_digest = negotiated.data_digest
        self.max_xmit_dsl = negotiated.max_xmit_dsl
        self.max_recv_dsl = negotiated.max_recv_dsl
        self.expstatsn = expstatsn
        self.fire(Event.LOGIN_OK)
