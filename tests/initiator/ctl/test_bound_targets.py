"""``uiscsictl QUERY --timeout T`` exits within T + 1 s of its start whatever the target does: a command that
never comes back, a command lost on the way, a connection gone half-open, a logout or SendTargets never
answered, a listener that never speaks. One line on stderr, exit status 1, every time.

The stalls come from `tests.stall_proxy.StallProxy` in front of a real tgtd; the clock runs from Popen to
the process's exit, so Python's start-up is inside the bound.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tests.stall_proxy import LOGOUT_REQ, Match, StallProxy

pytestmark = pytest.mark.target
TEXT_REQ, INQUIRY, READ_CAPACITY16, REPORT_LUNS = 0x04, 0x12, 0x9E, 0xA0


def _timed(*argv: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "initiator.ctl", *argv], capture_output=True, text=True,
                       timeout=60, check=False)
    return time.monotonic() - start, r


def _stalled(proxy: StallProxy, how: str) -> str:
    """Set ``proxy`` up for ``how``; the uiscsictl command word it is meant for."""
    if how == "hang":
        proxy.stall(Match(ops={INQUIRY}), mode="hang")
        return "inquiry"
    if how == "lose":
        proxy.stall(Match(ops={READ_CAPACITY16}), mode="lose")
        return "capacity"
    if how == "half-open":
        proxy.stall(Match(ops={REPORT_LUNS}), mode="freeze")
        return "luns"
    if how == "logout":
        proxy.drop_opcode(LOGOUT_REQ)
        return "inquiry"
    proxy.drop_opcode(TEXT_REQ)
    return "discover"


@pytest.mark.parametrize(("how", "bound"), [
    ("hang", 2), ("hang", 4), ("half-open", 2), ("half-open", 4), ("logout", 2), ("logout", 4),
    ("lose", 2), ("sendtargets", 2)])
def test_query_tools_exit_within_their_timeout_whatever_the_target_does(tgtd, how, bound):
    t = tgtd(size_mb=4)
    with StallProxy(*t.portal) as proxy:
        word = _stalled(proxy, how)
        where = f"127.0.0.1:{proxy.port}" if word == "discover" else f"iscsi://127.0.0.1:{proxy.port}/{t.iqn}/1"
        took, r = _timed(word, "--timeout", str(bound), where)
        stalled = proxy.events
    print(f"{word} --timeout {bound} ({how}): exit {r.returncode} after {took:.2f} s: {r.stderr.strip()}")
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert took < bound + 1, f"{word} --timeout {bound} took {took:.2f} s: {r.stderr}"
    assert stalled, "the proxy never stalled anything: the bound was not tested"
    assert "logout" in r.stderr if how == "logout" else "did not complete within" in r.stderr, r.stderr


def test_a_listener_that_never_speaks_is_bounded_too():
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        took, r = _timed("inquiry", "--timeout", "2", f"iscsi://127.0.0.1:{lst.getsockname()[1]}/iqn.2026-11.x:y/1")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "login" in r.stderr, r.stderr
    assert took < 3, f"took {took:.2f} s"
