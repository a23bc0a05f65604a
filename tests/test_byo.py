"""vm/byo: the admin's target, fstab line and LUN, checked before any guest boots."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vm.byo.fstab import parse_fstab_line
from vm.byo.lun import prepare_file, prepare_remote, same_lun
from vm.byo.target import ByoError, from_config, from_url, read_secrets_file
from vm.fscheck.host import check, create, format_seeded
from vm.fscheck.probe import Refused

LINK = "/dev/disk/by-iscsi/iqn.2026-11.org.example:d-lun0"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


# --------------------------------------------------------------------------------------------- target
def test_a_url_with_chap_from_a_secrets_file_and_a_loopback_portal(tmp_path):
    s = secret_file(tmp_path / "s", "# chap\nLIBISCSI_CHAP_USERNAME=admin\nexport LIBISCSI_CHAP_PASSWORD='s3cret'\n")
    t = from_url("iscsi://127.0.0.1:3261/iqn.2026-11.org.example:d/0?header_digest=crc32c", env={}, secrets=s)
    assert (t.params.chap.user, t.params.chap.secret, t.lun, t.iqn) == ("admin", "s3cret", 0, "iqn.2026-11.org.example:d")
    assert t.guest_host == "10.0.2.2" and "s3cret" not in t.origin
    lines = t.auth_lines("/etc/bootkit-secrets")
    assert lines[0].startswith('auth chap user "admin" secret-file "/etc/bootkit-secrets/byo.chap" algorithms ')
    assert "header_digest crc32c" in lines and t.secret_files("/s") == {"/s/byo.chap": "s3cret"}


def test_chap_comes_from_the_environment_as_for_libiscsi():
    env = {"LIBISCSI_CHAP_USERNAME": "u", "LIBISCSI_CHAP_PASSWORD": "p", "LIBISCSI_CHAP_TARGET_USERNAME": "tu",
           "LIBISCSI_CHAP_TARGET_PASSWORD": "tp"}
    t = from_url("iscsi://192.0.2.7/iqn.2026-11.org.example:d/3", env=env)
    assert t.params.mutual.secret == "tp" and t.guest_host == "192.0.2.7" and t.params.port == 3260


@pytest.mark.parametrize("text, words", [
    ("LIBISCSI_CHAP_PASSWORD=x\nPATH=/bin\n", ":2: expected KEY=VALUE"),
    ("nonsense\n", ":1: expected KEY=VALUE"),
])
def test_a_bad_secrets_file_names_its_line(tmp_path, text, words):
    with pytest.raises(ByoError, match=words):
        read_secrets_file(secret_file(tmp_path / "s", text))


def test_a_secrets_file_others_can_read_is_refused(tmp_path):
    with pytest.raises(ByoError, match="chmod 600"):
        read_secrets_file(secret_file(tmp_path / "s", "LIBISCSI_CHAP_USERNAME=u\n", 0o644))


def test_bad_urls_are_usage_errors():
    with pytest.raises(ByoError, match="^--url: "):
        from_url("iscsi://127.0.0.1/iqn.x", env={})
    with pytest.raises(ByoError, match="has no secret"):
        from_url("iscsi://127.0.0.1/iqn.2026-11.org.example:d/0", env={"LIBISCSI_CHAP_USERNAME": "u"})


def test_a_config_target_with_its_own_secret_files(tmp_path):
    secret_file(tmp_path / "d.secret", "pw-pw-pw-pw-1\n")
    conf = tmp_path / "uiscsi.conf"
    conf.write_text("initiatorname iqn.2026-11.org.example:host1\ntarget data {\n  targetaddr localhost port 3262\n"
                    "  targetname iqn.2026-11.org.example:data\n  auth chap user host1 secret-file d.secret\n"
                    "  lun 4\n}\ntarget two {\n targetaddr 127.0.0.1\n targetname iqn.2026-11.org.example:t\n"
                    " lun 1 2\n}\n")
    t = from_config(conf, "data")
    assert (t.name, t.lun, t.params.host, t.guest_host) == ("data", 4, "127.0.0.1", "10.0.2.2")
    assert t.params.chap.secret == "pw-pw-pw-pw-1" and t.params.initiator_name == "iqn.2026-11.org.example:host1"
    with pytest.raises(ByoError, match="several LUNs; say which one with --lun N"):
        from_config(conf, "two")
    assert from_config(conf, "two", lun=2).lun == 2
    with pytest.raises(ByoError, match=r"no target 'nope' \(it has: data, two\)"):
        from_config(conf, "nope")


# ----------------------------------------------------------------------------------------- fstab line
def test_the_admins_line_is_taken_as_written():
    e = parse_fstab_line(f"{LINK} /srv/db xfs _netdev,noatime,logbsize=256k 0 0", LINK)
    assert (e.fstype, e.target, e.options, e.passno) == ("xfs", "/srv/db", ("_netdev", "noatime", "logbsize=256k"), 0)
    assert parse_fstab_line(f"{LINK} /srv/db btrfs net,compress=zstd 0 0", LINK).options == ("net", "compress=zstd")


@pytest.mark.parametrize("line, words", [
    (f"{LINK} /srv/db", "missing fstype field"),
    (f"{LINK} /srv/db zfs _netdev 0 0", "type 'zfs': the proof checks ext4, xfs, btrfs"),
    (f"{LINK} /srv/db ext4 defaults 0 2", "no _netdev"),
    (f"{LINK} /srv/db ext4 _netdev,noauto 0 2", "noauto"),
    (f"{LINK} / ext4 _netdev 0 1", "mount point '/'"),
    ("/dev/sdb1 /srv/db ext4 _netdev 0 2", f"source '/dev/sdb1' is not the LUN: use its stable link {LINK}"),
    ("LABEL=db /srv/db ext4 _netdev 0 2", f"source 'LABEL=db' is not the LUN: use its stable link {LINK}"),
])
def test_lines_the_proof_cannot_judge_are_refused_before_any_boot(line, words):
    with pytest.raises(ByoError, match=f"^--fstab-line: .*{re.escape(words)}"):
        parse_fstab_line(line, LINK)


# ------------------------------------------------------------------------------------------------ LUN
def test_a_new_lun_file_is_created_and_seeded_then_reused(tmp_path):
    lun = tmp_path / "lun.img"
    first = prepare_file(lun, "btrfs", allow_format=False, payload_mb=1)
    assert first.action == "created" and first.seed and first.check_where == "host"
    assert check(lun, "btrfs", expected=first.seed).payload_ok is True
    again = prepare_file(lun, "btrfs", allow_format=False)
    assert again.action == "reused" and again.seed is None


def test_a_lun_file_holding_another_filesystem_is_refused_without_format(tmp_path):
    """The safety rule, end to end for a file: an xfs LUN and an ext4 fstab line: refused, not touched;
    with --format: formatted as ext4 with a fresh payload."""
    lun = tmp_path / "lun.img"
    create(lun, "xfs", payload_mb=1)
    before = sha(lun)
    with pytest.raises(Refused, match="holds xfs .* not ext4: the test would destroy it. Give --format"):
        prepare_file(lun, "ext4", allow_format=False)
    assert sha(lun) == before
    plan = prepare_file(lun, "ext4", allow_format=True, payload_mb=1)
    assert plan.action == "formatted" and "--format destroys xfs" in plan.reason
    assert check(lun, "ext4", expected=plan.seed).payload_ok is True


def test_a_blank_lun_file_the_test_did_not_create_is_refused(tmp_path):
    lun = tmp_path / "lun.img"
    lun.write_bytes(bytes(64 << 20))
    with pytest.raises(Refused, match="holds no filesystem"):
        prepare_file(lun, "ext4", allow_format=False)


# ------------------------------------------------------------------------------- the admin's target
@pytest.mark.target
def test_the_admins_xfs_lun_is_reused_through_istgt_with_its_backing_file(istgt):
    t = istgt(size_mb=320)
    create_in_place(t.backing, "xfs")
    target = from_url(t.url(0), env={})
    plan = prepare_remote(target, "xfs", allow_format=False, backing=t.backing,
                          format_in_guest=lambda: pytest.fail("must not format"))
    assert plan.action == "reused" and plan.check_where == "host"
    with pytest.raises(Refused, match="holds xfs"):
        prepare_remote(target, "btrfs", allow_format=False, backing=None,
                       format_in_guest=lambda: pytest.fail("must not format"))


@pytest.mark.target
def test_a_backing_file_that_is_not_the_targets_lun_is_refused(istgt, tmp_path):
    t = istgt(size_mb=64)
    other = tmp_path / "other.img"
    create(other, "ext4", size_mb=64, payload_mb=1)
    with pytest.raises(ByoError, match="is not what --url .* serves"):
        same_lun(from_url(t.url(0), env={}), other)


def create_in_place(path: Path, fstype: str) -> None:
    """The admin made this filesystem on their LUN before the test (the target serves the file already)."""
    format_seeded(path, fstype, payload_mb=1)


@pytest.mark.target
@pytest.mark.parametrize("fstype", ["btrfs", "ext4"])
def test_the_command_refuses_a_lun_holding_a_filesystem_without_format_before_any_boot(istgt, tmp_path, fstype):
    """`bootkit vm reboot-test --url ...` on a LUN that holds the admin's xfs, with a line for another
    type and no --format: exit 2 with the reason, no guest booted, not one byte of the LUN changed."""
    t = istgt(size_mb=320)
    format_seeded(t.backing, "xfs", payload_mb=1)
    before = sha(t.backing)
    link = f"/dev/disk/by-iscsi/{t.iqn}-lun0"
    r = subprocess.run([str(Path(sys.executable).parent / "bootkit"), "vm", "reboot-test", "--init", "systemd",
                        "--cycles", "1", "--url", t.url(0), "--fstab-line", f"{link} /srv/db {fstype} _netdev 0 0",
                        "--workdir", str(tmp_path / "work"), "--json"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert re.search(rf"holds xfs .* not {fstype}: the test would destroy it\. Give --format", r.stderr), r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "work").rglob("console.log"))
    assert sha(t.backing) == before


@pytest.mark.target
def test_the_relay_is_closed_until_started_then_carries_a_whole_iscsi_session(istgt):
    """target-down on an admin's target: nothing answers on the relay's port before it starts; once it
    does, a CHAP login and the reads of the LUN's edges through it see the admin's xfs."""
    import socket

    from vm.byo.relay import Relay
    from vm.fscheck.remote import probe_lun
    from vm.targets import free_port

    t = istgt(size_mb=320, chap=("relay-admin", "relay-secret-1"))
    format_seeded(t.backing, "xfs", payload_mb=1)
    port = free_port()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    env = {"LIBISCSI_CHAP_USERNAME": "relay-admin", "LIBISCSI_CHAP_PASSWORD": "relay-secret-1"}
    with Relay.start(port, "127.0.0.1", t.port):
        target = from_url(t.url(0).replace(f":{t.port}/", f":{port}/"), env=env)
        found = probe_lun(target.params, target.lun)
    assert found.content.type == "xfs" and found.size == 320 << 20


@pytest.mark.parametrize("args, words", [
    (["--url", "iscsi://127.0.0.1:3262/iqn.2026-11.org.example:d/0"], "need a Debian guest"),
    (["--init", "sysvinit", "--url", "iscsi://127.0.0.1:3262/iqn.2026-11.org.example:d/0",
      "--fstab-line", f"{LINK} /srv/db xfs _netdev 0 0"], "sysvinit needs nofail"),
    (["--init", "systemd", "--config", "/nonexistent.conf"], "--config needs --target NAME"),
    (["--init", "systemd", "--url", "iscsi://h/iqn.2026-11.org.example:d/0", "--config", "c", "--target", "t"],
     "--url and --config name a target each"),
])
def test_option_combinations_the_proof_cannot_use_are_usage_errors(args, words, tmp_path):
    r = subprocess.run([str(Path(sys.executable).parent / "bootkit"), "vm", "reboot-test", *args,
                        "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("init", ["systemd", "sysvinit"])
def test_the_admins_target_line_and_secret_reach_the_guests_files(init, tmp_path):
    """What the guest gets from the own-setup options: the admin's line in /etc/fstab as written, the
    target with CHAP in /etc/uiscsi.conf naming a secret file, and that file, mode 0600, holding the secret
    (which is nowhere else)."""
    import argparse

    from vm.scenarios import byo_cli, inits
    from vm.scenarios.cli import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    secrets = secret_file(tmp_path / "s", "LIBISCSI_CHAP_USERNAME=admin\nLIBISCSI_CHAP_PASSWORD=s3cret-pw\n")
    line = f"{LINK} /srv/db xfs _netdev,nofail,noatime 0 0"
    url = "iscsi://127.0.0.1:3262/iqn.2026-11.org.example:d/0"
    args = parser.parse_args(["reboot-test", "--init", init, "--url", url, "--secrets", str(secrets),
                              "--fstab-line", line])
    src = byo_cli.source(args, tmp_path / "unused.img")
    files = inits.image_init(init).files(byo_cli.plan_for(args, src)(0))
    def text(path: str) -> str:
        c = files[path].content
        return c if isinstance(c, str) else c.decode()

    assert line in text("/etc/fstab").splitlines()
    conf = text("/etc/uiscsi.conf")
    assert "targetaddr 10.0.2.2 port 3262" in conf and "targetname iqn.2026-11.org.example:d" in conf
    assert 'auth chap user "admin" secret-file "/etc/uiscsi.secrets/' in conf and "s3cret-pw" not in conf
    (path,) = [p for p in files if p.startswith("/etc/uiscsi.secrets/")]
    assert files[path].mode == 0o600 and text(path) == "s3cret-pw\n"
