"""Rendering for each init system, checked by the real validators: systemd-analyze verify (with the
real systemd-fstab-generator making the mount units), shellcheck and sh -n; and the order of the steps."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rc import render as r

VENV_BIN = Path(sys.executable).parent
BOOTKIT = str(VENV_BIN / "bootkit")
SYSTEMD_UNITS = Path("/usr/lib/systemd/system")
FSTAB_GENERATOR = Path("/usr/lib/systemd/system-generators/systemd-fstab-generator")

FSTAB = """\
# local
UUID=0a1b2c3d / ext4 defaults 0 1
# iSCSI disks, Linux and OpenBSD spellings
/dev/nbd0 /srv/data ext4 rw,_netdev,nofail 0 2
/dev/nbd1 /srv/my\\040disk ext4 defaults,net 0 2
/dev/nbd2 /srv/cold ext4 ro,_netdev,noauto,x-systemd.device-timeout=10 0 0
# NFS is a network filesystem with no iSCSI disk under it
server:/export /mnt/nfs nfs defaults 0 0
"""

needs = {tool: pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed")
         for tool in ("shellcheck", "systemd-analyze", "systemd-escape")}


def bootkit_rc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BOOTKIT, "rc", *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def fstab(tmp_path: Path) -> Path:
    path = tmp_path / "fstab"
    path.write_text(FSTAB)
    return path


def rendered(tmp_path: Path, init: str, fstab: Path, *extra: str) -> Path:
    out = tmp_path / f"out-{init}"
    res = bootkit_rc("render", "--init", init, "--fstab", str(fstab), "-o", str(out), *extra)
    assert res.returncode == 0, res.stderr
    return out


def shell_ok(path: Path, shell: str = "sh") -> None:
    """sh -n and shellcheck (errors, warnings and style notes all count)."""
    n = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert n.returncode == 0, n.stderr
    sc = subprocess.run(["shellcheck", "-s", shell, "-S", "style", str(path)], capture_output=True, text=True,
                        check=False)
    assert sc.returncode == 0, sc.stdout + sc.stderr


def steps(text: str) -> list[str]:
    """The step names in the order the script runs them at top level (or in a function body)."""
    return re.findall(r"^\s*step ([a-z-]+) ", text, flags=re.MULTILINE)


# --- systemd -------------------------------------------------------------------------------------------


def parse_dump(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd-analyze's debug dump: '-> Unit NAME:' then 'Key: value' lines, per unit."""
    units: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^\t-> Unit (.+):$", line)
        if m:
            current = units.setdefault(m.group(1), {})
            continue
        m = re.match(r"^\t\t([A-Za-z][A-Za-z ]*): (.*)$", line)
        if m and current is not None:
            current.setdefault(m.group(1), []).append(m.group(2).split(" (origin")[0])
    return units


@pytest.fixture
def systemd_root(tmp_path: Path, fstab: Path) -> Path:
    """A scratch root: our units installed, systemd's own units, the generator's mount units for our
    fstab, and the programs ExecStart= names (copies of the venv's console scripts)."""
    if not SYSTEMD_UNITS.is_dir() or not FSTAB_GENERATOR.exists():
        pytest.skip("systemd units or systemd-fstab-generator are missing")
    root = tmp_path / "root"
    res = bootkit_rc("install", "--init", "systemd", "--fstab", str(fstab), "--root", str(root))
    assert res.returncode == 0, res.stderr
    shutil.copytree(SYSTEMD_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    gen = tmp_path / "gen"
    dirs = [gen / "normal", gen / "early", gen / "late"]
    for d in dirs:
        d.mkdir(parents=True)
    subprocess.run([str(FSTAB_GENERATOR), *map(str, dirs)], env={**os.environ, "SYSTEMD_FSTAB": str(fstab)},
                   check=True, capture_output=True, timeout=60)
    for unit in (gen / "normal").glob("*.mount"):
        shutil.copy(unit, root / r.SYSTEMD_DIR / unit.name)
    bindir = root / str(VENV_BIN).lstrip("/")  # the units name this installation's programs
    bindir.mkdir(parents=True)
    for prog in ("bootkit", "uiscsictl", "uiscsid"):
        shutil.copy(VENV_BIN / prog, bindir / prog)
    return root


UNITS = ["uiscsid.service", "uiscsi-reload.service", "uiscsi-logout.service", "srv-data.mount",
         "srv-my\\x20disk.mount", "srv-cold.mount"]


@needs["systemd-analyze"]
def test_systemd_units_pass_systemd_analyze_verify_without_a_warning(systemd_root):
    res = subprocess.run(["systemd-analyze", "verify", f"--root={systemd_root}", "--man=no", *UNITS],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr


@needs["systemd-analyze"]
def test_systemd_orders_daemon_then_logins_then_each_network_mount(systemd_root):
    res = subprocess.run(["systemd-analyze", "verify", f"--root={systemd_root}", "--man=no", *UNITS],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug"}, check=False)
    assert res.returncode == 0, res.stderr
    units = parse_dump(res.stdout)
    daemon, reload = units["uiscsid.service"], units["uiscsi-reload.service"]
    assert daemon["Type"] == ["notify"]
    assert "remote-fs-pre.target" in daemon["Before"]
    assert {"remote-fs-pre.target", "modprobe@nbd.service"} <= set(daemon["Wants"])
    assert {"local-fs.target", "systemd-udevd.service", "modprobe@nbd.service"} <= set(daemon["After"])
    # the daemon needs no network to start: its slow start overlaps the network's; the logins wait for it
    assert "network-online.target" not in daemon["After"]
    assert "shutdown.target" not in daemon.get("Conflicts", [])  # it must outlive the remote unmounts
    assert {"uiscsid.service", "network-online.target"} <= set(reload["After"])
    assert "network-online.target" in reload["Wants"]
    assert "uiscsid.service" in reload["Requires"]
    assert "remote-fs-pre.target" in reload["Before"]
    assert "systemd-udevd.service" in reload["After"]  # udev names the devices reload --wait waits for
    # the logout (its ExecStop) runs in the shutdown transaction, after the mounts' stop jobs (it is before
    # remote-fs-pre.target, as they are after it), while the network and udev are still up
    logout = units["uiscsi-logout.service"]
    assert "shutdown.target" in logout["Conflicts"] and "shutdown.target" in logout["Before"]
    assert "remote-fs-pre.target" in logout["Before"] and "uiscsid.service" in logout["Requires"]
    assert {"uiscsid.service", "network-online.target", "systemd-udevd.service"} <= set(logout["After"])
    assert "shutdown.target" not in reload.get("Conflicts", [])  # the logins stay as they were
    for mount in ("srv-data.mount", "srv-my\\x20disk.mount", "srv-cold.mount"):
        assert "uiscsi-reload.service" in units[mount]["After"], mount
        assert "uiscsi-reload.service" in units[mount]["Wants"], mount
    for mount in ("srv-data.mount", "srv-cold.mount"):  # _netdev: systemd's generator makes them remote
        assert "remote-fs-pre.target" in units[mount]["After"], mount
    # `net` alone means nothing to systemd: the renderer warns (see the next test)
    assert "remote-fs-pre.target" not in units["srv-my\\x20disk.mount"]["After"]


def test_systemd_render_warns_about_net_without_netdev(tmp_path, fstab):
    res = bootkit_rc("render", "--init", "systemd", "--fstab", str(fstab), "-o", str(tmp_path / "o"))
    assert res.returncode == 0
    assert res.stderr == (f"{fstab}:5: /srv/my disk: `net` without `_netdev`: systemd mounts it as a local "
                          "filesystem, before the network; add _netdev for systemd hosts\n")


def test_systemd_exec_start_runs_the_daemon_under_the_shim(tmp_path, fstab):
    out = rendered(tmp_path, "systemd", fstab, "--set", "bootkit=/opt/bk dir/bootkit",
                   "--set", "socket=/run/u%s.sock")
    text = (out / r.SYSTEMD_DIR / "uiscsid.service").read_text()
    assert (f'ExecStart="/opt/bk dir/bootkit" shim run --name uiscsid -- {VENV_BIN}/uiscsid -d '
            '-s /run/u%%s.sock') \
        in text
    reload = (out / r.SYSTEMD_DIR / "uiscsi-reload.service").read_text()
    assert (f"ExecStart={VENV_BIN}/uiscsictl -s /run/u%%s.sock --timeout 20 "
            "reload -f /etc/uiscsi.conf --wait 10") \
        in reload


def test_systemd_logout_unit_logs_out_unused_sessions_when_stopped_within_a_bound(tmp_path, fstab):
    out = rendered(tmp_path, "systemd", fstab, "--set", "ctl_timeout=20", "--set", "stop_timeout=15")
    logout = (out / r.SYSTEMD_DIR / "uiscsi-logout.service").read_text()
    assert f"ExecStop={VENV_BIN}/uiscsictl -s /run/uiscsid.sock --timeout 20 detach --unused\n" in logout
    assert "TimeoutStopSec=35\n" in logout and "ExecStart" not in logout
    assert "ExecStop" not in (out / r.SYSTEMD_DIR / "uiscsi-reload.service").read_text()


@pytest.mark.parametrize("init", ["systemd", "busybox"])
def test_the_attach_setting_reaches_the_daemon_command_line(tmp_path, fstab, init):
    name = "etc/systemd/system/uiscsid.service" if init == "systemd" else "etc/rc"
    starts = re.compile(r"^\s*(?:ExecStart=|\S*\"\$(?:BOOTKIT|UISCSID)\").*$", re.MULTILINE)
    default = starts.findall((rendered(tmp_path / "a", init, fstab) / name).read_text())
    assert default and not any("--attach" in line for line in default), default  # the daemon's default: auto
    ioctl = starts.findall((rendered(tmp_path / "b", init, fstab, "--set", "attach=ioctl") / name).read_text())
    assert any(re.search(r" -d -s \S+ --attach ioctl", line) for line in ioctl), ioctl
    res = bootkit_rc("render", "--init", init, "--fstab", str(fstab), "-o", str(tmp_path / "c"),
                     "--set", "attach=kernel")
    assert res.returncode != 0 and "choose one of auto, netlink, ioctl" in res.stderr, res.stderr


def test_systemd_gives_no_drop_in_to_nfs_or_local_mounts(tmp_path, fstab):
    out = rendered(tmp_path, "systemd", fstab)
    dropins = sorted(p.parent.name for p in (out / r.SYSTEMD_DIR).glob("*.mount.d/50-uiscsi.conf"))
    assert dropins == ["srv-cold.mount.d", "srv-data.mount.d", "srv-my\\x20disk.mount.d"]


def test_systemd_install_enables_the_three_units_under_root(systemd_root):
    wants = systemd_root / r.SYSTEMD_DIR / "remote-fs.target.wants"
    assert os.readlink(wants / "uiscsid.service") == "../uiscsid.service"
    assert os.readlink(wants / "uiscsi-reload.service") == "../uiscsi-reload.service"
    assert os.readlink(wants / "uiscsi-logout.service") == "../uiscsi-logout.service"
    unit = systemd_root / r.SYSTEMD_DIR / "uiscsid.service"
    assert (wants / "uiscsid.service").resolve() == unit.resolve()


PATH_CHARS = st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="/")


@needs["systemd-escape"]
@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=PATH_CHARS, min_size=1, max_size=12), min_size=1, max_size=4))
def test_mount_unit_names_match_systemd_escape(parts):
    path = "/" + "/".join(parts)
    if any(p in (".", "..") for p in parts):
        return  # not a normalized path: systemd-escape refuses it
    ref = subprocess.run(["systemd-escape", "--path", path], capture_output=True, text=True, check=False)
    assert ref.returncode == 0, ref.stderr
    assert r.systemd_escape_path(path) == ref.stdout.strip()


# --- sysvinit ------------------------------------------------------------------------------------------


@needs["shellcheck"]
def test_sysvinit_script_passes_sh_n_and_shellcheck(tmp_path, fstab):
    script = rendered(tmp_path, "sysvinit", fstab) / "etc/init.d/uiscsid"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    shell_ok(script)


def test_sysvinit_script_has_lsb_headers_and_starts_and_stops_in_order(tmp_path, fstab):
    text = (rendered(tmp_path, "sysvinit", fstab) / "etc/init.d/uiscsid").read_text()
    header = text.split("### BEGIN INIT INFO\n", 1)[1].split("### END INIT INFO", 1)[0]
    fields = dict(re.findall(r"^# ([A-Za-z-]+):\s+(.*)$", header, flags=re.MULTILINE))
    assert fields["Provides"] == "uiscsid"
    assert set(fields["Required-Start"].split()) == {"$local_fs", "$network"}
    assert set(fields["Required-Stop"].split()) == {"$local_fs", "$network"}
    # not $remote_fs: insserv.conf makes it hold $local_fs, which the script requires (a loop)
    # started after the network, before mountnfs ($remote_fs); stopped after sendsigs (which spares the
    # daemon), before umountnfs and the network
    assert fields["X-Start-Before"] == "mountnfs" and fields["X-Stop-After"] == "sendsigs"
    assert fields["Should-Stop"] == "umountnfs"
    assert fields["Default-Start"] == "S" and fields["Default-Stop"] == "0 6"
    start = text.split("do_start() {", 1)[1].split("\n}\n", 1)[0]
    reload = text.split("do_reload() {", 1)[1].split("\n}\n", 1)[0]
    stop = text.split("do_stop() {", 1)[1].split("\n}\n", 1)[0]
    assert steps(start) == ["uiscsid"] and "do_reload" in start
    assert steps(reload) == ["reload", "fsck-net", "mount-net"]
    assert steps(stop) == ["umount-net", "uiscsid-stop"]
    # a filesystem still mounted after umount -a -N keeps its daemon
    assert stop.index("_busy") < stop.index("step uiscsid-stop")
    assert 'shim run --name uiscsid -- "$UISCSID" -d -s "$SOCK"' in text


# --- busybox -------------------------------------------------------------------------------------------

BOOT_ORDER = ["local-fsck", "local-mount", "network", "uiscsid", "reload", "fsck-net", "mount-net",
              "services"]
SHUTDOWN_ORDER = ["services-stop", "shutdown-kill", "umount-net", "sync", "local-umount", "uiscsid-stop",
                  "poweroff"]


@needs["shellcheck"]
@pytest.mark.parametrize("variant", [[], ["--no-shim"], ["--set", "poweroff="]])
def test_busybox_rc_and_rc_shutdown_pass_sh_n_and_shellcheck(tmp_path, fstab, variant):
    out = rendered(tmp_path, "busybox", fstab, *variant)
    for name in ("rc", "rc.shutdown"):
        assert stat.S_IMODE((out / "etc" / name).stat().st_mode) == 0o755
        shell_ok(out / "etc" / name)


def test_busybox_boot_follows_openbsd_rc_order(tmp_path, fstab):
    text = (rendered(tmp_path, "busybox", fstab) / "etc/rc").read_text()
    assert steps(text) == BOOT_ORDER
    guard = text.split("step fsck-net", 1)[1].split("step mount-net", 1)[0]
    assert 'if [ "$rc" -ge 4 ]; then' in guard and "exit 1" in guard and "boot stopped" in guard


def test_busybox_shutdown_kills_then_unmounts_and_the_daemon_goes_last(tmp_path, fstab):
    text = (rendered(tmp_path, "busybox", fstab) / "etc/rc.shutdown").read_text()
    assert steps(text) == SHUTDOWN_ORDER
    assert 'step umount-net "$BOOTKIT" umount -a -N --fstab "$FSTAB"' in text


def test_busybox_settings_reach_the_scripts(tmp_path, fstab):
    out = rendered(tmp_path, "busybox", fstab,
                   "--set", "bootkit=/work/venv/bin/bootkit", "--set", "services_start=/etc/rc.local start",
                   "--set", "shutdown_kill_args=--term-wait 0.5 --kill-step 0.1", "--set", "reload_wait=3",
                   "--set", "log=/results/rc log", "--config", "/x/uiscsi.conf")
    boot, down = (out / "etc/rc").read_text(), (out / "etc/rc.shutdown").read_text()
    assert "BOOTKIT=/work/venv/bin/bootkit" in boot and "LOG='/results/rc log'" in boot
    assert "CONFIG=/x/uiscsi.conf" in boot and "reload -f \"$CONFIG\" --wait 3" in boot
    assert "    /etc/rc.local start\n" in boot
    assert 'step shutdown-kill "$BOOTKIT" shutdown-kill --term-wait 0.5 --kill-step 0.1\n' in down


def test_busybox_without_the_shim_runs_the_daemon_unflagged(tmp_path, fstab):
    with_shim = (rendered(tmp_path / "a", "busybox", fstab) / "etc/rc").read_text()
    without = (rendered(tmp_path / "b", "busybox", fstab, "--no-shim") / "etc/rc").read_text()
    assert "shim run --name uiscsid" in with_shim and "--no-flag" not in with_shim
    assert "shim run" not in without and '"$UISCSID" -d --no-flag -s "$SOCK"' in without


def test_busybox_without_poweroff_leaves_it_to_the_caller(tmp_path, fstab):
    text = (rendered(tmp_path, "busybox", fstab, "--set", "poweroff=") / "etc/rc.shutdown").read_text()
    assert steps(text) == SHUTDOWN_ORDER[:-1]


# --- openbsd -------------------------------------------------------------------------------------------


@needs["shellcheck"]
def test_openbsd_rc_d_script_passes_ksh_shellcheck(tmp_path, fstab):
    script = rendered(tmp_path, "openbsd", fstab) / "etc/rc.d/iscsid"
    shell_ok(script, shell="ksh")
    assert "iscsictl -f /etc/iscsi.conf reload" in script.read_text()


def test_openbsd_fstab_gets_net_entries_in_openbsd_form(tmp_path, fstab):
    text = (rendered(tmp_path, "openbsd", fstab) / "etc/fstab.net").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines == [
        "/dev/nbd0 /srv/data ext4 rw,net 0 2",
        "/dev/nbd1 /srv/my\\040disk ext4 rw,net 0 2",
        "/dev/nbd2 /srv/cold ext4 ro,net,noauto 0 0",
        "server:/export /mnt/nfs nfs rw,net 0 0",
    ]


# --- the command line ----------------------------------------------------------------------------------


def test_render_json_lists_the_files(tmp_path, fstab):
    res = bootkit_rc("render", "--init", "busybox", "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert sorted(Path(f).name for f in data["files"]) == ["inittab", "rc", "rc.shutdown"]


@pytest.mark.parametrize("args, message", [
    (["--set", "nosuch=1"], "use KEY=VALUE with KEY one of"),
    (["--set", "reload_wait=soon"], "reload_wait: 'soon' is not a number"),
    (["--set", "shim=maybe"], "not a boolean"),
    (["--fstab", "/nonexistent/fstab"], "/nonexistent/fstab"),
])
def test_bad_settings_and_missing_fstab_are_clear_errors(tmp_path, args, message):
    res = bootkit_rc("render", "--init", "systemd", "-o", str(tmp_path / "o"), *args)
    assert res.returncode == 1
    assert message in res.stderr and "Traceback" not in res.stderr


def test_fstab_parse_errors_are_reported_as_file_line(tmp_path):
    bad = tmp_path / "fstab"
    bad.write_text("/dev/nbd0 /srv/data ext4 _netdev,x 0 2\n/dev/nbd1\n")
    res = bootkit_rc("render", "--init", "systemd", "--fstab", str(bad), "-o", str(tmp_path / "o"))
    assert res.returncode == 0
    assert f"{bad}:2:" in res.stderr
    assert (tmp_path / "o" / r.SYSTEMD_DIR / "srv-data.mount.d/50-uiscsi.conf").exists()


def test_sysvinit_status_tells_running_from_a_stale_pid_file(tmp_path, fstab):
    pidfile = tmp_path / "uiscsid.pid"
    out = rendered(tmp_path, "sysvinit", fstab, "--set", f"pidfile={pidfile}", "--set", "uiscsid=/usr/bin/sleep",
                   "--set", f"log={tmp_path / 'rc.log'}")
    script = str(out / "etc/init.d/uiscsid")

    def status() -> tuple[int, str]:
        res = subprocess.run(["sh", script, "status"], capture_output=True, text=True, timeout=30, check=False)
        return res.returncode, res.stdout.strip()

    assert status() == (3, "uiscsid is not running")
    other = subprocess.Popen(["sh", "-c", "read -r x"], stdin=subprocess.PIPE)  # alive, but not the daemon
    daemon = subprocess.Popen(["sleep", "60"])  # comm matches the configured daemon's file name
    try:
        pidfile.write_text(f"{other.pid}\n")
        assert status() == (1, f"uiscsid is not running, but {pidfile} exists")
        pidfile.write_text(f"{daemon.pid}\n")
        assert status() == (0, f"uiscsid is running (PID {daemon.pid})")
    finally:
        for p in (other, daemon):
            p.kill()
            p.wait()
