"""The rendered busybox rc and rc.shutdown, run for real in the QEMU guest (one boot for this file).

The guest boots with `bootkit rc render --init busybox` output as its rc: the local fsck and mount (no-ops
here), the network, the real uiscsid under `bootkit shim run`, `uiscsictl reload` (an empty
config: no iSCSI target is needed to prove the order), fsck -N, mount -N, and a service (a sleep). Its
rc.shutdown then runs `bootkit shutdown-kill` for real: the service dies, the flagged daemon lives on
until its own stop step, the last one. The tests read the `rc:` markers and the files the guest wrote.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vm.harness import GUEST_RC_DIR, GuestResult, run_guest

pytestmark = pytest.mark.vm

VENV_BIN = Path(sys.executable).parent
BOOT_ORDER = ["local-fsck", "local-mount", "network", "uiscsid", "reload", "fsck-net", "mount-net",
              "services"]
SHUTDOWN_ORDER = ["services-stop", "shutdown-kill", "umount-net", "sync", "local-umount", "uiscsid-stop"]
MARKER = re.compile(r"^rc: (\d+\.\d{3}) step ([a-z-]+) (begin|end rc=(\d+))$")

# What the command writes, between rc and rc.shutdown, about the daemon rc started.
PROBE = """#!/bin/sh
pid=$(cat /run/uiscsid.pid)
echo "$pid" > /results/daemon.pid
tr '\\0' '\\n' < "/proc/$pid/cmdline" > /results/cmdline
cat "/proc/$pid/comm" > /results/comm
bootkit shim list --json > /results/flags.json
cat /run/sendsigs.omit.d/uiscsid > /results/sendsigs
cat /run/svc.pid > /results/svc.pid
"""

# The daemon as a console script would run it, for as long as pyproject has no `uiscsid` entry point.
DAEMON_SCRIPT = f"#!{sys.executable}\nimport sys\nfrom initiator.daemon.uiscsid import main\nsys.exit(main())\n"


@pytest.fixture(scope="module")
def guest(vm_boot_files, tmp_path_factory) -> GuestResult:
    tmp = tmp_path_factory.mktemp("rc-guest")
    rcdir = tmp / "out" / "etc"
    rcdir.mkdir(parents=True)
    (rcdir / "fstab").write_text("# no local and no network entries: the order is what is proven here\n")
    (rcdir / "uiscsi.conf").write_text("# no targets\n")
    uiscsid = shutil.which("uiscsid", path=str(VENV_BIN))
    if uiscsid is None:
        (rcdir / "uiscsid").write_text(DAEMON_SCRIPT)
        (rcdir / "uiscsid").chmod(0o755)
        uiscsid = f"{GUEST_RC_DIR}/uiscsid"
    sets = {
        "bootkit": str(VENV_BIN / "bootkit"), "uiscsictl": str(VENV_BIN / "uiscsictl"), "uiscsid": uiscsid,
        "log": "/results/rc.log", "daemon_log": "/results/uiscsid.log",
        "network": "ip link set lo up",
        # Each bootkit run costs seconds of Python start-up under TCG; the local steps have nothing to do
        # here (the static tests check their defaults), so they are no-ops in this boot.
        "local_fsck": ":", "local_mount": ":", "local_umount": ":",
        "services_start": "sleep 600 </dev/null >/dev/null 2>&1 & echo $! >/run/svc.pid",
        "shutdown_kill_args": "--term-wait 2 --sync-wait 0.5 --kill-step 0.5",
        "reload_wait": "2", "ctl_timeout": "60", "poweroff": "",
    }
    argv = [str(VENV_BIN / "bootkit"), "rc", "render", "--init", "busybox", "-o", str(tmp / "out"),
            "--fstab", f"{GUEST_RC_DIR}/fstab", "--config", f"{GUEST_RC_DIR}/uiscsi.conf"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    r = run_guest(script=PROBE, rc_dir=rcdir, results_dir=tmp / "results", boot_files=vm_boot_files,
                  timeout=240)
    print(r.console)
    return r


def markers(text: str) -> list[tuple[float, str, str, int | None]]:
    out = []
    for line in text.splitlines():
        m = MARKER.match(line.strip())
        if m:
            rc = None if m[4] is None else int(m[4])
            out.append((float(m[1]), m[2], "begin" if m[3] == "begin" else "end", rc))
    return out


def test_guest_boots_and_powers_off_through_the_rendered_rc(guest):
    assert guest.error is None, guest.error
    assert guest.exit_code == 0
    assert guest.event("rc-end").status == 0
    assert guest.event("shutdown-end").status == 0


def test_every_step_runs_once_in_openbsd_order_and_succeeds(guest):
    seen = markers((guest.results_dir / "rc.log").read_text())
    names = [name for _, name, what, _ in seen if what == "begin"]
    assert names == BOOT_ORDER + SHUTDOWN_ORDER
    for i in range(0, len(seen), 2):
        (_, name, begin, _), (_, name_end, end, rc) = seen[i], seen[i + 1]
        assert (name_end, begin, end) == (name, "begin", "end"), seen[i:i + 2]
        assert rc == 0, f"step {name} ended rc={rc}"
    times = [t for t, *_ in seen]
    assert times == sorted(times)


def test_console_shows_the_same_markers_as_the_log(guest):
    assert markers(guest.console) == markers((guest.results_dir / "rc.log").read_text())


def test_daemon_runs_flagged_with_an_at_argv0(guest):
    res = guest.results_dir
    pid = int((res / "daemon.pid").read_text())
    assert (res / "cmdline").read_text().splitlines()[0].startswith("@uiscsid")
    assert (res / "comm").read_text().strip() == "uiscsid"
    assert [(f["pid"], f["name"]) for f in json.loads((res / "flags.json").read_text())] == [(pid, "uiscsid")]
    assert (res / "sendsigs").read_text().split() == [str(pid)]


def test_shutdown_kill_takes_the_service_and_spares_the_daemon_which_logs_out_last(guest):
    res = guest.results_dir
    daemon, svc = (res / "daemon.pid").read_text().strip(), (res / "svc.pid").read_text().strip()
    kills = [line for line in guest.console.splitlines() if re.search(r"bootkit shutdown-kill: \S+ SIG", line)]
    assert any(re.search(rf"SIGTERM to \d+ process\(es\): .*\b{svc}\b", line) for line in kills), kills
    assert not any(re.search(rf"\b{daemon}\b", line.split(":", 2)[-1]) for line in kills), kills
    assert f"uiscsid: PID {daemon} logged out and exited" in guest.console
    assert "exiting" in (res / "uiscsid.log").read_text()
