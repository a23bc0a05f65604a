"""`protocol.escalation`: the command-timeout ladder with a fake clock (no target)."""

from __future__ import annotations

from initiator.protocol.escalation import (
    Abort,
    Counts,
    Escalation,
    Fail,
    Reinstate,
    ResetLun,
    Retry,
    Rung,
    Timeouts,
    tmf_answer,
)

T = Timeouts(command=30, abort=15, lu_reset=30, replacement=120)
COMPLETE, NO_TASK = 0, 1


class Run:
    """One session's commands: ``send(key, lun)`` puts one on the wire at the current time."""

    def __init__(self, timeouts: Timeouts = T) -> None:
        self.e = Escalation(timeouts)
        self.now = 0.0
        self.wire: dict[str, tuple[int, float]] = {}
        self.done: set[str] = set()

    def send(self, key: str, lun: int = 1) -> None:
        self.wire[key] = (lun, self.now)

    def finish(self, key: str) -> None:
        self.wire.pop(key, None)
        self.done.add(key)

    def tick(self, to: float) -> list:
        self.now = to
        return self.e.handle_timer(to, self.wire, lambda k: k not in self.done)

    def due(self) -> float | None:
        return self.e.next_deadline(self.wire)


def test_nothing_happens_before_the_command_timeout_then_an_abort():
    r = Run()
    r.send("w")
    assert r.due() == 30 and r.tick(29.9) == []
    (a,) = r.tick(30)
    assert a == Abort("w", 30) and r.e.rung("w") is Rung.ABORTING
    assert r.due() == 45                                    # the abort's answer is due
    assert r.e.counts.command_timeouts == 1 and r.e.counts.aborts == 1


def test_a_completed_abort_sends_the_command_again_and_the_answer_ends_the_climb():
    r = Run()
    r.send("w")
    r.tick(30)
    assert r.e.abort_answered("w", COMPLETE, 30.5) == [Retry(("w",), "abort")]
    r.now = 30.5
    r.send("w")                                             # resent at 30.5 under a new ITT
    assert r.due() == 60.5 and r.tick(60) == []
    r.finish("w")
    assert r.tick(61) == [] and r.e.rung("w") is None
    assert (r.e.counts.aborts_complete, r.e.counts.retries) == (1, 1)


def test_task_does_not_exist_or_no_answer_escalates_to_a_lu_reset():
    r = Run()
    r.send("a", lun=1)
    r.send("b", lun=2)
    r.tick(30)
    (act,) = r.e.abort_answered("a", NO_TASK, 31)
    assert act == ResetLun(1, "a", 'the ABORT TASK was answered "Task does not exist"')
    (act,) = r.tick(45)                                    # b's abort never answered
    assert isinstance(act, ResetLun) and act.lun == 2 and "no answer to the ABORT TASK" in act.why
    assert r.e.counts.lu_resets == 2


def test_one_lu_reset_serves_every_command_of_its_lun_and_resends_all_of_them():
    r = Run()
    for key in ("a", "b"):
        r.send(key)
    r.now = 10
    r.send("c")                                             # fine, just younger
    r.send("other", lun=2)
    acts = r.tick(30)
    assert acts == [Abort("a", 30), Abort("b", 30)]
    assert len(r.e.abort_answered("a", NO_TASK, 31)) == 1
    assert r.e.abort_answered("b", NO_TASK, 31) == []      # the reset of LUN 1 is out already
    assert r.e.reset_answered(1, COMPLETE, 32, r.wire) == [Retry(("a", "b", "c"), "lu-reset")]
    assert r.e.rung("a") is r.e.rung("b") is Rung.RESET and r.e.rung("c") is None
    assert r.e.counts.lu_resets == 1 and r.e.counts.retries == 3


def test_a_timeout_after_the_lu_reset_reinstates_and_the_command_fails_alone_after_replacement():
    r = Run()
    r.send("w")
    r.tick(30)
    r.e.abort_answered("w", COMPLETE, 30)
    r.send("w")
    (act,) = r.tick(60)
    assert isinstance(act, ResetLun)
    r.e.reset_answered(1, COMPLETE, 60, r.wire)
    r.send("w")
    (act,) = r.tick(90)
    assert act == Reinstate("w", "unanswered 30 s after the LU reset")
    r.e.reinstating(90)
    r.wire.clear()                                          # recovery takes everything off the wire...
    r.now = 91
    r.e.reinstated()
    r.send("w")                                             # ...and sends it again: no new command timer
    r.send("x")
    assert r.due() == 121                                   # x's timer; w's EIO is at 210
    r.finish("x")
    assert r.due() == 210
    assert r.tick(209.9) == []
    assert r.tick(210) == [Fail("w", 120)]
    assert r.e.rung("w") is None and r.e.counts.failed == 1 and r.e.counts.reinstatements == 1


def test_the_bound_is_the_slowest_path_through_the_ladder():
    r = Run()
    r.send("w")
    r.tick(30)
    r.e.abort_answered("w", COMPLETE, 45)                   # answered at the last moment
    r.send("w")
    (reset,) = r.tick(75)
    assert isinstance(reset, ResetLun)
    r.e.reset_answered(1, COMPLETE, 105, r.wire)
    r.send("w")
    (act,) = r.tick(135)
    assert isinstance(act, Reinstate)
    assert r.tick(255 - 0.01) == [] and r.tick(255) == [Fail("w", 120)]
    assert T.bound == 255


def test_unanswered_lu_reset_reinstates():
    r = Run()
    r.send("w")
    r.tick(30)
    r.tick(45)                                              # no abort answer: LU reset out at 45
    assert r.due() == 75
    (act,) = r.tick(75)
    assert act == Reinstate("w", "no answer to the LU reset within 30 s")
    assert r.e.reset_answered(1, COMPLETE, 76, r.wire) == []   # too late: ignored


def test_a_failed_lu_reset_reinstates_once_for_all_its_commands():
    r = Run()
    r.send("a")
    r.send("b")
    r.tick(30)
    r.e.abort_answered("a", NO_TASK, 31)
    r.e.abort_answered("b", None, 31)
    acts = r.e.reset_answered(1, 5, 32, r.wire)
    assert acts == [Reinstate("a", 'the LU reset was answered "Task management function not supported"')]
    assert r.e.rung("a") is r.e.rung("b") is Rung.REINSTATING and r.e.counts.reinstatements == 1


def test_a_command_that_completes_while_aborting_is_forgotten_and_late_answers_are_ignored():
    r = Run()
    r.send("w")
    r.tick(30)
    r.finish("w")
    assert r.tick(31) == [] and r.e.rung("w") is None
    assert r.e.abort_answered("w", COMPLETE, 32) == []


def test_a_reinstatement_for_another_cause_moves_pending_tmfs_up_and_joins_later_climbs():
    r = Run()
    r.send("a")
    r.tick(30)
    r.e.reinstating(31)                                     # a connection reset, say
    assert r.e.rung("a") is Rung.ABORTED
    assert r.e.abort_answered("a", NO_TASK, 31.5) == []     # the abort died with its connection
    r.send("a")
    r.now = 40
    r.send("b")
    (act,) = r.tick(61)
    assert isinstance(act, ResetLun)                        # a's next rung; the reinstatement is still on
    assert r.e.reset_answered(1, NO_TASK, 62, r.wire) == []   # joins the reinstatement under way
    r.finish("b")
    assert r.e.rung("a") is Rung.REINSTATING and r.tick(151) == [Fail("a", 120)]


def test_timeouts_and_counts():
    assert not Timeouts(command=0).enabled and Timeouts().enabled
    c = Counts(aborts=1, failed=2)
    c.add(Counts(aborts=2, retries=1))
    assert (c.aborts, c.failed, c.retries) == (3, 2, 1)
    assert tmf_answer(255) == '"Function rejected"' and tmf_answer(77) == '"code 77"'
