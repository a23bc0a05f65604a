"""vm.lio's pure parts without a guest: the configfs shell text, log parsing, the hostfwd QEMU option,
and the guest's admin loop checked by shellcheck and run by busybox against a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from vm import lio
from vm.qemu import BootSpec, argv


def test_configfs_writes_have_no_trailing_newline_and_quote_the_value():
    assert lio.write("/cfg/auth/password", "it's $ecret") == "printf %s 'it'\"'\"'s $ecret' > /cfg/auth/password"
    with pytest.raises(ValueError, match="newline"):
        lio.write("/cfg/auth/userid", "user\n")


@pytest.mark.parametrize("bad", ["", "NULL", "NULLsecret", "has space", "tab\there"])
def test_chap_values_lio_cannot_hold_are_refused(bad):
    with pytest.raises(ValueError, match="LIO needs"):
        lio.auth_script(lio.IQN, ("user", bad), None)


def test_auth_script_turns_chap_on_and_off():
    on = lio.auth_script(lio.IQN, ("iuser", "isecret"), ("tuser", "tsecret"))
    t = lio.tpg(lio.IQN)
    assert f"printf %s isecret > {t}/auth/password" in on
    assert f"printf %s tsecret > {t}/auth/password_mutual" in on
    assert on.endswith(f"printf %s 1 > {t}/attrib/authentication\n")
    off = lio.auth_script(lio.IQN, None, None)
    assert off.count("printf %s NULL") == 4 and off.endswith(f"printf %s 0 > {t}/attrib/authentication\n")
    with pytest.raises(ValueError, match="mutual"):
        lio.auth_script(lio.IQN, None, ("tuser", "tsecret"))


def test_error_recovery_level_is_set_where_lio_reads_it():
    text = lio.param_script(lio.IQN, "ErrorRecoveryLevel", "1")
    t = lio.tpg(lio.IQN)
    assert f"> {t}/param/ErrorRecoveryLevel" in text and f"> {t}/attrib/default_erl" in text
    assert "/acls/*/attrib/default_erl" in text
    with pytest.raises(ValueError, match="unknown LIO parameter"):
        lio.param_script(lio.IQN, "MaxConections", "4")


def test_acl_names_are_checked_before_they_reach_the_shell():
    assert "acls/iqn.2026-11.test.bootkit:x/lun_0" in lio.acl_script(lio.IQN, "iqn.2026-11.test.bootkit:x")
    with pytest.raises(ValueError):
        lio.acl_script(lio.IQN, "iqn.x; rm -rf /")


def test_reset_restores_every_default_and_can_leave_the_tpg_disabled():
    t = lio.tpg(lio.IQN)
    text = lio.reset_script()
    for key, value in lio.DEFAULT_PARAMS.items():
        assert lio.write(f"{t}/param/{key}", value) in text
    assert text.splitlines()[0] == lio.write(f"{t}/enable", "0")
    assert text.splitlines()[-1] == lio.write(f"{t}/enable", "1")
    assert lio.write(f"{t}/enable", "1") not in lio.reset_script(enable=False)


def test_chap_algorithms_are_read_from_lio_debug_lines():
    log = ("[  1.0] Selected sha3-256 Algorithm\n[  1.0] [server] Got CHAP_A=8\n[  1.1] [server] Sending CHAP_A=8\n"
           "[  2.0] [server] Got CHAP_A=5\n[  2.0] [server] Got CHAP_N=iuser\n")
    assert lio.chap_algorithms_in(log) == [8, 5]


def test_hostfwd_forwards_host_loopback_ports_into_the_guest():
    spec = BootSpec(Path("/k"), Path("/i"), Path("/job"), hostfwd=((13260, 3260), (2222, 22)))
    args = argv(spec)
    netdev = args[args.index("-netdev") + 1]
    assert netdev == "user,id=n0,hostfwd=tcp:127.0.0.1:13260-:3260,hostfwd=tcp:127.0.0.1:2222-:22"
    assert "-netdev" not in argv(BootSpec(Path("/k"), Path("/i"), Path("/job")))


def test_admin_loop_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: run ./scripts/bootstrap.sh (make test does)")
    r = subprocess.run(["shellcheck", str(lio.GUEST_SCRIPT)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout


def test_admin_loop_runs_requests_in_order_and_stops_on_poweroff(tmp_path):
    """The guest's loop, run by busybox on the host with its paths moved into tmp_path (no modules)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is not installed: run ./scripts/bootstrap.sh (make test does)")
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    body = lio.GUEST_SCRIPT.read_text()
    start = body.index('tick=')  # skip the module loading and mounts: they need the guest
    script = f"ctl={ctl}\n" + body[start:].replace("/run/lio-admin.tick", str(tmp_path / "tick"))
    loop = subprocess.Popen([busybox, "sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not (ctl / "ready").exists():
            assert time.monotonic() < deadline and loop.poll() is None
            time.sleep(0.01)
        for n, text in ((1, "echo one"), (2, "false\necho never")):
            (ctl / f"{n}.part").write_text(text)
            (ctl / f"{n}.part").rename(ctl / f"{n}.cmd")
        while not (ctl / "2.rc").exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert (ctl / "1.rc").read_text() == "0\n" and (ctl / "1.out").read_text() == "one\n"
        assert (ctl / "2.rc").read_text() == "1\n" and (ctl / "2.out").read_text() == ""
        assert not (ctl / "1.cmd").exists()
        (ctl / "poweroff").touch()
        assert loop.wait(timeout=5) == 0
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
