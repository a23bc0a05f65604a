"""CHAP against real tgtd instances, and the secrets nowhere but where they must be.

uiscsid runs on the host (``--attach none``, verbose log) with four targets: one-way CHAP, mutual CHAP,
a wrong secret of ours, and a target that proves itself with a secret other than the one we expect.
uiscsictl pushes them with --debug, asks every ``show`` with --json and --debug, and the one-shot tools
log in with secrets from LIBISCSI_CHAP_* or in the URL, with --debug, both right and wrong. Every known
secret (and its hex form) is then looked for in: the daemon's log, every uiscsictl output, every error
message, the ``show`` answers, and /proc/*/cmdline of every process plus /proc/PID/environ of uiscsid
and uiscsictl reload, read while they run. The one place a secret may be is a one-shot tool's own
environment or command line when the user put it there.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.target
HOST_IQN = "iqn.2026-11.test.bootkit:secrets"


def _secret(who: str) -> str:
    return f"{who}-Sekr1t-{secrets.token_hex(6)}"


class ProcWatch:
    """Reads /proc/*/cmdline of every process, and the environ of the given pids, until stopped, and keeps
    what contains one of ``needles``."""

    def __init__(self, needles: list[bytes]) -> None:
        self.needles = needles
        self.pids: set[int] = set()
        self.hits: list[tuple[int, str, bytes]] = []
        self.read: set[tuple[int, str]] = set()
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                pid = int(entry.name)
                for name in ["cmdline", "environ"] if pid in self.pids else ["cmdline"]:
                    try:
                        raw = Path(entry.path, name).read_bytes()
                    except OSError:
                        continue
                    if pid in self.pids:
                        self.read.add((pid, name))
                    if any(n in raw for n in self.needles):
                        self.hits.append((pid, name, raw))
            self.rounds += 1
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _uiscsictl(*argv: str, env: dict | None = None, watch: ProcWatch | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIBISCSI_CHAP")}
    p = subprocess.Popen([sys.executable, "-m", "initiator.ctl", "--debug", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**clean, **(env or {})})
    if watch is not None:
        watch.pids.add(p.pid)
    out, err = p.communicate(timeout=90)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def test_chap_secrets_never_appear_in_logs_outputs_errors_or_the_process_list(tgtd, tmp_path):
    s = {who: _secret(who) for who in ("alice", "bob", "bobs-target", "carol-wrong", "dave", "dave-expect")}
    one_way = tgtd(size_mb=1, chap=("alice", s["alice"]))
    mutual = tgtd(size_mb=1, chap=("bob", s["bob"]), mutual=("tgt-bob", s["bobs-target"]))
    wrong = tgtd(size_mb=1, chap=("carol", "carol-right-secret"))
    impostor = tgtd(size_mb=1, chap=("dave", s["dave"]), mutual=("tgt-dave", "not-what-dave-expects"))
    for who, value in s.items():
        (tmp_path / f"{who}.secret").write_text(value + "\n")
        os.chmod(tmp_path / f"{who}.secret", 0o600)

    def block(name: str, t, auth: str) -> str:
        return f"target {name} {{\n targetaddr 127.0.0.1 port {t.port}\n targetname {t.iqn}\n{auth}}}\n"

    conf = tmp_path / "uiscsi.conf"
    conf.write_text(f"initiatorname {HOST_IQN}\n"
                    + block("alice", one_way, " auth chap user alice secret-file alice.secret\n")
                    + block("bob", mutual, " auth chap user bob secret-file bob.secret\n"
                                           " mutual user tgt-bob secret-file bobs-target.secret\n")
                    + block("carol", wrong, " auth chap user carol secret-file carol-wrong.secret\n")
                    + block("dave", impostor, " auth chap user dave secret-file dave.secret\n"
                                              " mutual user tgt-dave secret-file dave-expect.secret\n"))
    sock = str(tmp_path / "uiscsid.sock")
    texts: dict[str, str] = {}
    needles = {f"{who} secret": v for who, v in s.items()}
    needles.update({f"{who} secret in hex": v.encode().hex() for who, v in s.items()})
    watch = ProcWatch([v.encode() for v in needles.values()])
    log = open(tmp_path / "uiscsid.log", "w")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen([sys.executable, "-m", "initiator.daemon", "-d", "-v", "-s", sock, "--attach", "none",
                               "--no-flag"], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "BOOTKIT_RUNDIR": str(tmp_path)})
    watch.pids.add(daemon.pid)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        r = _uiscsictl("-s", sock, "reload", "-f", str(conf), "--wait", "30", watch=watch)
        texts["reload"] = r.stdout + r.stderr
        assert r.returncode == 1, texts["reload"]          # carol and dave fail, alice and bob are up
        for what in ("summary", "sessions", "luns", "stats"):
            r = _uiscsictl("-s", sock, "show", what, "--json", watch=watch)
            assert r.returncode == 0, r.stderr
            texts[f"show {what}"] = r.stdout + r.stderr
        states = {t["name"]: t["state"] for t in json.loads(texts["show summary"])["targets"]}
        assert states == {"alice": "logged-in", "bob": "logged-in", "carol": "failed", "dave": "failed"}, states
        assert "CHAP" in texts["show summary"] or "authent" in texts["show summary"].lower(), texts["show summary"]
        r = _uiscsictl("-s", sock, "log", "verbose", watch=watch)
        texts["log verbose"] = r.stdout + r.stderr
        # the one-shot tools: secrets from the environment (right, then wrong), and in a URL (wrong)
        env_ok = {"LIBISCSI_CHAP_USERNAME": "bob", "LIBISCSI_CHAP_PASSWORD": s["bob"],
                  "LIBISCSI_CHAP_TARGET_USERNAME": "tgt-bob", "LIBISCSI_CHAP_TARGET_PASSWORD": s["bobs-target"]}
        r = _uiscsictl("inquiry", "--json", mutual.url(1), env=env_ok)
        assert r.returncode == 0, r.stderr
        texts["inquiry env"] = r.stdout + r.stderr
        r = _uiscsictl("capacity", wrong.url(1), env={"LIBISCSI_CHAP_USERNAME": "carol",
                                                      "LIBISCSI_CHAP_PASSWORD": s["carol-wrong"]})
        assert r.returncode == 1, r.stdout
        texts["capacity wrong env"] = r.stdout + r.stderr
        url = f"iscsi://dave%{s['dave']}@127.0.0.1:{impostor.port}/{impostor.iqn}/1?target_user=tgt-dave" \
              f"&target_password={s['dave-expect']}"
        url_argv = [sys.executable, "-m", "initiator.ctl", "--debug", "luns", url]
        r = _uiscsictl("luns", url)
        assert r.returncode == 1 and "mutual" in r.stderr.lower(), r.stderr
        texts["luns wrong mutual URL"] = r.stdout + r.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)
        log.close()
        watch.stop()
    texts["uiscsid log"] = (tmp_path / "uiscsid.log").read_text()
    assert "carol" in texts["uiscsid log"] and "dave" in texts["uiscsid log"], texts["uiscsid log"]
    assert watch.rounds > 5 and (daemon.pid, "environ") in watch.read, watch.rounds
    assert any(name == "environ" and pid != daemon.pid for pid, name in watch.read)   # uiscsictl reload's
    leaks = [f"{needle} in {where}" for where, text in texts.items() for needle, value in needles.items()
             if value in text or value.upper() in text]
    put_there = "\0".join(url_argv).encode() + b"\0"      # the user's own URL on the one-shot's command line
    leaks += [f"{needle} in /proc/{pid}/{name}" for pid, name, raw in watch.hits if raw != put_there
              for needle, value in needles.items() if value.encode() in raw]
    assert not leaks, leaks
