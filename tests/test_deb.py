"""The Debian package built from the tree (`make deb`): lintian, its rendered units under systemd-analyze
verify, and `apt-get install ./iscsi-bootkit_*.deb` into a fresh bookworm root (vm/image.py's minbase:
apt and dpkg only, the dependencies' archives downloaded), then purge, which must leave nothing behind."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vm.deb import depends
from vm.image import ensure_base
from vm.kernel import ensure_kernel

VENV_BIN = Path(sys.executable).parent
OUR_PACKAGES = ("initiator", "fstab_tools", "iscsid_shim", "rc", "vm", "bootkit")
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}


def run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=ENV)


def in_root(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return run("chroot", str(root), *argv)


def test_lintian_reports_no_errors(vm_deb):
    changes = next(vm_deb.parent.glob("iscsi-bootkit_*.changes"))
    res = run("lintian", "--pedantic", str(changes), timeout=600)
    tags = [ln for ln in res.stdout.splitlines() if re.match(r"^[EWIPX]: ", ln)]
    print("\n".join(tags))  # the warnings are for the report
    assert not [t for t in tags if t.startswith("E: ")], res.stdout
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_package_ships_programs_units_init_script_udev_rule_conffile_and_man_pages(vm_deb):
    listing = {ln.split()[5] for ln in run("dpkg-deb", "-c", str(vm_deb)).stdout.splitlines()}
    for path in ("/usr/bin/uiscsid", "/usr/bin/uiscsictl", "/usr/bin/bootkit",
                 "/lib/systemd/system/uiscsid.service", "/lib/systemd/system/uiscsi-reload.service",
                 "/lib/systemd/system/uiscsi-logout.service",
                 "/etc/init.d/uiscsid", "/lib/udev/rules.d/61-uiscsi.rules", "/etc/uiscsi.conf",
                 "/usr/share/man/man8/uiscsid.8.gz", "/usr/share/man/man8/uiscsictl.8.gz",
                 "/usr/share/man/man8/bootkit.8.gz",
                 "/usr/lib/python3/dist-packages/rc/templates/udev/uiscsi.rules.j2"):
        assert "." + path in listing, path
    info = run("dpkg-deb", "-f", str(vm_deb), "Architecture", "Depends").stdout
    assert "Architecture: all" in info
    for dep in ("python3-psutil", "python3-jinja2", "python3-crc32c", "python3-setproctitle", "python3-uvloop"):
        assert dep in info
    conffiles = run("dpkg-deb", "--info", str(vm_deb), "conffiles").stdout.split()
    assert sorted(conffiles) == ["/etc/init.d/uiscsid", "/etc/uiscsi.conf"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_packaged_units_pass_systemd_analyze_verify(vm_deb, tmp_path):
    root = tmp_path / "root"
    assert run("dpkg-deb", "-x", str(vm_deb), str(root)).returncode == 0
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "lib/systemd/system"
    text = (units / "uiscsid.service").read_text()
    assert "ExecStart=/usr/bin/bootkit shim run --name uiscsid -- /usr/bin/uiscsid -d" in text
    res = run("systemd-analyze", "verify", f"--root={root}", "--man=no", "uiscsid.service",
              "uiscsi-reload.service", "uiscsi-logout.service")
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_the_packaged_lsb_script_runs_the_installed_programs_on_the_hosts_fstab(vm_deb, tmp_path):
    """The script is rendered at build time: its paths must be the installed host's, not the build's."""
    assert run("dpkg-deb", "-x", str(vm_deb), str(tmp_path)).returncode == 0
    text = (tmp_path / "etc/init.d/uiscsid").read_text()
    for line in ("BOOTKIT=/usr/bin/bootkit", "UISCSID=/usr/bin/uiscsid", "UISCSICTL=/usr/bin/uiscsictl",
                 "FSTAB=/etc/fstab", "CONFIG=/etc/uiscsi.conf"):
        assert f"\n{line}\n" in text, line


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_apt_installs_it_into_a_fresh_root_pulling_its_dependencies_and_purge_leaves_nothing(vm_deb, tmp_path):
    deps = depends(vm_deb)
    base = ensure_base("minbase", ensure_kernel(), deps)
    root = tmp_path / "root"
    assert run("cp", "-a", str(base.root), str(root)).returncode == 0
    assert in_root(root, "dpkg", "-s", "python3-uvloop").returncode != 0  # fresh: not there yet
    shutil.copy(vm_deb, root / "tmp" / vm_deb.name)
    res = in_root(root, "apt-get", "install", "-y", "--no-install-recommends", f"/tmp/{vm_deb.name}")
    assert res.returncode == 0, res.stdout + res.stderr
    (root / "tmp" / vm_deb.name).unlink()
    for dep in [d for d in deps if d != "python3"]:
        assert in_root(root, "dpkg", "-s", dep).returncode == 0, dep
    res = in_root(root, "uiscsid", "--help")
    assert res.returncode == 0 and "usage: uiscsid" in res.stdout, res.stderr
    # enabled as the postinst enables it on any host: the units (systemd) and the LSB script (sysvinit)
    wants = root / "etc/systemd/system/remote-fs.target.wants"
    assert {p.name for p in wants.iterdir()} == {"uiscsid.service", "uiscsi-reload.service",
                                                 "uiscsi-logout.service"}
    assert [p.name for p in (root / "etc/rcS.d").glob("S*uiscsid")]
    assert [p.name for p in (root / "etc/rc0.d").glob("K*uiscsid")]
    # `bootkit rc uninstall` will not take what the package owns
    res = subprocess.run([str(VENV_BIN / "bootkit"), "rc", "uninstall", "--init", "sysvinit", "--root", str(root)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and (root / "etc/init.d/uiscsid").is_file(), res.stderr
    assert "owned by the Debian package iscsi-bootkit" in res.stderr

    assert purge(root) == []
    # Again, now that the dependencies stay installed: whatever install adds, purge takes away again
    after_first = files(root)
    shutil.copy(vm_deb, root / "tmp" / vm_deb.name)
    res = in_root(root, "apt-get", "install", "-y", "--no-install-recommends", f"/tmp/{vm_deb.name}")
    assert res.returncode == 0, res.stdout + res.stderr
    (root / "tmp" / vm_deb.name).unlink()
    assert purge(root) == []
    state = ("var/lib/dpkg/", "var/lib/apt/", "var/log/", "var/cache/")
    assert sorted(p for p in files(root) ^ after_first if not p.startswith(state)) == []


def purge(root: Path) -> list[str]:
    """apt-get purge iscsi-bootkit; returns the paths that still name the project."""
    res = in_root(root, "apt-get", "purge", "-y", "iscsi-bootkit")
    assert res.returncode == 0, res.stdout + res.stderr
    return sorted(p for p in files(root) if re.search(r"uiscsi|iscsi.bootkit|bootkit", p)
                  or any(p.startswith(f"usr/lib/python3/dist-packages/{pkg}") for pkg in OUR_PACKAGES))
