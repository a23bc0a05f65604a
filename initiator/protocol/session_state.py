"""A session's state machine (ERL 0), sans-IO: everything that changes a session's state lives here.

`TRANSITIONS` is the table (state, event) -> next state; `SessionMachine.fire()` is the only writer of a
session's state. The asyncio session fires the events and hands each `StateChange` to its
subscribers; nobody else sets or guesses the state. The values are the words ``show --json`` prints.

    FREE --LOGGED_IN--> LOGGED_IN --CONNECTION_LOST--> RECOVERING --REINSTATED--> LOGGED_IN
                            |                               \\--GAVE_UP--> FAILED
                            \\--LOGOUT--> LOGGING_OUT --CLOSED--> CLOSED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import LocalProtocolError


class SessionState(enum.Enum):
    FREE = "down"                # not logged in yet
    LOGGED_IN = "up"             # the full-feature phase: commands flow
    RECOVERING = "recovering"    # a connection failed: reinstatement under way, commands wait (ERL 0)
    FAILED = "failed"            # gave up: no login within replacement_timeout, or repeated protocol violations
    LOGGING_OUT = "closing"      # our Logout is out
    CLOSED = "closed"            # every connection dropped by us; nothing more will happen


class SessionEvent(enum.Enum):
    LOGGED_IN = "the leading login succeeded"
    CONNECTION_LOST = "a connection failed: the session logs in again with the same ISID"
    REINSTATED = "a new leading login succeeded: unfinished commands are sent again"
    GAVE_UP = "no login within the replacement timeout, or the target keeps breaking the protocol"
    LOGOUT = "we sent a Logout for the session"
    CLOSED = "we dropped every connection"


S, E = SessionState, SessionEvent
# (state, event) -> next state. A pair missing here is a local misuse: fire() raises.
TRANSITIONS: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (S.FREE, E.LOGGED_IN): S.LOGGED_IN,
    (S.FREE, E.CLOSED): S.CLOSED,                    # the first login failed
    (S.LOGGED_IN, E.CONNECTION_LOST): S.RECOVERING,
    (S.LOGGED_IN, E.GAVE_UP): S.FAILED,              # protocol violations: logging in again cannot help
    (S.LOGGED_IN, E.LOGOUT): S.LOGGING_OUT,
    (S.LOGGED_IN, E.CLOSED): S.CLOSED,
    (S.RECOVERING, E.REINSTATED): S.LOGGED_IN,
    (S.RECOVERING, E.GAVE_UP): S.FAILED,
    (S.RECOVERING, E.CLOSED): S.CLOSED,
    (S.LOGGING_OUT, E.CLOSED): S.CLOSED,
    (S.FAILED, E.CLOSED): S.CLOSED,
    (S.CLOSED, E.CLOSED): S.CLOSED,
}


@dataclass(frozen=True, slots=True)
class StateChange:
    """The session went from ``old`` to ``new`` because of ``event``; ``reason`` says why, for people."""

    old: SessionState
    event: SessionEvent
    new: SessionState
    reason: str = ""


# States in which a command may be submitted: it runs now, or waits for the reinstatement.
OPEN = frozenset((S.LOGGED_IN, S.RECOVERING))


class SessionMachine:
    """The state of one session and the last transitions (for logs and tests)."""

    __slots__ = ("history", "state")

    def __init__(self) -> None:
        self.state = SessionState.FREE
        self.history: list[StateChange] = []

    def fire(self, event: SessionEvent, reason: str = "") -> StateChange:
        """Apply ``event``; raises LocalProtocolError when the table has no such transition."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise LocalProtocolError(f"session: event {event.name} is not valid in {self.state.name}")
        change = StateChange(self.state, event, new, reason)
        self.history.append(change)
        del self.history[:-16]
        self.state = new
        return change
