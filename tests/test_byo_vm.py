"""Bring your own setup, for real: reboot-test on systemd against a second target (istgt on the host, not
the built-in tgtd), with the admin's fstab line, xfs and btrfs, through the `bootkit vm` command line.

Budget: three guest boots (xfs: one cycle, its LUN checked by the host through the backing file; btrfs:
one cycle, then a last guest boot that checks the LUN read-only, as for a LUN the host cannot read), plus
an image build per run (cached). Each run writes JUnit, which junitparser must read back with every case
passing; the host's own check of istgt's backing file must agree with the verdict the run gave.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import junitparser
import pytest

from initiator.kernel.udev_info import link_path
from vm.fscheck.host import check, format_seeded

pytestmark = [pytest.mark.vm, pytest.mark.target]

VENV_BIN = Path(sys.executable).parent
CHAP = ("byo-admin", "byo-secret-123")


def bootkit_vm(*args: str, deb: Path, env: dict[str, str] | None = None, timeout: float = 900) -> tuple[int, dict]:
    r = subprocess.run([str(VENV_BIN / "bootkit"), "vm", *args, "--init", "systemd", "--deb", str(deb), "--json"],
                       capture_output=True, text=True, timeout=timeout, check=False,
                       env={**os.environ, **(env or {})})
    print(r.stderr)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    return r.returncode, json.loads(r.stdout)


def junit_cases(path: Path) -> list[tuple[str, str]]:
    """(name, result) of every test case junitparser reads from PATH."""
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = [xml] if isinstance(xml, junitparser.TestSuite) else list(xml)
    return [(c.name, "pass" if c.is_passed else "skip" if c.is_skipped else "fail") for s in suites for c in s]


def the_run_holds(rc: int, rep: dict, junit: Path, fstype: str) -> None:
    assert rc == 0 and rep["ok"] and rep["failures"] == [], rep["failures"]
    assert rep["fstype"] == fstype and rep["lun_source"].startswith("--url iscsi://") and not rep["created"]
    assert rep["lun"]["action"] == "reused", rep["lun"]
    (c,) = rep["cycles"]
    # passno 0, as the admin's line says: no fsck at boot, nothing replayed at the mount
    assert c["mounted"] and c["found_clean"] and not c["fsck_expected"] and not c["journal_replayed"], c
    assert c["previous_payload"] == "ok" and c["shutdown_clean"], c
    cases = junit_cases(junit)
    names = {n for n, _ in cases}
    assert {"cycle 1: clean", "cycle 1: payload", "cycle 1: ordering", "cycle 1: shutdown bound"} <= names, cases
    assert all(result == "pass" for _, result in cases), cases


@pytest.mark.timeout(900)
def test_xfs_on_istgt_with_chap_and_the_admins_options_checked_by_the_host(istgt, vm_deb, tmp_path):
    t = istgt(size_mb=320, chap=CHAP)
    format_seeded(t.backing, "xfs", payload_mb=2)  # what the admin made on their LUN before the test
    link = link_path(t.iqn, 0)
    junit = tmp_path / "xfs.xml"
    rc, rep = bootkit_vm(
        "reboot-test", "--cycles", "1", "--url", t.url(0), "--lun-file", str(t.backing),
        "--fstab-line", f"{link} /srv/db xfs _netdev,noatime,logbsize=256k 0 0",
        "--junit", str(junit), "--workdir", str(tmp_path / "work"), deb=vm_deb,
        env={"LIBISCSI_CHAP_USERNAME": CHAP[0], "LIBISCSI_CHAP_PASSWORD": CHAP[1]})
    the_run_holds(rc, rep, junit, "xfs")
    assert rep["check"].startswith("host: xfs_repair") and rep["lun"]["check"] == "host", rep["check"]
    assert rep["fstab_source"] == link and rep["fstab_line"].split()[2:4] == ["xfs", "_netdev,noatime,logbsize=256k"]
    host = check(t.backing, "xfs", expected=rep["cycles"][0]["wrote_sha256"])
    assert host.clean and not host.needs_recovery and host.payload_ok is True


@pytest.mark.timeout(900)
def test_btrfs_on_istgt_without_a_backing_file_is_checked_by_a_last_guest_boot(istgt, vm_deb, tmp_path):
    t = istgt(size_mb=320)
    format_seeded(t.backing, "btrfs", payload_mb=2)
    link = link_path(t.iqn, 0)
    junit = tmp_path / "btrfs.xml"
    rc, rep = bootkit_vm(
        "reboot-test", "--cycles", "1", "--url", t.url(0),
        "--fstab-line", f"{link} /srv/data btrfs _netdev,compress=zstd 0 0",
        "--junit", str(junit), "--workdir", str(tmp_path / "work"), deb=vm_deb)
    the_run_holds(rc, rep, junit, "btrfs")
    assert rep["check"].startswith("guest: btrfs check") and rep["lun"]["check"] == "guest", rep["check"]
    assert rep["final"]["where"] == "guest" and rep["final"]["clean"], rep["final"]
    # the host, which the run never asked, agrees with the guest's verdict on istgt's backing file
    host = check(t.backing, "btrfs", expected=rep["cycles"][0]["wrote_sha256"])
    assert host.clean and not host.needs_recovery and host.payload_ok is True
