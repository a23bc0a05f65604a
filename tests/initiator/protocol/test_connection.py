"""The connection state machine: only the table's transitions are allowed."""

from __future__ import annotations

import pytest

from initiator.errors import LocalProtocolError
from initiator.protocol.connection import Connection, Event, State


def test_connection_state_machine_refuses_events_outside_its_table():
    c = Connection(0)
    with pytest.raises(LocalProtocolError):
        c.fire(Event.LOGIN_OK)
    c.fire(Event.CONNECT)
    c.fire(Event.CONNECTED)
    c.fire(Event.LOGIN_OK)
    c.fire(Event.FAIL)
    assert c.state is State.CLEANUP_WAIT
    c.fire(Event.CLEANED)
    assert c.state is State.FREE
