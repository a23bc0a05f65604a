"""uiscsid's capability drop at start-up (initiator/daemon/privileges.py), for the inits without a sandbox.

The daemon runs as a real root process on the host (`--attach ioctl` needs no kernel nbd until a target is
added); the kernel's /proc/PID/status says which capabilities it kept. Then the same with libcap-ng's
binding hidden: the daemon says so once and runs with what it had.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from initiator.daemon import privileges
from initiator.daemon.uiscsid import build_parser

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="capabilities to drop: needs root")
STATUS = """Name:\tuiscsid
CapInh:\t0000000000000000
CapPrm:\t000001ffffffffff
CapEff:\t000001ffffffffff
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t0
"""


def test_status_parsing_and_what_is_beyond_the_kept_set():
    sets = privileges.parse_status(STATUS)
    assert sets == {"CapInh": 0, "CapPrm": 0x1FFFFFFFFFF, "CapEff": 0x1FFFFFFFFFF, "CapBnd": 0x1FFFFFFFFFF,
                    "CapAmb": 0}
    keep = privileges.mask(privileges.kept("auto"))
    assert keep == 1 << 21
    assert privileges.excess(sets, keep) == {k: 0x1FFFFFFFFFF & ~keep for k in ("CapPrm", "CapEff", "CapBnd")}
    assert privileges.excess({"CapEff": keep, "CapBnd": keep}, keep) == {}
    assert privileges.kept("none") == () and privileges.kept("netlink") == privileges.kept("ioctl") == ("CAP_SYS_ADMIN",)


def test_help_says_which_capabilities_are_kept_and_why():
    text = build_parser().format_help()
    for name, why in privileges.NEEDED.items():
        assert f"{name:<15} {why}" in text
    assert "bounding set" in text and "python3-cap-ng" in text


def run_daemon(tmp_path: Path, attach: str, env_extra: dict[str, str] | None = None) -> tuple[dict[str, int], str]:
    """Start uiscsid, wait for READY=1, read its capability sets, stop it; returns (sets, its log)."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), **(env_extra or {})}
    with open(tmp_path / "uiscsid.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "initiator.daemon", "-d", "-s", str(tmp_path / "u.sock"),
                                 "--attach", attach, "--no-flag"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            assert "READY=1" in notify.recv(4096).decode()
            sets = privileges.current(proc.pid)
        finally:
            proc.terminate()
            proc.wait(15)
            notify.close()
    return sets, (tmp_path / "uiscsid.log").read_text()


@root_only
@pytest.mark.parametrize("attach", ["ioctl", "none"])
def test_a_root_daemon_keeps_only_what_its_attach_mode_needs(tmp_path, attach):
    sets, log = run_daemon(tmp_path, attach)
    keep = privileges.mask(privileges.kept(attach))
    assert sets == {"CapInh": 0, "CapPrm": keep, "CapEff": keep, "CapBnd": keep, "CapAmb": 0}, log
    assert "capabilities: kept " in log and "dropped the rest" in log


@root_only
def test_without_libcap_ng_the_daemon_says_so_once_and_runs_with_what_it_had(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "capng.py").write_text("raise ImportError('hidden by the test')\n")
    before = privileges.current()
    sets, log = run_daemon(tmp_path, "ioctl", {"PYTHONPATH": str(hide)})
    assert sets["CapBnd"] == before["CapBnd"] and sets["CapEff"] == before["CapEff"], log
    assert log.count("python3-cap-ng") == 1 and "capabilities: all kept" in log, log
    assert "ready on" in log
