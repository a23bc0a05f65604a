"""vm/report/progress: the status line (cycle N/M, step, ETA) on a terminal, nothing elsewhere."""

from __future__ import annotations

import io

from vm.report.progress import ConsoleSteps, Progress, clock_text


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def last_line(out: str) -> str:
    return out.split("\r\x1b[K")[-1]


def test_cycle_step_and_eta_from_the_finished_cycles():
    out, clock = Tty(), Clock()
    p = Progress(3, stream=out, clock=clock)
    p.begin(1)
    assert last_line(out.getvalue()) == "cycle 1/3 · boot · 0:00 in this cycle · ETA after cycle 1"
    clock.now += 60
    p.end(1)
    p.begin(2)
    clock.now += 15
    p.step("fsck")
    assert last_line(out.getvalue()) == "cycle 2/3 · fsck · 0:15 in this cycle · ETA 1:45"  # 2 x 60 - 15


def test_an_estimate_gives_an_eta_before_the_first_cycle_ends():
    out, clock = Tty(), Clock()
    p = Progress(2, stream=out, clock=clock, estimate=50.0)
    p.begin(1)
    clock.now += 20
    p.step("mount")
    assert last_line(out.getvalue()).endswith("ETA 1:20")


def test_messages_print_above_the_status_line():
    out, clock = Tty(), Clock()
    p = Progress(2, stream=out, clock=clock)
    p.begin(1)
    p.say("bootkit vm: cycle 1: 50 s, clean")
    text = out.getvalue()
    assert "\r\x1b[Kbootkit vm: cycle 1: 50 s, clean\n" in text and text.endswith("ETA after cycle 1")
    p.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_quiet_when_not_a_terminal_or_under_json():
    for p in (Progress(3, stream=io.StringIO()), Progress(3, stream=Tty(), enabled=False)):
        p.begin(1)
        p.step("fsck")
        p.end(1)
        assert p.stream.getvalue() == ""
        p.say("a message")
        assert p.stream.getvalue() == "a message\n"


def test_redraws_are_rate_limited_between_step_changes():
    out, clock = Tty(), Clock()
    p = Progress(1, stream=out, clock=clock)
    p.begin(1)
    n = out.getvalue().count("\r")
    for _ in range(10):
        clock.now += 0.01
        p.step("boot")
    assert out.getvalue().count("\r") == n
    clock.now += 1.0
    p.step("boot")
    assert out.getvalue().count("\r") == n + 1


def test_console_lines_set_the_step_and_can_be_echoed():
    out, echo, clock = Tty(), io.StringIO(), Clock()
    p = Progress(1, stream=out, clock=clock)
    p.begin(1)
    steps = ConsoleSteps(p, lambda line: "fsck" if "systemd-fsck" in line else None, echo=echo)
    steps.write("[  33.9] systemd[1]: Starting systemd-fsck@dev-nbd0.service...\n[  34.0] other")
    assert p.step_name == "fsck" and echo.getvalue().endswith("other")


def test_clock_text():
    assert [clock_text(s) for s in (0, 59.6, 61, 3601)] == ["0:00", "1:00", "1:01", "1:00:01"]
