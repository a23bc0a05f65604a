"""The session state table: every path the asyncio session takes, and nothing else."""

from __future__ import annotations

import pytest

from initiator.errors import LocalProtocolError
from initiator.protocol.session_state import (
    OPEN,
    TRANSITIONS,
    SessionEvent,
    SessionMachine,
    SessionState,
    StateChange,
)

E, S = SessionEvent, SessionState


def run(*events: SessionEvent) -> SessionMachine:
    m = SessionMachine()
    for e in events:
        m.fire(e)
    return m


def test_a_session_logs_in_recovers_and_closes():
    m = run(E.LOGGED_IN, E.CONNECTION_LOST, E.REINSTATED, E.LOGOUT, E.CLOSED)
    assert m.state is S.CLOSED
    assert [c.new for c in m.history] == [S.LOGGED_IN, S.RECOVERING, S.LOGGED_IN, S.LOGGING_OUT, S.CLOSED]


def test_giving_up_is_final_until_closed():
    assert run(E.LOGGED_IN, E.CONNECTION_LOST, E.GAVE_UP).state is S.FAILED
    assert run(E.LOGGED_IN, E.GAVE_UP).state is S.FAILED  # protocol violations: no reinstatement
    with pytest.raises(LocalProtocolError, match="REINSTATED is not valid in FAILED"):
        run(E.LOGGED_IN, E.GAVE_UP, E.REINSTATED)
    assert run(E.LOGGED_IN, E.GAVE_UP, E.CLOSED).state is S.CLOSED


def test_a_closed_session_stays_closed_and_a_failed_first_login_closes():
    m = run(E.CLOSED)
    assert m.state is S.CLOSED and run(E.LOGGED_IN, E.CLOSED, E.CLOSED).state is S.CLOSED
    for event in (E.LOGGED_IN, E.CONNECTION_LOST, E.REINSTATED, E.LOGOUT, E.GAVE_UP):
        assert (S.CLOSED, event) not in TRANSITIONS


def test_fire_reports_the_change_with_its_reason():
    change = SessionMachine().fire(E.LOGGED_IN, "tsih 7")
    assert change == StateChange(S.FREE, E.LOGGED_IN, S.LOGGED_IN, "tsih 7")


def test_commands_may_be_submitted_only_while_up_or_recovering():
    assert OPEN == {S.LOGGED_IN, S.RECOVERING}


def test_the_states_print_as_show_json_always_printed_them():
    assert [s.value for s in S] == ["down", "up", "recovering", "failed", "closing", "closed"]


def test_history_is_bounded():
    m = run(E.LOGGED_IN, *([E.CONNECTION_LOST, E.REINSTATED] * 20))
    assert len(m.history) == 16 and m.state is S.LOGGED_IN
