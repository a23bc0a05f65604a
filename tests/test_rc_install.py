"""`bootkit rc` for real hosts: program paths of the running installation, --no-shim under systemd, the
start timeouts, the udev rule and its contract (rc/udev.py), and `rc uninstall`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rc import render as r
from rc import udev
from tests.test_rc_render import bootkit_rc, rendered

VENV_BIN = Path(sys.executable).parent
UNIT = f"{r.SYSTEMD_DIR}/uiscsid.service"
RELOAD = f"{r.SYSTEMD_DIR}/uiscsi-reload.service"
FSTAB = "/dev/nbd0 /srv/data ext4 _netdev 0 2\n"


@pytest.fixture
def fstab(tmp_path: Path) -> Path:
    (tmp_path / "fstab").write_text(FSTAB)
    return tmp_path / "fstab"


def render(tmp_path: Path, init: str, fstab: Path, *extra: str) -> Path:
    """test_rc_render's `rendered`, into a new directory each time."""
    return rendered(tmp_path / f"r{len(list(tmp_path.iterdir()))}", init, fstab, *extra)


def exec_start(unit: Path) -> str:
    return next(ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart="))


def test_programs_default_to_the_installation_that_renders(tmp_path, fstab):
    out = render(tmp_path, "systemd", fstab)
    assert exec_start(out / UNIT) == (f"ExecStart={VENV_BIN}/bootkit shim run --name uiscsid -- "
                                      f"{VENV_BIN}/uiscsid -d -s /run/uiscsid.sock")
    assert exec_start(out / RELOAD).startswith(f"ExecStart={VENV_BIN}/uiscsictl ")
    text = (render(tmp_path, "sysvinit", fstab) / "etc/init.d/uiscsid").read_text()
    assert f"BOOTKIT={VENV_BIN}/bootkit\nUISCSID={VENV_BIN}/uiscsid\nUISCSICTL={VENV_BIN}/uiscsictl\n" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_rendered_from_this_venv_pass_systemd_analyze_verify_on_this_host(tmp_path):
    out = render(tmp_path, "systemd", Path("/dev/null"))
    units = [str(out / UNIT), str(out / RELOAD)]
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_no_shim_runs_the_daemon_unflagged_under_systemd_too(tmp_path, fstab):
    out = render(tmp_path, "systemd", fstab, "--no-shim")
    assert exec_start(out / UNIT) == f"ExecStart={VENV_BIN}/uiscsid -d --no-flag -s /run/uiscsid.sock"
    assert "shim run" not in (out / UNIT).read_text().split("[Service]", 1)[1]


def test_start_timeouts_fit_a_slow_python_start(tmp_path, fstab):
    out = render(tmp_path, "systemd", fstab, "--set", "start_timeout=200", "--set", "reload_wait=7")
    assert "TimeoutStartSec=200\n" in (out / UNIT).read_text()
    assert "TimeoutStopSec=15\n" in (out / UNIT).read_text()
    # the reload unit starts a Python program too, then waits for the socket, the logins and --wait
    assert "TimeoutStartSec=227\n" in (out / RELOAD).read_text()
    default = render(tmp_path, "systemd", fstab)
    assert "TimeoutStartSec=180\n" in (default / UNIT).read_text()


@pytest.mark.parametrize("init", ["systemd", "sysvinit"])
def test_the_udev_rule_imports_the_daemons_file_and_adds_the_links(tmp_path, fstab, init):
    rules = (render(tmp_path, init, fstab) / r.UDEV_RULES).read_text()
    body = [ln for ln in rules.splitlines() if ln and not ln.startswith("#")]
    assert 'KERNEL!="nbd*", GOTO="uiscsi_end"' in body
    assert f'ENV{{DEVTYPE}}=="disk", IMPORT{{file}}="{udev.INFO_DIR}/%k"' in body
    assert f'ENV{{DEVTYPE}}=="partition", IMPORT{{file}}="{udev.INFO_DIR}/$parent"' in body
    assert 'ENV{DEVTYPE}=="disk", SYMLINK+="disk/by-iscsi/$env{UISCSI_NAME}"' in body
    assert 'ENV{DEVTYPE}=="partition", SYMLINK+="disk/by-iscsi/$env{UISCSI_NAME}-part%n"' in body
    assert body[-1] == 'LABEL="uiscsi_end"'


def test_busybox_and_openbsd_get_no_udev_rule(tmp_path, fstab):
    for init in ("busybox", "openbsd"):
        assert not (render(tmp_path, init, fstab) / r.UDEV_RULES).exists()


def test_the_info_file_names_the_lun_as_udev_will_link_it():
    assert udev.info_text("iqn.2026-11.org.example:data", 1) == (
        "UISCSI_TARGET=iqn.2026-11.org.example:data\nUISCSI_LUN=1\n"
        "UISCSI_NAME=iqn.2026-11.org.example:data-lun1\n")
    assert udev.link_path("iqn.2026-11.org.example:data", 3) == \
        "/dev/disk/by-iscsi/iqn.2026-11.org.example:data-lun3"
    # what udev would not keep in a SYMLINK value is replaced here already, so both agree
    assert udev.link_name("iqn.x:a b/c$", 0) == "iqn.x:a_b_c_-lun0"
    assert udev.info_path("nbd12") == "/run/uiscsid/udev/nbd12"
    for bad in ("../etc", "nbd0/x", "", ".."):
        with pytest.raises(ValueError):
            udev.info_path(bad)


def test_install_then_uninstall_leaves_only_the_admins_files(tmp_path, fstab):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/uiscsi.conf").write_text("# the admin's\n")
    (root / "etc/fstab").write_text(FSTAB)
    res = bootkit_rc("install", "--init", "systemd", "--fstab", str(root / "etc/fstab"), "--root", str(root))
    assert res.returncode == 0, res.stderr
    wants = root / r.SYSTEMD_DIR / "remote-fs.target.wants"
    assert (wants / "uiscsid.service").is_symlink() and (root / r.UDEV_RULES).is_file()
    assert (root / r.SYSTEMD_DIR / "srv-data.mount.d/50-uiscsi.conf").is_file()
    (root / "etc/fstab").write_text("# the iSCSI line is gone since install\n")
    # a file of the same name the admin wrote is not ours to delete
    (root / RELOAD).write_text("[Service]\nExecStart=/bin/true\n")
    res = bootkit_rc("uninstall", "--init", "systemd", "--root", str(root), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["kept"] == [f"{root / RELOAD}: kept, not written by bootkit rc"]
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == ["etc", "etc/fstab", "etc/systemd", "etc/systemd/system",
                    "etc/systemd/system/uiscsi-reload.service", "etc/udev", "etc/udev/rules.d",
                    "etc/uiscsi.conf"]


def test_uninstall_of_nothing_is_not_an_error(tmp_path):
    res = bootkit_rc("uninstall", "--init", "sysvinit", "--root", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and os.listdir(tmp_path) == []
