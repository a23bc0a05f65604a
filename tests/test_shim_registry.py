"""The no-broadcast-kill registry, flag_self, the exec plan of `shim run`, and the CLI parsers.

Everything here runs on the host and sends no broadcast signal: the broadcast kills themselves are
proven in a PID namespace (tests/test_shim_namespace.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import iscsid_shim
from iscsid_shim import cli, launch, procinfo, registry

VENV_BIN = Path(sys.executable).parent
BOOTKIT = str(VENV_BIN / "bootkit")


@pytest.fixture
def rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run = tmp_path / "run"
    monkeypatch.setenv("BOOTKIT_RUNDIR", str(run))
    return run


@pytest.fixture
def sleeper():
    """A live child process to flag (flagging is only files: nothing is signalled)."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "60"])
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def entry_file(rundir: Path, pid: int) -> Path:
    return rundir / "bootkit" / "nobroadcastkill" / str(pid)


def test_flagged_process_is_listed_with_its_start_time_and_sendsigs_file(rundir, sleeper):
    p = sleeper()
    f = iscsid_shim.flag(p.pid, "keeper")
    assert f.start == procinfo.start_time(p.pid)
    assert iscsid_shim.is_flagged(p.pid)
    assert [x.pid for x in iscsid_shim.flagged()] == [p.pid]
    assert (rundir / "sendsigs.omit.d" / "keeper").read_text() == f"{p.pid}\n"
    data = json.loads(entry_file(rundir, p.pid).read_text())
    assert data["name"] == "keeper" and data["start"] == f.start and data["boot_id"] == procinfo.boot_id()


def test_unflag_removes_the_entry_and_the_sendsigs_file(rundir, sleeper):
    p = sleeper()
    iscsid_shim.flag(p.pid, "keeper")
    assert iscsid_shim.unflag(p.pid) is True
    assert not iscsid_shim.is_flagged(p.pid)
    assert not (rundir / "sendsigs.omit.d" / "keeper").exists()
    assert iscsid_shim.unflag(p.pid) is False


def test_reused_pid_is_not_flagged_and_its_entry_is_pruned(rundir, sleeper):
    p = sleeper()
    iscsid_shim.flag(p.pid, "keeper")
    path = entry_file(rundir, p.pid)
    data = json.loads(path.read_text())
    data["start"] -= 1  # as if the flagged process died and the kernel gave its PID to this one
    path.write_text(json.dumps(data))
    assert not iscsid_shim.is_flagged(p.pid)
    assert iscsid_shim.flagged() == []
    assert not path.exists()
    assert not (rundir / "sendsigs.omit.d" / "keeper").exists()


def test_entry_from_another_boot_is_stale(rundir, sleeper):
    p = sleeper()
    iscsid_shim.flag(p.pid, "keeper")
    path = entry_file(rundir, p.pid)
    path.write_text(path.read_text().replace(procinfo.boot_id(), "00000000-0000-0000-0000-000000000000"))
    assert not iscsid_shim.is_flagged(p.pid)
    assert iscsid_shim.flagged() == []


def test_dead_process_and_garbage_entries_are_pruned(rundir, sleeper):
    p = sleeper()
    iscsid_shim.flag(p.pid, "gone")
    p.kill()
    p.wait()
    garbage = entry_file(rundir, 999999)
    garbage.write_text("not json")
    removed = registry.prune()
    assert sorted(x if isinstance(x, int) else x.pid for x in removed) == sorted([p.pid, 999999])
    assert not garbage.exists()
    assert not (rundir / "sendsigs.omit.d" / "gone").exists()


def test_two_processes_under_one_name_share_the_sendsigs_file(rundir, sleeper):
    a, b = sleeper(), sleeper()
    iscsid_shim.flag(a.pid, "pair")
    iscsid_shim.flag(b.pid, "pair")
    lines = (rundir / "sendsigs.omit.d" / "pair").read_text().split()
    assert sorted(map(int, lines)) == sorted([a.pid, b.pid])
    iscsid_shim.unflag(a.pid)
    assert (rundir / "sendsigs.omit.d" / "pair").read_text().split() == [str(b.pid)]


def test_reflagging_under_a_new_name_moves_the_sendsigs_line(rundir, sleeper):
    p = sleeper()
    iscsid_shim.flag(p.pid, "old")
    iscsid_shim.flag(p.pid, "new")
    assert not (rundir / "sendsigs.omit.d" / "old").exists()
    assert (rundir / "sendsigs.omit.d" / "new").read_text() == f"{p.pid}\n"


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b", "a b", "x" * 65])
def test_unsafe_names_are_refused(rundir, sleeper, name):
    with pytest.raises(ValueError, match="bad name"):
        iscsid_shim.flag(sleeper().pid, name)


def test_flagging_a_missing_process_fails(rundir):
    with pytest.raises(ProcessLookupError):
        iscsid_shim.flag(2**22 + 12345, "ghost")


FLAG_SELF = """
import os, sys, time, iscsid_shim
from iscsid_shim import registry
comm0 = open("/proc/self/comm").read().strip()
e1 = iscsid_shim.flag_self("uiscsid")
path = registry.registry_dir() / str(os.getpid())
m1 = path.stat().st_mtime_ns
e2 = iscsid_shim.flag_self("uiscsid")
argv0 = open("/proc/self/cmdline", "rb").read().split(b"\\0")[0].decode()
print(argv0, open("/proc/self/comm").read().strip() == comm0,
      e1 == e2, path.stat().st_mtime_ns == m1, iscsid_shim.is_flagged(os.getpid()), sep="|", flush=True)
sys.stdin.readline()
"""


def test_flag_self_is_idempotent_sets_at_argv0_keeps_comm_and_unflags_at_exit(rundir):
    p = subprocess.Popen([sys.executable, "-c", FLAG_SELF, "-d"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "BOOTKIT_RUNDIR": str(rundir)})
    try:
        argv0, comm, same, untouched, flagged = p.stdout.readline().rstrip("\n").split("|")
        assert argv0 == "@uiscsid -d"
        assert comm == "True"  # comm stays, so pidof and ps -C still find the program
        assert (same, untouched, flagged) == ("True", "True", "True")
        assert (rundir / "sendsigs.omit.d" / "uiscsid").read_text() == f"{p.pid}\n"
    finally:
        p.communicate("\n", timeout=30)
    assert p.returncode == 0
    assert not entry_file(rundir, p.pid).exists()
    assert not (rundir / "sendsigs.omit.d" / "uiscsid").exists()


def test_shim_list_json_and_clear(rundir, sleeper):
    p = sleeper()
    iscsid_shim.flag(p.pid, "keeper")
    env = {**os.environ, "BOOTKIT_RUNDIR": str(rundir)}
    out = subprocess.run([BOOTKIT, "shim", "list", "--json"], env=env, capture_output=True, text=True,
                         check=True)
    assert [(e["pid"], e["name"]) for e in json.loads(out.stdout)] == [(p.pid, "keeper")]
    assert subprocess.run([BOOTKIT, "shim", "clear", str(p.pid)], env=env, check=False).returncode == 0
    clear = subprocess.run([BOOTKIT, "shim", "clear", str(p.pid)], env=env, capture_output=True, text=True,
                           check=False)
    assert clear.returncode == 1 and "not flagged" in clear.stderr


def test_shim_run_of_a_missing_command_fails_cleanly_and_leaves_no_flag(rundir):
    env = {**os.environ, "BOOTKIT_RUNDIR": str(rundir)}
    r = subprocess.run([BOOTKIT, "shim", "run", "--", "/nonexistent/daemon"], env=env, capture_output=True,
                       text=True, check=False)
    assert r.returncode == 1
    assert "command not found" in r.stderr and "Traceback" not in r.stderr
    assert registry.flagged() == []


# --- the exec plan: how '@' survives a shebang -------------------------------------------------------


def script(tmp_path: Path, name: str, shebang: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{shebang}\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_plan_execs_a_binary_with_at_argv0():
    plan = launch.plan("keeper", ["sleep", "5"])
    assert plan.path.endswith("/sleep") and plan.argv == ["@keeper", "5"] and plan.warning is None


def test_plan_execs_a_shell_scripts_interpreter_itself(tmp_path):
    s = script(tmp_path, "svc", "/bin/sh -e")
    plan = launch.plan("svc", [s, "-x"])
    assert plan.path == "/bin/sh" and plan.argv == ["@svc", "-e", s, "-x"]


def test_plan_runs_a_python_script_of_our_environment_through_the_launcher(tmp_path):
    s = script(tmp_path, "uiscsid", sys.executable)
    plan = launch.plan("uiscsid", [s, "-d"])
    assert plan.path == sys.executable
    assert plan.argv == [sys.executable, "-m", "iscsid_shim.launch", "uiscsid", s, "-d"]


def test_plan_resolves_env_shebangs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{VENV_BIN}:{os.environ['PATH']}")
    s = script(tmp_path, "tool", "/usr/bin/env python3")
    assert launch.plan("tool", [s]).argv[1:4] == ["-m", "iscsid_shim.launch", "tool"]


def test_plan_warns_when_a_foreign_python_would_lose_its_venv(tmp_path):
    foreign = tmp_path / "other-venv" / "bin" / "python3"
    foreign.parent.mkdir(parents=True)
    foreign.symlink_to(sys.executable)
    s = script(tmp_path, "tool", str(foreign))
    plan = launch.plan("tool", [s])
    assert plan.argv == [s] and "another Python" in (plan.warning or "")


# --- parsing ---------------------------------------------------------------------------------------------


def test_killall5_accepts_sysvinit_signal_spelling_and_comma_pid_lists():
    args = cli.killall_parser().parse_args(cli.sysv_signal_args(["-9", "-o", "12,13", "-o", "14"]))
    assert args.sig == 9 and cli._omitted(args) == [12, 13, 14]
    assert cli.killall_parser().parse_args(cli.sysv_signal_args(["-TERM"])).sig == 15
    assert cli.killall_parser().parse_args(["-s", "sigkill"]).sig == 9


@pytest.mark.parametrize("argv", [["-s", "FOO"], ["-s", "99"], ["-o", "x"], ["-o", "0"]])
def test_killall5_usage_errors_exit_1_not_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.killall_parser().parse_args(argv)
    assert exc.value.code == 1  # 2 means "nothing left to signal"


@settings(max_examples=200)
@given(comm=st.text(alphabet=st.characters(blacklist_characters="\0\n"), max_size=15),
       start=st.integers(0, 2**63), flags=st.integers(0, 2**32))
def test_stat_line_parses_whatever_comm_holds(comm, start, flags):
    line = f"42 ({comm}) S 1 42 42 0 -1 {flags} " + "0 " * 12 + f"{start} 0 0\n"
    st_ = procinfo.parse_stat(42, line)
    assert (st_.state, st_.ppid, st_.session, st_.flags, st_.start) == ("S", 1, 42, flags, start)


PROBE_MODULE = """
import json, sys
argv0 = open("/proc/self/cmdline", "rb").read().split(b"\\0")[0].decode()
print(json.dumps({"argv0": argv0, "argv": sys.argv[1:], "prefix": sys.prefix}))
"""


@pytest.mark.parametrize("form", ["-m", "-c", "script"])
def test_shim_run_of_python_forms_keeps_venv_and_at_argv0_and_unflags_at_exit(tmp_path, rundir, form):
    (tmp_path / "probe_mod.py").write_text(PROBE_MODULE)
    target = {"-m": ["-m", "probe_mod"], "-c": ["-c", PROBE_MODULE], "script": [str(tmp_path / "probe_mod.py")]}
    env = {**os.environ, "BOOTKIT_RUNDIR": str(rundir)}
    r = subprocess.run([BOOTKIT, "shim", "run", "--name", "probe", "--", sys.executable, *target[form], "x", "y"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"argv0": "@probe x y", "argv": ["x", "y"], "prefix": sys.prefix}
    assert not (rundir / "sendsigs.omit.d" / "probe").exists()  # the launcher unflagged it at exit
    assert list((rundir / "bootkit" / "nobroadcastkill").glob("[0-9]*")) == []


OPS = st.lists(st.tuples(st.sampled_from(["flag", "unflag", "reuse"]), st.integers(0, 2),
                         st.sampled_from(["a", "b"])), max_size=12)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_sendsigs_files_always_match_the_live_flags(tmp_path_factory, ops):
    """Whatever mix of flag, unflag and PID reuse happened, after flagged() every sendsigs.omit.d file
    lists exactly the live flagged PIDs of its name, and no file is left for a name with none."""
    run = tmp_path_factory.mktemp("run")
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    old = os.environ.get("BOOTKIT_RUNDIR")
    os.environ["BOOTKIT_RUNDIR"] = str(run)
    try:
        for op, i, name in ops:
            pid = procs[i].pid
            if op == "flag":
                iscsid_shim.flag(pid, name)
            elif op == "unflag":
                iscsid_shim.unflag(pid)
            elif entry_file(run, pid).exists():
                data = json.loads(entry_file(run, pid).read_text())
                entry_file(run, pid).write_text(json.dumps({**data, "start": data["start"] + 1}))
        live = iscsid_shim.flagged()
        want = {n: sorted(f.pid for f in live if f.name == n) for n in {f.name for f in live}}
        sd = run / "sendsigs.omit.d"
        have = {p.name: sorted(map(int, p.read_text().split())) for p in sd.iterdir()} if sd.exists() else {}
        assert have == want
    finally:
        if old is None:
            del os.environ["BOOTKIT_RUNDIR"]
        else:
            os.environ["BOOTKIT_RUNDIR"] = old
        for p in procs:
            p.kill()
            p.wait()
