"""The broadcast kills for real, inside `unshare --pid --fork --mount-proc` (never on the host).

A scenario runs as PID 1 of a fresh PID namespace with the venv's python. It starts processes through
`bootkit shim run` and plainly, runs `bootkit killall5` or `bootkit shutdown-kill`, and reports on
stdout, as JSON, who is still alive, how the others died, what /proc said about the flagged ones, and
which of the survivors each run woke: they all sleep in one syscall, so a rise in their context switches
is the trace a killall5-style kill(-1, SIGSTOP) ... kill(-1, SIGCONT) leaves on every process, spared
or not (a stop signal wakes its target even when the SIGCONT flushes it before the target stops, and
that wake-up is what shuts an NBD_DO_IT ioctl's device down). When the
scenario (PID 1) exits, the kernel kills whatever is left in the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
BOOTKIT = str(VENV_BIN / "bootkit")

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is missing")

SCENARIO = r'''
import json, os, subprocess, sys, time

spec = json.loads(sys.argv[1])
assert os.getpid() == 1, "the scenario must be PID 1 of its own namespace"
bootkit, rundir = spec["bootkit"], os.environ["BOOTKIT_RUNDIR"]
procs, report = {}, {"argv0": {}, "comm": {}, "pid": {}}

def start(name, argv):
    procs[name] = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE, text=True)
    report["pid"][name] = procs[name].pid

def wait_for(pred, what, seconds=30):
    end = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > end:
            raise SystemExit(f"scenario: timed out waiting for {what}")
        time.sleep(0.02)

def argv0(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0].decode()

for name, argv in spec["start"].items():
    start(name, argv)
for name in spec["flagged"]:
    wait_for(lambda: argv0(procs[name].pid).startswith("@"), f"{name} to exec with '@'")
for name in spec.get("ready", []):
    assert procs[name].stdout.readline().strip() == "ready"
for name, p in procs.items():
    report["argv0"][name] = argv0(p.pid)
    report["comm"][name] = open(f"/proc/{p.pid}/comm").read().strip()
for name in spec.get("sendsigs_list", []):
    os.makedirs(f"{rundir}/sendsigs.omit.d", exist_ok=True)
    with open(f"{rundir}/sendsigs.omit.d/listed-by-hand", "a") as f:
        f.write(f"{procs[name].pid}\n")
for name in spec.get("reuse", []):
    path = f"{rundir}/bootkit/nobroadcastkill/{procs[name].pid}"
    entry = json.load(open(path))
    entry["start"] += 7  # the flag now names an older process that had this PID
    json.dump(entry, open(path, "w"))

def sendsigs():
    sd = f"{rundir}/sendsigs.omit.d"
    return {n: open(f"{sd}/{n}").read().split() for n in sorted(os.listdir(sd))} if os.path.isdir(sd) else {}

report["sendsigs"] = sendsigs()

def switches(pid):
    """Context switches so far. Our children sleep in one syscall: only a signal makes them run."""
    try:
        lines = open(f"/proc/{pid}/status").read().splitlines()
    except OSError:
        return None
    return sum(int(ln.split()[1]) for ln in lines if "ctxt_switches:" in ln)

def stopped(pid):
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in "Tt"

def run(argv):
    fmt = {n: p.pid for n, p in procs.items()}
    fmt["sendsigs"] = ",".join(w for ws in sendsigs().values() for w in ws)
    argv = [a.format(**fmt) for a in argv]
    before = {n: switches(p.pid) for n, p in procs.items() if p.poll() is None}
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    seconds = time.monotonic() - t0
    time.sleep(0.2)  # let the SIGCONT land before we look
    alive = [n for n, p in procs.items() if p.poll() is None]
    return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr, "seconds": seconds,
            "woken": {n: switches(procs[n].pid) != before.get(n) for n in alive},
            "left_stopped": [n for n in alive if stopped(procs[n].pid)]}

report["runs"] = [run(argv) for argv in spec["run"]]
end = time.monotonic() + 5
while time.monotonic() < end and any(procs[n].poll() is None for n in spec["expect_dead"]):
    time.sleep(0.02)
report["returncode"] = {name: p.poll() for name, p in procs.items()}
report["after"] = [run(argv) for argv in spec.get("after", [])]
report["sendsigs_after"] = sendsigs()
print(json.dumps(report))
'''

DAEMON = """#!{python}
# Stands for uiscsid: a console script of the project's venv. psutil is installed only in that venv.
import sys, time, psutil
open({prefix_file!r}, "w").write(sys.prefix)
time.sleep(300)
"""

IGNORES_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(300)")


def run_scenario(tmp_path: Path, spec: dict) -> dict:
    rundir = tmp_path / "run"
    env = {**os.environ, "BOOTKIT_RUNDIR": str(rundir), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    spec = {"bootkit": BOOTKIT, "flagged": [], "expect_dead": [], **spec}
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", SCENARIO,
                        json.dumps(spec)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def killall_run(tmp_path_factory) -> dict:
    """One namespace: flagged, unflagged, -o, sendsigs-listed and reused-PID processes; killall5 -s KILL."""
    tmp = tmp_path_factory.mktemp("killall")
    daemon = tmp / "uiscsid"
    daemon.write_text(DAEMON.format(python=sys.executable, prefix_file=str(tmp / "prefix")))
    daemon.chmod(0o755)
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    svc = tmp / "svc"
    svc.write_text(f"#!/bin/sh\nread -r line < {fifo}\n")  # blocks in the shell itself: no child
    svc.chmod(0o755)
    shim = [BOOTKIT, "shim", "run"]
    report = run_scenario(tmp, {
        "start": {
            "keeper": [*shim, "--name", "keeper", "--", "sleep", "300"],
            "daemon": [*shim, "--name", "uiscsid", "--", str(daemon), "-d"],
            "svc": [*shim, "--name", "svc", "--", str(svc)],
            "reused": [*shim, "--name", "reused", "--", "sleep", "300"],
            "plain": ["sleep", "300"],
            "omitted": ["sleep", "300"],
            "listed": ["sleep", "300"],
        },
        "flagged": ["keeper", "daemon", "svc", "reused"],
        "sendsigs_list": ["listed"],
        "reuse": ["reused"],
        "run": [[BOOTKIT, "killall5", "--dry-run", "--json", "-o", "{omitted}"],
                [BOOTKIT, "killall5", "-s", "KILL", "-o", "{omitted}"]],
        "expect_dead": ["plain", "reused"],
        "after": [[BOOTKIT, "killall5", "-s", "KILL", "-o", "{omitted}"],
                  [BOOTKIT, "shim", "list", "--json"]],
    })
    report["prefix"] = (tmp / "prefix").read_text()
    return report


def test_flagged_processes_survive_killall5_kill(killall_run):
    rc = killall_run["returncode"]
    assert rc["keeper"] is None and rc["daemon"] is None and rc["svc"] is None
    assert killall_run["runs"][1]["rc"] == 0  # it signalled something


def test_unflagged_process_dies_by_sigkill(killall_run):
    assert killall_run["returncode"]["plain"] == -signal.SIGKILL


def test_reused_pid_is_killed_despite_its_stale_flag(killall_run):
    assert killall_run["returncode"]["reused"] == -signal.SIGKILL


def test_dash_o_and_sendsigs_listed_pids_are_spared(killall_run):
    rc = killall_run["returncode"]
    assert rc["omitted"] is None and rc["listed"] is None
    assert killall_run["sendsigs"]["listed-by-hand"] == [str(killall_run["pid"]["listed"])]


def test_killall5_stops_and_continues_the_spared_processes_too(killall_run):
    """As the real killall5: kill(-1, SIGSTOP) reaches everyone, then kill(-1, SIGCONT); nothing stays stopped."""
    kill = killall_run["runs"][1]
    assert kill["woken"] == {n: True for n in ("keeper", "daemon", "svc", "omitted", "listed")}
    assert kill["left_stopped"] == []


def test_a_dry_run_stops_nothing(killall_run):
    dry = killall_run["runs"][0]
    quiet = {n: w for n, w in dry["woken"].items() if n != "daemon"}  # a Python one may still be starting
    assert set(quiet.values()) == {False}, dry["woken"]
    assert dry["left_stopped"] == []


def test_dry_run_names_exactly_the_victims(killall_run):
    dry = json.loads(killall_run["runs"][0]["stdout"])
    pid = killall_run["pid"]
    assert dry["dry_run"] is True
    assert sorted(dry["pids"]) == sorted([pid["plain"], pid["reused"]])


def test_killall5_exits_2_when_nothing_is_left(killall_run):
    assert killall_run["after"][0]["rc"] == 2


def test_shim_run_leaves_an_at_argv0_in_proc_cmdline(killall_run):
    a = killall_run["argv0"]
    assert a["keeper"] == "@keeper"
    assert a["daemon"] == "@uiscsid -d"  # a Python console script: rewritten in place by the launcher
    assert a["svc"] == "@svc"  # a shell script: its interpreter exec'd with argv[0] '@svc'
    assert a["plain"] == "sleep"


def test_python_daemon_under_the_shim_keeps_its_venv_and_its_comm(killall_run):
    assert killall_run["prefix"] == sys.prefix
    assert killall_run["comm"]["daemon"] == "uiscsid"
    assert killall_run["comm"]["keeper"] == "sleep"


def test_sendsigs_entries_hold_the_flagged_pids(killall_run):
    pid, sd = killall_run["pid"], killall_run["sendsigs"]
    assert sd["keeper"] == [str(pid["keeper"])]
    assert sd["uiscsid"] == [str(pid["daemon"])]
    assert sd["svc"] == [str(pid["svc"])]
    assert sd["reused"] == [str(pid["reused"])]  # the stale flag still lists it, until killall5 prunes it
    after = killall_run["sendsigs_after"]
    assert "reused" not in after
    assert after["keeper"] == [str(pid["keeper"])]


def test_shim_list_after_the_kill_shows_only_the_live_flags(killall_run):
    listed = json.loads(killall_run["after"][1]["stdout"])
    assert sorted(e["name"] for e in listed) == ["keeper", "svc", "uiscsid"]


def test_shutdown_kill_terms_then_kills_the_stubborn_and_spares_the_flagged(tmp_path):
    fast = [BOOTKIT, "shutdown-kill", "--term-wait", "0.5", "--sync-wait", "0.2", "--kill-step", "0.1"]
    report = run_scenario(tmp_path, {
        "start": {
            "keeper": [BOOTKIT, "shim", "run", "--name", "keeper", "--", "sleep", "300"],
            "polite": ["sleep", "300"],
            "stubborn": [sys.executable, "-c", IGNORES_TERM],
        },
        "flagged": ["keeper"],
        "ready": ["stubborn"],
        "run": [fast],
        "expect_dead": ["polite", "stubborn"],
        "after": [fast],
    })
    rc, run = report["returncode"], report["runs"][0]
    assert rc["keeper"] is None
    assert rc["polite"] == -signal.SIGTERM
    assert rc["stubborn"] == -signal.SIGKILL
    assert run["rc"] == 0, run["stderr"]
    steps = [line.split(" ", 3)[3] for line in run["stderr"].splitlines()]
    stubborn = str(report["pid"]["stubborn"])
    assert steps[0].startswith("SIGTERM to 2 process(es)")
    assert steps[1] == "sync"
    assert steps[2] == f"SIGKILL #1 to 1 process(es): {stubborn}"
    assert steps[3] == "no process left to kill"
    assert run["seconds"] < 10
    second = report["after"][0]
    assert second["rc"] == 0 and "SIGTERM to 0 process(es)" in second["stderr"]


@pytest.mark.skipif(not Path("/sbin/killall5").exists(), reason="sysvinit-utils' killall5 is missing")
def test_ours_and_sysvinits_killall5_stop_spare_and_kill_the_same_processes(tmp_path):
    """The peer: Debian's /sbin/killall5, called as sendsigs calls it (-o with the sendsigs.omit.d PIDs),
    against `bootkit killall5`, each in a namespace of its own holding the same processes."""
    seen = {}
    for name, argv in (("sysvinit", ["/sbin/killall5", "-9", "-o", "{sendsigs}"]),
                       ("ours", [BOOTKIT, "killall5", "-9"])):
        report = run_scenario(tmp_path / name, {
            "start": {"daemon": [BOOTKIT, "shim", "run", "--name", "uiscsid", "--", "sleep", "300"],
                      "plain": ["sleep", "300"]},
            "flagged": ["daemon"],
            "run": [argv],
            "expect_dead": ["plain"],
        })
        run = report["runs"][0]
        seen[name] = (run["rc"], report["returncode"], run["woken"], run["left_stopped"])
    assert seen["sysvinit"] == (0, {"daemon": None, "plain": -signal.SIGKILL}, {"daemon": True}, [])
    assert seen["ours"] == seen["sysvinit"]
