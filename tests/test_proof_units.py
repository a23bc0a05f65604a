"""The proof's host-side pieces, without a guest: the LUN file and its checks (real e2fsprogs on a regular
file, nothing mounted), the rendered guest dir, the log parsers, the verdicts and the CLI's argument errors.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fstab_tools.fstab import Fstab
from fstab_tools.netfs import is_network
from vm.scenarios import guest, lun
from vm.scenarios.facts import BootFacts
from vm.scenarios.reboot import Cycle, failures, order_of

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lun") / "lun.img"
    assert lun.ensure(path, size_mb=32, payload_mb=2) is True
    return path


def test_a_new_lun_is_formatted_seeded_and_clean_from_the_host(seeded):
    check = lun.check(seeded)
    assert check.clean and check.exit == 0 and not check.needs_recovery
    data = subprocess.run(
        ["debugfs", "-R", "cat /payload.bin", str(seeded)], capture_output=True, check=True
    ).stdout
    assert len(data) == 2 << 20
    assert check.payload_ok is True and check.payload_sha256 == hashlib.sha256(data).hexdigest()


def test_an_existing_ext4_lun_is_reused_untouched(seeded):
    before = seeded.read_bytes()
    assert lun.ensure(seeded, size_mb=32) is False
    assert seeded.read_bytes() == before


def test_a_file_that_holds_no_ext4_is_refused_not_formatted(tmp_path):
    path = tmp_path / "precious.bin"
    path.write_bytes(b"not a filesystem" * 1000)
    with pytest.raises(lun.LunError, match="no ext2/3/4 filesystem"):
        lun.ensure(path)
    assert path.read_bytes() == b"not a filesystem" * 1000


def test_payload_is_not_ok_when_it_is_not_the_one_the_writer_reported(seeded):
    assert lun.check(seeded, expected="0" * 64).payload_ok is False
    assert lun.check(seeded, expected=lun.check(seeded).payload_sha256).payload_ok is True


def test_needs_recovery_on_the_lun_makes_it_not_clean(tmp_path):
    path = tmp_path / "dirty.img"
    lun.ensure(path, size_mb=32, payload_mb=1)
    subprocess.run(
        ["debugfs", "-w", "-R", "feature needs_recovery", str(path)], capture_output=True, check=True
    )
    check = lun.check(path)
    assert check.needs_recovery and not check.clean


def test_recorded_hash_reads_sha256sum_output_only():
    digest = hashlib.sha256(b"x").hexdigest()
    assert lun.recorded_hash(lun.sha256_line(b"x").encode()) == digest
    assert lun.recorded_hash(b"") is None and lun.recorded_hash(b"nonsense payload.bin\n") is None


def test_rendered_guest_dir_names_the_lun_by_its_link_as_a_network_disk(tmp_path):
    plan = guest.GuestPlan(port=40123)
    out = guest.render_dir(plan, tmp_path / "rc")
    fstab = Fstab.load(str(out / "fstab"))
    ((_, entry),) = [(ln, e) for ln, e in fstab.entries]
    assert entry.source == "/dev/disk/by-iscsi/iqn.2026-11.test.bootkit:proof-lun1"
    assert "_netdev" in entry.options and is_network(entry) and entry.passno == 2
    conf = (out / "uiscsi.conf").read_text()
    assert "targetaddr 10.0.2.2 port 40123" in conf and f"targetname {guest.TARGET_IQN}" in conf
    for name in ("rc", "rc.shutdown", "writer.sh", "cycle.sh", "late.sh", "services.sh", "nodisk.sh"):
        assert (out / name).stat().st_mode & 0o111, name
        subprocess.run(["sh", "-n", str(out / name)], check=True)
    rc = (out / "rc").read_text()
    assert "shim run --name uiscsid" in rc and "--no-flag" not in rc.split("start_uiscsid()")[1].split("}")[0]


def test_the_no_shim_guest_runs_the_daemon_unflagged(tmp_path):
    out = guest.render_dir(guest.GuestPlan(port=1, shim=False), tmp_path / "rc")
    body = (out / "rc").read_text().split("start_uiscsid() {")[1].split("\n}")[0]
    assert "--no-flag" in body and "shim run" not in body


def test_guest_scripts_pass_shellcheck():
    scripts = sorted(str(p) for p in guest.SCRIPTS.glob("*.sh"))
    r = subprocess.run(
        ["shellcheck", "-x", "-P", str(guest.SCRIPTS), *scripts], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout


RC_LOG = """rc: 100.000 boot begin
rc: 100.100 step fsck-net begin
rc: 101.500 step fsck-net end rc=1
rc: 101.600 step mount-net begin
rc: 102.000 step mount-net end rc=0
rc: 102.100 step services begin
rc: 102.300 step services end rc=0
rc: 102.400 boot end
garbage line
"""


def test_rc_log_steps_are_parsed_in_order_with_their_exit_codes():
    steps, markers = guest.parse_rc_log(RC_LOG)
    assert [(s.name, s.rc) for s in steps] == [("fsck-net", 1), ("mount-net", 0), ("services", 0)]
    assert markers == {"boot begin": 100.0, "boot end": 102.4}
    assert guest.step(steps, "fsck-net").end == 101.5


def _facts(rc_log: str, services: str) -> BootFacts:
    steps, markers = guest.parse_rc_log(rc_log)
    return BootFacts(
        seconds=1.0,
        error=None,
        exit_code=0,
        steps=steps,
        markers=markers,
        fsck_exit=1,
        fsck_output=[],
        journal_replayed=False,
        mount_exit=0,
        previous_payload="ok",
        wrote_sha256=None,
        services=guest.service_events(services),
    )


def test_order_holds_when_services_start_after_fsck_and_mount():
    f = _facts(RC_LOG, "writer: 102.200 start pid 9\nnodisk: 102.250 start pid 8\n")
    order = order_of(f)
    assert order["ok"] and order["fsck_end"] == 1.5 and order["writer_start"] == 2.2


def test_order_fails_when_a_service_starts_before_the_mount_ends():
    f = _facts(RC_LOG, "writer: 101.800 start pid 9\nnodisk: 102.250 start pid 8\n")
    assert not order_of(f)["ok"]


def test_shutdown_kill_lines_name_the_signals_sent_to_a_pid():
    lines = [
        "bootkit shutdown-kill: 1.0 SIGTERM to 2 process(es): 180 233",
        "bootkit shutdown-kill: 1.5 sync",
        "bootkit shutdown-kill: 2.0 SIGKILL #1 to 1 process(es): 180",
    ]
    assert guest.signalled(lines, 180) == ["SIGTERM", "SIGKILL"]
    assert guest.signalled(lines, 18) == [] and guest.signalled(lines, 233) == ["SIGTERM"]


def _host(clean: bool = True, payload_ok: bool | None = True) -> lun.HostCheck:
    return lun.HostCheck(needs_recovery=not clean, exit=0, payload_ok=payload_ok)


def _cycle(n: int = 1, **kw) -> Cycle:
    base: dict = {
        "cycle": n,
        "seconds": 1.0,
        "error": None,
        "fsck_exit": 0,
        "journal_replayed": False,
        "found_clean": True,
        "mounted": True,
        "payload_ok": True,
        "previous_payload": "ok",
        "wrote_sha256": None,
        "dirty_kb": 100,
        "daemon_signalled": [],
        "umount_exit": 0,
        "umount_io_errors": 0,
        "daemon_stop_exit": 0,
        "host_after": _host(),
    }
    return Cycle(**{**base, **kw})


def test_a_clean_run_has_no_failures():
    assert failures([_cycle(1), _cycle(2)], _host()) == []


def test_a_killed_daemon_and_a_dirty_lun_are_reported_as_failures():
    c = _cycle(
        1, daemon_signalled=["SIGTERM", "SIGKILL"], umount_io_errors=12, host_after=_host(False, False)
    )
    found = " / ".join(failures([c], _host(False)))
    assert "SIGTERM+SIGKILL" in found and "I/O error" in found and "journal recovery" in found
    assert "final" in found


def test_a_replayed_journal_is_not_a_clean_boot_even_with_fsck_exit_0():
    c = _cycle(2, journal_replayed=True, found_clean=False)
    assert not c.clean and "replayed the journal" in failures([c], _host())[0]


def test_a_dirty_lun_left_by_an_earlier_run_is_not_held_against_cycle_1():
    c = _cycle(1, journal_replayed=True, found_clean=False, inherited=True)
    assert failures([c], _host()) == []


def test_cycle_report_is_json_with_the_issue_fields():
    d = json.loads(json.dumps(_cycle().as_dict()))
    assert {"cycle", "clean", "payload_ok", "fsck_exit", "shutdown_clean", "host_after"} <= d.keys()


@pytest.mark.parametrize("args", [["reboot-test", "--cycles", "0"], ["reboot-test", "--payload-mb", "0"]])
def test_cli_refuses_bad_numbers_with_exit_2(args):
    r = subprocess.run(
        [str(VENV_BIN / "bootkit"), "vm", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 2 and "must be" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("action", ["reboot-test", "power-cut-test", "target-down-test"])
def test_cli_help_teaches_with_examples(action):
    r = subprocess.run(
        [str(VENV_BIN / "bootkit"), "vm", action, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and "examples:" in r.stdout and f"bootkit vm {action}" in r.stdout


def test_demo_quotes_the_journal_error_and_counts_the_io_errors():
    from vm.proof import _interesting

    lines = [
        "bootkit umount: unmounting /srv/data",
        "[   89.05] I/O error, dev nbd0, sector 0 op 0x1:(WRITE) flags 0x800",
        "[   89.09] JBD2: I/O error when updating journal superblock for nbd0-8.",
        "[   89.10] EXT4-fs error (device nbd0): ext4_put_super:1305: comm umount: Couldn't clean up the journal",
        "unmounted\t/srv/data",
    ]
    out = _interesting(lines)
    assert out[0] == "bootkit umount: unmounting /srv/data"
    assert out[1].startswith("kernel: 2 I/O error line(s); JBD2") and len(out) == 2


def test_demo_table_shows_the_control_as_dirty():
    from vm.proof import _table

    clean = {"cycles": [_cycle(1).as_dict(), _cycle(2).as_dict()]}
    dirty = {
        "cycles": [
            _cycle(
                1, daemon_signalled=["SIGTERM", "SIGKILL"], umount_io_errors=5, host_after=_host(False)
            ).as_dict()
        ]
    }
    _head, shim, control = _table([("shim on", clean), ("no shim (control)", dirty)])
    assert "2/2" in shim and "clean every time" in shim
    assert "DIRTY 1/1" in control and "uiscsid killed" in control and "5 I/O error" in control


def test_reboot_table_gives_the_verdict_of_the_shim_run_and_of_the_control():
    from vm.scenarios.cli import reboot_table

    base = {"lun_file": "/x/lun.img", "seconds": 100.0, "workdir": "/x", "final": _host().as_dict()}
    clean = reboot_table(
        {
            **base,
            "shim": True,
            "ok": True,
            "failures": [],
            "cycles": [_cycle(1).as_dict(), _cycle(2).as_dict()],
        }
    )
    assert "CLEAN: every cycle" in clean and clean.count("spared") == 2
    dirty_cycle = _cycle(1, daemon_signalled=["SIGTERM", "SIGKILL"], host_after=_host(False))
    control = reboot_table(
        {**base, "shim": False, "ok": True, "failures": ["cycle 1: ..."], "cycles": [dirty_cycle.as_dict()]}
    )
    assert "killed" in control and "DIRTY" in control and "the control FAILED as it must" in control
    useless = reboot_table(
        {**base, "shim": False, "ok": False, "failures": [], "cycles": [_cycle(1).as_dict()]}
    )
    assert "it proves nothing" in useless
