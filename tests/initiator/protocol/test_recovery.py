"""ERL0 recovery decisions with a fake clock: give up or reinstate, the login schedule, the ramp, the backoff."""

from __future__ import annotations

import pytest

from initiator.protocol.recovery import (
    MAX_VIOLATIONS,
    RAMP_LIMIT,
    RAMP_START,
    Backoff,
    RecoveryPolicy,
    Reinstatement,
    ramp,
)


def test_a_target_that_keeps_breaking_the_protocol_is_given_up_on_unless_commands_complete_between():
    p = RecoveryPolicy()
    assert all(p.connection_lost(violation=True) for _ in range(MAX_VIOLATIONS))
    assert not p.connection_lost(violation=True)
    p.completed()
    assert p.connection_lost(violation=True)


def test_plain_connection_losses_never_give_up():
    p = RecoveryPolicy()
    assert all(p.connection_lost(violation=False) for _ in range(100))


def test_the_login_schedule_backs_off_and_stops_at_the_replacement_timeout():
    r = Reinstatement(now=100.0, replacement_timeout=20.0, login_timeout=5.0)
    assert r.delay == 0.1 and r.login_deadline(100.0) == 105.0 and r.login_deadline(118.0) == 120.0
    now, delays = 100.0, []
    while True:
        now += r.delay + 1.0  # each attempt takes a second to fail
        delays.append(r.delay)
        if r.failed(now):
            break
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8] and max(delays) <= 8.0
    assert 115.0 <= now <= 130.0


def test_a_short_replacement_timeout_gives_one_attempt_a_chance():
    r = Reinstatement(now=0.0, replacement_timeout=1.0, login_timeout=5.0)
    assert r.login_deadline(0.1) == 1.0
    assert r.failed(1.2)


def test_the_ramp_doubles_to_its_limit_then_ends():
    steps, n = [], RAMP_START
    while n is not None:
        steps.append(n)
        n = ramp(n)
    assert steps[:4] == [1, 2, 4, 8] and steps[-1] == RAMP_LIMIT


@pytest.mark.parametrize("failures,delay", [(0, 1.0), (1, 2.0), (3, 8.0), (7, 128.0), (20, 128.0)])
def test_the_daemon_backoff_doubles_up_to_its_limit(failures, delay):
    b = Backoff(1.0, 128.0)
    for _ in range(failures):
        b.failed()
    assert b.delay == delay
    b.reset()
    assert b.delay == 1.0
