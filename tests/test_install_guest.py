"""README's "Install on a host", command by command, as an admin types them, in a sysvinit and a systemd
Debian guest against a real tgtd on the host serving a blank LUN.

The commands below are the README's (a unit test checks that each appears there verbatim); the target
block and the fstab line are taken from the README too. Only the example target (192.0.2.10, its IQN)
becomes the host's tgtd. The image comes with the package installed, so the guest first purges it
(its dependencies stay), then runs the README: apt-get install ./build/iscsi-bootkit_*.deb, the config,
the first login, mkfs on the new LUN, the fstab line, the mount, the checks, the removal and the purge.
Each command's output and status are kept in the boot's results dir.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vm.guest_image import FileSpec, make_image
from vm.image_boot import run_image
from vm.scenarios import lun
from vm.targets import Tgt

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE_IQN = "iqn.2026-12.org.example:data"
EXAMPLE_ADDR = "192.0.2.10 port 3260"
IQN = "iqn.2026-12.test.bootkit:install"
LINK = f"/dev/disk/by-iscsi/{EXAMPLE_IQN}-lun1"
ASSUME_YES = 'APT::Get::Assume-Yes "true";\n'  # apt asks before remove; the admin answers yes

INSTALL = "apt-get install ./build/iscsi-bootkit_*.deb"
LOGIN = {"systemd": "systemctl restart uiscsi-reload.service", "sysvinit": "service uiscsid reload"}
MKFS = f"mkfs.ext4 {LINK}"
MOUNT = {"systemd": "systemctl daemon-reload && systemctl start srv-data.mount",
         "sysvinit": "service uiscsid reload"}
STATUS = {"systemd": "systemctl status uiscsid.service uiscsi-reload.service", "sysvinit": "service uiscsid status"}
CHECKS = ("uiscsictl show", "ls -l /dev/disk/by-iscsi/", "findmnt /srv/data")
REMOVE = ("umount /srv/data", "apt-get remove iscsi-bootkit", "apt-get purge iscsi-bootkit")


def section() -> str:
    text = README.read_text()
    start = text.index("## Install on a host")
    return text[start:text.index("\n## ", start + 1)]


def readme_block(after: str) -> str:
    """The indented code block that follows the paragraph holding AFTER, dedented."""
    text = section()
    lines = text[text.index(after):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("    "))
    block = []
    for ln in lines[start:]:
        if ln and not ln.startswith("    "):
            break  # a code block ends at the first line of text
        block.append(ln[4:])
    return "\n".join(block).strip("\n") + "\n"


def steps(init: str) -> list[tuple[str, str]]:
    """(name, shell command) in the README's order; `conf` and `fstab` write what the README shows."""
    conf = readme_block("**The target**")
    fstab = readme_block("**The filesystem**")
    return [("install", INSTALL), ("conf", f"cat > /etc/uiscsi.conf <<'EOF'\n{conf}EOF"),
            ("login", LOGIN[init]), ("mkfs", MKFS), ("fstab", f"cat >> /etc/fstab <<'EOF'\n{fstab}EOF"),
            ("mkdir", "mkdir -p /srv/data"), ("mount", MOUNT[init]),
            *[(f"check{i}", c) for i, c in enumerate(CHECKS)], ("status", STATUS[init]),
            ("umount", REMOVE[0]), ("remove", REMOVE[1]), ("purge", REMOVE[2])]


def guest_script(init: str, port: int) -> str:
    """Purge the image's copy, then each README step; after each, its status and what it left."""
    probe = ("pgrep -x uiscsid >/dev/null && echo daemon; [ -e /etc/uiscsi.conf ] && echo conf; "
             "[ -e /etc/init.d/uiscsid ] && echo script; findmnt -n -o SOURCE /srv/data; "
             "ls /dev/disk/by-iscsi 2>/dev/null")
    out = ["#!/bin/sh", "R=/results", "cd /root", "apt-get purge iscsi-bootkit >$R/prep.out 2>&1",
           "echo $? >$R/prep.rc"]
    for name, cmd in steps(init):
        cmd = cmd.replace(EXAMPLE_ADDR, f"10.0.2.2 port {port}").replace(EXAMPLE_IQN, IQN)
        out += [f"( {cmd}\n) >$R/{name}.out 2>&1 </dev/null", f"echo $? >$R/{name}.rc",
                f"{{ {probe}; }} >$R/{name}.state 2>&1"]
    return "\n".join([*out, "exit 0"]) + "\n"


def test_the_commands_are_the_readmes():
    text = section()
    for init in ("systemd", "sysvinit"):
        for name, cmd in steps(init):
            if name not in ("conf", "fstab"):
                assert cmd in text, cmd
    assert "target data {" in readme_block("**The target**")
    assert re.fullmatch(rf"{re.escape(LINK)}\s+/srv/data\s+ext4\s+_netdev,nofail\s+0\s+2\n",
                        readme_block("**The filesystem**"))


@pytest.mark.vm
@pytest.mark.target
@pytest.mark.parametrize("init", ["sysvinit", "systemd"])
def test_the_readmes_install_commands_work_in_a_guest(init, vm_boot_files, vm_deb, tmp_path):
    blank = tmp_path / "lun.img"
    with open(blank, "wb") as f:
        f.truncate(64 << 20)
    with Tgt.start_retrying(workdir=tmp_path, backing=[blank], iqn=IQN) as tgt:
        img = make_image(tmp_path / "root.img", init, debs=[vm_deb], kernel=vm_boot_files.kernel,
                         files={f"/root/build/{vm_deb.name}": FileSpec(vm_deb.read_bytes()),
                                "/etc/apt/apt.conf.d/90assume-yes": ASSUME_YES})
        r = run_image(img, script=guest_script(init, tgt.port), net=True, timeout=900,
                      results_dir=tmp_path / "results", kernel=vm_boot_files.kernel)
    res = tmp_path / "results"

    def rc(name: str) -> int:
        return int((res / f"{name}.rc").read_text())

    def out(name: str) -> str:
        return (res / f"{name}.out").read_text()

    def state(name: str) -> list[str]:
        return (res / f"{name}.state").read_text().split()

    assert r.exit_code == 0 and r.error is None, r.error
    bad = {n: out(n)[-600:] for n, _ in steps(init) if rc(n) != 0}
    assert not bad, bad
    assert "conf" in state("install") and "daemon" in state("install")
    assert f"{IQN}-lun1" in state("login")  # the link, before any fstab line
    assert any(w.startswith("/dev/nbd") for w in state("mount")), state("mount")  # mounted from the LUN
    assert "logged-in" in out("check0") and IQN in out("check1") and "/srv/data" in out("check2")
    assert "daemon" not in state("remove") and "conf" in state("remove")  # stopped; the config stays
    assert "conf" not in state("purge") and "script" not in state("purge")
    host = lun.check(blank)
    assert host.clean, host.as_dict()  # unmounted before the package went
    print(shlex.join(["results:", str(res)]))
