"""uiscsid + uiscsictl on the host against real tgtd: reload, show, detach, target restarts, SIGTERM.

The daemon runs as a real process (`uiscsid -d --attach none --no-flag`) on a socket in a temp dir;
uiscsictl is called in-process. Devices need the kernel's nbd: that part is in test_uiscsid_vm.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from initiator.ctl import uiscsictl as ctl
from initiator.ctl.client import ControlClient
from initiator.daemon.wire import ControlError

pytestmark = pytest.mark.target
HOST_IQN = "iqn.2026-11.test.bootkit:host"


class Uiscsid:
    def __init__(self, workdir: Path, *extra: str, flag: bool = False) -> None:
        self.workdir = workdir
        self.sock = str(workdir / "uiscsid.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(workdir / "notify.sock"))
        self.notify.settimeout(20)
        env = {**os.environ, "NOTIFY_SOCKET": str(workdir / "notify.sock"), "BOOTKIT_RUNDIR": str(workdir)}
        self.log = open(workdir / "uiscsid.log", "w")  # noqa: SIM115 - lives as long as the daemon
        self.proc = subprocess.Popen([sys.executable, "-m", "initiator.daemon", "-d", "-s", self.sock,
                                      "--attach", "none", *([] if flag else ["--no-flag"]), *extra],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.ready = self.notify.recv(4096).decode()

    def ctl(self, capsys, *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = ctl.main(["-s", self.sock, *argv])
        out, err = capsys.readouterr()
        return rc, out, err

    def show(self, what: str = "summary") -> dict:
        return ControlClient(self.sock, timeout=10).call("show", what=what)

    def target(self, name: str) -> dict:
        return next(t for t in self.show()["targets"] if t["name"] == name)

    def wait_for(self, name: str, cond, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            t = self.target(name)
            if cond(t):
                return t
            if time.monotonic() > deadline:
                raise AssertionError(f"target {name} never reached the condition: {t}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()
        self.log.close()

    def logtext(self) -> str:
        return (self.workdir / "uiscsid.log").read_text()


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="uiscsid-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(workdir):
    d = Uiscsid(workdir)
    yield d
    d.stop()


def write_conf(workdir: Path, *targets: str, name: str = "uiscsi.conf") -> str:
    p = workdir / name
    p.write_text(f"initiatorname {HOST_IQN}\n" + "".join(targets))
    return str(p)


def block(name: str, t, extra: str = "") -> str:
    return f"target {name} {{\n  targetaddr localhost port {t.port}\n  targetname {t.iqn}\n{extra}}}\n"


def test_daemon_tells_systemd_it_is_ready_and_its_socket_is_root_only(daemon):
    assert daemon.ready.startswith("READY=1") and f"MAINPID={daemon.proc.pid}" in daemon.ready
    assert oct(os.stat(daemon.sock).st_mode & 0o777) == "0o600"


def test_daemon_flags_itself_no_broadcast_kill_and_unflags_at_exit(workdir):
    d = Uiscsid(workdir, flag=True)
    try:
        pid = d.proc.pid
        assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"@uiscsid"), Path(f"/proc/{pid}/cmdline").read_bytes()
        assert (workdir / "bootkit" / "nobroadcastkill" / str(pid)).exists()
        assert (workdir / "sendsigs.omit.d" / "uiscsid").read_text().split() == [str(pid)]
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        assert not (workdir / "bootkit" / "nobroadcastkill" / str(pid)).exists()
    finally:
        d.stop()


def test_reload_logs_in_resolves_names_and_show_reports_sessions_luns_stats(daemon, workdir, tgtd, capsys):
    t = tgtd(luns=2)
    conf = write_conf(workdir, block("disk", t))
    rc, out, err = daemon.ctl(capsys, "reload", "-f", conf, "--wait", "15")
    assert rc == 0, err
    assert "disk" in out and "logged-in" in out and "127.0.0.1" in out   # localhost resolved by the ctl
    rc, out, _ = daemon.ctl(capsys, "show", "luns", "--json")
    luns = json.loads(out)["luns"]
    assert [(x["lun"], x["size"], x["block_size"]) for x in luns] == [(1, 64 << 20, 512), (2, 64 << 20, 512)]
    rc, out, _ = daemon.ctl(capsys, "show", "sessions", "--json")
    (s,) = json.loads(out)["sessions"]
    assert s["connections"] == 1 and s["negotiated"]["target_name"] == t.iqn
    rc, out, _ = daemon.ctl(capsys, "show", "stats")
    assert rc == 0 and out.startswith("disk: commands ")


def test_failed_target_is_named_and_reload_exits_1_but_others_come_up(daemon, workdir, tgtd, capsys):
    t = tgtd()
    dead = "target dead {\n targetaddr 127.0.0.1 port 1\n targetname iqn.2026-11.test.bootkit:none\n}\n"
    conf = write_conf(workdir, block("disk", t), dead)
    rc, _, err = daemon.ctl(capsys, "reload", "-f", conf, "--wait", "15")
    assert rc == 1
    assert "uiscsictl: target dead: failed: " in err
    assert daemon.target("disk")["state"] == "logged-in"


def test_reload_after_the_target_returns_retries_now_and_waits_for_the_login(daemon, workdir, tgtd, capsys):
    t = tgtd()
    t.kill()  # down at boot
    conf = write_conf(workdir, block("disk", t))
    rc, _, err = daemon.ctl(capsys, "reload", "-f", conf, "--wait", "3")
    assert rc == 1 and "target disk: failed" in err
    daemon.wait_for("disk", lambda x: x["state"] == "failed")
    time.sleep(2.5)  # the retry loop is now in a backoff sleep of several seconds
    t.restart()
    rc, _, err = daemon.ctl(capsys, "reload", "-f", conf, "--wait", "20")
    assert rc == 0, err
    assert daemon.target("disk")["state"] == "logged-in"


def test_no_wait_returns_at_once_and_exits_0(daemon, workdir, tgtd, capsys):
    t = tgtd()
    rc, _, err = daemon.ctl(capsys, "reload", "-f", write_conf(workdir, block("disk", t)), "--no-wait")
    assert rc == 0, err
    daemon.wait_for("disk", lambda x: x["state"] == "logged-in")


def test_bad_config_is_refused_whole_and_the_running_set_is_untouched(daemon, workdir, tgtd, capsys):
    t = tgtd()
    assert daemon.ctl(capsys, "reload", "-f", write_conf(workdir, block("disk", t)))[0] == 0
    bad = write_conf(workdir, block("other", t), "target broken {\n  targetaddr 1.2.3.4\n}\n", name="bad.conf")
    rc, _, err = daemon.ctl(capsys, "reload", "-f", bad)
    assert rc == 1 and f"uiscsictl: {bad}:6: target 'broken': missing targetname" in err
    assert [x["name"] for x in daemon.show()["targets"]] == ["disk"]


def test_unresolvable_name_is_refused_before_anything_is_pushed(daemon, workdir, capsys):
    conf = write_conf(workdir, "target x {\n targetaddr no-such-host.invalid\n"
                               " targetname iqn.2026-11.test.bootkit:x\n}\n")
    rc, _, err = daemon.ctl(capsys, "reload", "-f", conf)
    assert rc == 1 and f"{conf}:2: cannot resolve 'no-such-host.invalid'" in err
    assert daemon.show()["targets"] == []


def test_daemon_refuses_names_it_would_have_to_resolve(daemon):
    with pytest.raises(ControlError) as e:
        ControlClient(daemon.sock).call("reload", targets=[{
            "name": "x", "address": "localhost", "target_name": "iqn.2026-11.test.bootkit:x",
            "initiator_name": HOST_IQN}])
    assert e.value.code == "bad-config" and "not an IP address" in e.value.message


def test_unchanged_target_keeps_its_session_across_reload_and_changed_one_restarts(daemon, workdir, tgtd, capsys):
    t1, t2 = tgtd(), tgtd()
    conf = write_conf(workdir, block("a", t1), block("b", t2))
    assert daemon.ctl(capsys, "reload", "-f", conf)[0] == 0
    since_a = daemon.target("a")["since"]
    conf = write_conf(workdir, block("a", t1), block("b", t2, "  header_digest crc32c\n"))
    rc, out, _ = daemon.ctl(capsys, "reload", "-f", conf, "--json")
    result = json.loads(out)
    assert rc == 0 and result["restarted"] == ["b"] and result["added"] == [] and result["removed"] == []
    assert daemon.target("a")["since"] == since_a and daemon.target("a")["logins"] == 1
    conf = write_conf(workdir, block("b", t2, "  header_digest crc32c\n"))
    rc, out, _ = daemon.ctl(capsys, "reload", "-f", conf, "--json")
    assert json.loads(out)["removed"] == ["a"]


def test_detach_logs_out_and_reload_brings_it_back(daemon, workdir, tgtd, capsys):
    t = tgtd()
    conf = write_conf(workdir, block("disk", t))
    assert daemon.ctl(capsys, "reload", "-f", conf)[0] == 0
    rc, out, err = daemon.ctl(capsys, "detach", "disk")
    assert rc == 0 and "disk: detached" in out
    rc, _, err = daemon.ctl(capsys, "detach", "nope")
    assert rc == 1 and "no target called 'nope'" in err
    assert daemon.ctl(capsys, "reload", "-f", conf)[0] == 0
    assert daemon.target("disk")["state"] == "logged-in"


def test_detach_unused_logs_out_of_every_free_target_and_takes_no_force(daemon, workdir, tgtd, capsys):
    a, b = tgtd(), tgtd()
    conf = write_conf(workdir, block("one", a), block("two", b))
    assert daemon.ctl(capsys, "reload", "-f", conf)[0] == 0
    rc, out, err = daemon.ctl(capsys, "detach", "--unused")
    assert rc == 0 and out.splitlines() == ["one: detached", "two: detached"], (out, err)
    assert {t["state"] for t in daemon.show()["targets"]} == {"detached"}
    rc, _, err = daemon.ctl(capsys, "detach", "--unused", "--force")
    assert rc == 1 and "takes no --force" in err
    with pytest.raises(SystemExit) as exit_:
        daemon.ctl(capsys, "detach")
    assert exit_.value.code == 2 and "one of the arguments NAME --unused is required" in capsys.readouterr().err
    assert daemon.ctl(capsys, "reload", "-f", conf)[0] == 0  # the next reload logs in again
    assert daemon.target("one")["state"] == "logged-in"


def test_target_restart_is_recovered_within_the_same_session(daemon, workdir, tgtd, capsys):
    t = tgtd()
    assert daemon.ctl(capsys, "reload", "-f", write_conf(workdir, block("disk", t)))[0] == 0
    t.restart(down_for=1.0)
    deadline = time.monotonic() + 30
    while (daemon.show("stats")["stats"][0]["session"]["reconnects"] < 1 or
           daemon.target("disk")["state"] != "logged-in"):
        assert time.monotonic() < deadline, daemon.show("stats")
        time.sleep(0.2)
    assert daemon.target("disk")["logins"] == 1        # ERL0 recovery, not a fresh session


def test_after_the_replacement_timeout_the_daemon_logs_in_afresh(daemon, workdir, tgtd, capsys):
    t = tgtd()
    conf = write_conf(workdir, block("disk", t, "  replacement_timeout 1\n"))
    assert daemon.ctl(capsys, "reload", "-f", conf)[0] == 0
    t.kill()
    daemon.wait_for("disk", lambda x: x["state"] == "failed", timeout=30)
    t.restart()
    after = daemon.wait_for("disk", lambda x: x["state"] == "logged-in", timeout=40)
    assert after["logins"] == 2


def test_daemon_discover_and_log_level(daemon, tgtd, capsys):
    t = tgtd()
    rc, out, err = daemon.ctl(capsys, "daemon-discover", f"127.0.0.1:{t.port}", "-I", HOST_IQN, "--json")
    assert rc == 0, err
    assert json.loads(out)["targets"][0]["name"] == t.iqn
    assert daemon.ctl(capsys, "log", "verbose")[1] == "log level: verbose\n"


def test_sigterm_logs_out_and_exits_within_5_seconds(daemon, workdir, tgtd, capsys):
    t = tgtd()
    assert daemon.ctl(capsys, "reload", "-f", write_conf(workdir, block("disk", t)))[0] == 0
    start = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    assert time.monotonic() - start < 5.0
    assert daemon.notify.recv(4096) == b"STOPPING=1"
    assert not os.path.exists(daemon.sock)
    assert "target disk: detached" in daemon.logtext()


def test_no_daemon_gives_one_clear_line(workdir, capsys):
    rc = ctl.main(["-s", str(workdir / "none.sock"), "show"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("uiscsictl: cannot connect to") and "is uiscsid running?" in err


def test_background_mode_returns_once_the_socket_answers(workdir):
    sock = str(workdir / "bg.sock")
    r = subprocess.run([sys.executable, "-m", "initiator.daemon", "-s", sock, "--attach", "none", "--no-flag"],
                       check=False, timeout=30)
    assert r.returncode == 0
    pid = ControlClient(sock).call("ping")["pid"]
    try:
        assert pid != os.getpid()
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)


def test_discovery_target_logs_in_to_what_the_portal_offers(daemon, workdir, tgtd, capsys):
    t = tgtd(luns=2)
    conf = write_conf(workdir, f"target portal {{\n  targetaddr localhost port {t.port}\n  discovery\n}}\n")
    rc, out, err = daemon.ctl(capsys, "reload", "-f", conf, "--wait", "15")
    assert rc == 0, err
    assert "discovered" in out and "1 target(s) found" in out
    assert daemon.target("portal")["discovered"] == [{"name": t.iqn, "portals": [["127.0.0.1", t.port, 1]]}]
    child = daemon.target(f"portal/{t.iqn}")
    assert child["state"] == "logged-in" and (child["address"], child["port"]) == ("127.0.0.1", t.port)
    assert [x["lun"] for x in daemon.show("luns")["luns"]] == [1, 2]
    rc, out, err = daemon.ctl(capsys, "detach", "portal")
    assert rc == 0 and [x["name"] for x in daemon.show()["targets"]] == ["portal"]


def test_chap_secret_from_a_file_logs_in_and_a_wrong_one_is_refused(daemon, workdir, tgtd, capsys):
    t = tgtd(chap=("host1", "right-secret-123"))
    for name, text in (("good.secret", "right-secret-123\n"), ("bad.secret", "wrong-secret-456\n")):
        (workdir / name).write_text(text)
        os.chmod(workdir / name, 0o600)
    conf = write_conf(workdir, block("good", t, "  auth chap user host1 secret-file good.secret\n"),
                      block("bad", t, "  auth chap user host1 secret-file bad.secret\n"))
    rc, _, err = daemon.ctl(capsys, "reload", "-f", conf, "--wait", "15")
    assert rc == 1 and daemon.target("good")["state"] == "logged-in"
    assert daemon.target("bad")["state"] == "failed" and "uiscsictl: target bad: failed: " in err
    assert "right-secret" not in daemon.logtext() and "wrong-secret" not in daemon.logtext()


def test_connections_line_opens_that_many_connections(daemon, workdir, tgtd, capsys):
    t = tgtd(params={"MaxConnections": "2"})
    assert daemon.ctl(capsys, "reload", "-f", write_conf(workdir, block("disk", t, "  connections 2\n")))[0] == 0
    (s,) = daemon.show("sessions")["sessions"]
    assert s["connections"] == 2 and s["negotiated"]["max_connections"] >= 2


def test_a_missing_lun_is_reported_and_reload_exits_1(daemon, workdir, tgtd, capsys):
    t = tgtd()
    rc, _, err = daemon.ctl(capsys, "reload", "-f", write_conf(workdir, block("disk", t, "  lun 1 7\n")))
    assert rc == 1 and "uiscsictl: target disk LUN 7: " in err, err
    assert daemon.target("disk")["state"] == "logged-in"
    luns = {x["lun"]: x for x in daemon.show("luns")["luns"]}
    assert luns[1]["error"] is None and luns[7]["error"]
