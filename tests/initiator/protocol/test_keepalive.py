"""Keep-alive decisions with a fake clock: ping a silent connection, drop one whose ping goes unanswered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.protocol.keepalive import KeepAlive, Ping, Unresponsive


def test_a_busy_connection_is_never_pinged_and_the_deadline_follows_its_traffic():
    ka = KeepAlive(interval=5, timeout=10)
    assert ka.handle_timer(now=4.0, last_rx={1: 0.0}) == []
    assert ka.next_deadline({1: 3.0}) == 8.0
    assert ka.handle_timer(now=8.0, last_rx={1: 7.5}) == []


def test_a_silent_connection_is_pinged_once_then_dropped_when_the_ping_is_not_answered():
    ka = KeepAlive(interval=5, timeout=10)
    assert ka.handle_timer(now=5.0, last_rx={1: 0.0, 2: 4.0}) == [Ping(1)]
    assert ka.next_deadline({1: 0.0, 2: 4.0}) == 9.0  # connection 2 is due first; 1 waits for its ping
    assert ka.handle_timer(now=9.0, last_rx={1: 0.0, 2: 4.0}) == [Ping(2)]
    assert ka.handle_timer(now=14.9, last_rx={1: 0.0, 2: 4.0}) == []
    assert ka.handle_timer(now=15.0, last_rx={1: 0.0, 2: 4.0}) == [Unresponsive(1, 10)]


def test_an_answered_ping_lets_the_connection_be_pinged_again_later():
    ka = KeepAlive(interval=5, timeout=10)
    assert ka.handle_timer(now=5.0, last_rx={1: 0.0}) == [Ping(1)]
    ka.answered(1)
    assert ka.next_deadline({1: 5.1}) == pytest.approx(10.1)
    assert ka.handle_timer(now=10.1, last_rx={1: 5.1}) == [Ping(1)]


def test_pings_of_connections_that_went_away_are_forgotten():
    ka = KeepAlive(interval=5, timeout=10)
    ka.handle_timer(now=5.0, last_rx={1: 0.0})
    assert ka.handle_timer(now=20.0, last_rx={}) == [] and ka.next_deadline({}) is None
    assert ka.handle_timer(now=21.0, last_rx={1: 20.0}) == []  # a new connection 1 starts afresh


def test_nonsense_settings_are_refused():
    with pytest.raises(ValueError):
        KeepAlive(interval=0, timeout=1)


@given(st.lists(st.tuples(st.floats(0, 30), st.sampled_from(["tick", "answer", "traffic"])), max_size=40))
def test_a_ping_is_never_outstanding_twice_and_a_verdict_comes_within_the_timeout(steps):
    ka = KeepAlive(interval=2, timeout=3)
    now, last_rx, outstanding = 0.0, {1: 0.0}, {}
    for dt, what in steps:
        now += dt
        if what == "answer" and 1 in outstanding:
            ka.answered(1)
            del outstanding[1]
        elif what == "traffic":
            last_rx[1] = now
        for action in ka.handle_timer(now, last_rx):
            if isinstance(action, Ping):
                assert action.cid not in outstanding
                outstanding[action.cid] = now
            else:
                assert now - outstanding.pop(action.cid) >= 3
        deadline = ka.next_deadline(last_rx)
        assert deadline is not None and (1 not in outstanding or deadline <= outstanding[1] + 3)
