"""uiscsid.service's sandbox: systemd's own scoring of the rendered unit, and the paths it is made of.

`systemd-analyze security --offline=true` reads the unit file as systemd would and scores its exposure
(0 safe .. 10 unsafe). The daemon's unit must score at most 3.5 however it is rendered: from this venv
(programs under /root's pyenv: ProtectHome=read-only) and as the Debian package renders it (/usr/bin).
open-iscsi's iscsid.service scores 9.5 the same way; that figure is printed when the unit is installed.
That the sandbox lets the daemon do its work is proven in a guest (test_systemd_guest.py, the systemd
proofs), not here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rc import render as r
from rc.sandbox import RUN, SYS_BLOCK_DEVICES, sandbox

VENV_BIN = Path(sys.executable).parent
LIMIT = 3.5
DEB = ("--set", "bootkit=/usr/bin/bootkit", "--set", "uiscsid=/usr/bin/uiscsid", "--set", "uiscsictl=/usr/bin/uiscsictl")
OPEN_ISCSI = Path("/lib/systemd/system/iscsid.service")
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def render_unit(tmp_path: Path, *extra: str) -> Path:
    res = subprocess.run([str(VENV_BIN / "bootkit"), "rc", "render", "--init", "systemd", "--fstab", "/dev/null",
                          "-o", str(tmp_path), *extra], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return tmp_path / r.SYSTEMD_DIR / "uiscsid.service"


def exposure(unit: Path) -> tuple[float, str]:
    """systemd-analyze's overall exposure level of a unit file, and its whole table."""
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) ", res.stdout)
    assert m, (res.returncode, res.stdout, res.stderr)
    return float(m.group(1)), res.stdout


@needs_analyze
@pytest.mark.parametrize("how", ["venv", "deb"])
def test_the_daemons_unit_scores_at_most_3_5(tmp_path, how):
    unit = render_unit(tmp_path, *(DEB if how == "deb" else ()))
    score, table = exposure(unit)
    print(f"uiscsid.service ({how}): {score}")
    if OPEN_ISCSI.exists():
        print(f"open-iscsi {OPEN_ISCSI}: {exposure(OPEN_ISCSI)[0]}")
    assert score <= LIMIT, table
    text = unit.read_text()
    assert "CapabilityBoundingSet=CAP_SYS_ADMIN\n" in text and "NoNewPrivileges=yes\n" in text
    assert f"ReadWritePaths={RUN} {SYS_BLOCK_DEVICES}\n" in text
    assert ("ProtectHome=yes\n" if how == "deb" else "ProtectHome=") in text


@needs_analyze
def test_sandbox_false_renders_the_unit_without_it_and_systemd_scores_that_unsafe(tmp_path):
    unit = render_unit(tmp_path, "--set", "sandbox=false")
    assert "ProtectSystem" not in unit.read_text()
    assert exposure(unit)[0] > 9


def test_the_writable_paths_follow_the_socket_and_the_protections_give_way_where_they_must():
    usr = ("/usr/bin/bootkit", "/usr/bin/uiscsid")
    plain = sandbox("/run/uiscsid.sock", usr)
    assert (plain.writable, plain.protect_home, plain.private_tmp) == ((RUN, SYS_BLOCK_DEVICES), "yes", True)
    assert sandbox("/run/uiscsid/ctl.sock", usr).writable == (RUN, SYS_BLOCK_DEVICES)
    assert sandbox("/srv/u.sock", usr).writable == (RUN, "/srv", SYS_BLOCK_DEVICES)
    in_tmp = sandbox("/tmp/u.sock", usr)                     # a private /tmp would hide it from uiscsictl
    assert not in_tmp.private_tmp and in_tmp.writable == (RUN, "/tmp", SYS_BLOCK_DEVICES)
    assert sandbox("/run/user/0/u.sock", usr).protect_home == "read-only"
    assert sandbox("/run/u.sock", ("/home/me/venv/bin/bootkit", "/usr/bin/uiscsid")).protect_home == "read-only"


def test_a_program_whose_interpreter_lives_under_a_home_gets_a_readable_home(tmp_path):
    script = tmp_path / "uiscsid"
    script.write_text("#!/root/.pyenv/versions/3.11.7/bin/python3 -s\nprint()\n")
    assert sandbox("/run/u.sock", (str(script),)).protect_home == "read-only"
    script.write_text("#!/usr/bin/python3\nprint()\n")
    assert sandbox("/run/u.sock", (str(script),)).protect_home == "yes"
