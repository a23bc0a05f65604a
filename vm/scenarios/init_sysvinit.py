"""The proofs' sysvinit guest: Debian bookworm with sysvinit-core as PID 1, booted through Debian's own
/etc/init.d and rcS/rc0/rc6 sequence, with the project installed from the checkout's .deb by apt (its
postinst enables the LSB script /etc/init.d/uiscsid with update-rc.d, as on any host).

The image (vm/guest_image.py) is built once per proof and is the guest's persistent root disk: every boot
of a reboot cycle is one `run_image` call on it. On top of the package it holds:

- /etc/uiscsi.conf naming the host's tgtd, and /etc/fstab with the LUN by its stable name,
  ``/dev/disk/by-iscsi/<iqn>-lun1 /srv/data ext4 defaults,_netdev,nofail 0 2`` (``nofail``: without it
  Debian's checkfs.sh, whose ``fsck -A`` runs before any daemon, stops the boot in a maintenance shell);
- /etc/default/uiscsid with the daemon's attach mode, always explicit (``--attach netlink``, or the old
  ioctls for the control that shows what a SIGSTOP does to them);
- the proofs' guest scripts (vm/guest_proof: writer, nodisk, cycle, late; vm/guest_sysv: busy) under
  /usr/local/lib/bootkit-proof, and two LSB scripts from vm/guest_sysv: bootkit-proof-services (writer
  and nodisk, ``$remote_fs`` like any Debian service that needs a network filesystem) and
  bootkit-proof-logs (saves the daemon's log and state at halt, after uiscsid's stop, before umountfs).
- for the ``shim=False`` control, /etc/init.d/uiscsid rendered with ``--no-shim``: the daemon runs
  ``--no-flag``, so nothing lists it in /run/sendsigs.omit.d and sendsigs' killall5 signals it.

The LSB script prints its step markers (``rc: EPOCH step NAME begin|end rc=N``) on the console, which
sysvinit's rc connects to /dev/console; `boot` copies them into the boot's results dir as rc.log, the
file vm/scenarios/facts.py reads.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from rc import render as rc_render
from vm.guest_image import FileSpec, GuestImage, make_image
from vm.harness import GuestResult, PowerCut
from vm.image_boot import run_image
from vm.kernel import KernelTree
from vm.scenarios import guest

LIB = "/usr/local/lib/bootkit-proof"
HERE = Path(__file__).resolve().parent.parent
SYSV_SCRIPTS = HERE / "guest_sysv"
ROOT_FSTAB = "# the guest's root disk\n/dev/vda / ext4 errors=remount-ro 0 1\n"
SERVICES = ("bootkit-proof-services", "bootkit-proof-logs")  # enabled with update-rc.d
# A control run's orphaned device fails after this, not after the 120 s default (a proof run loses none).
REPLACEMENT_TIMEOUT = 15
PACKAGED = {"bootkit": "/usr/bin/bootkit", "uiscsid": "/usr/bin/uiscsid", "uiscsictl": "/usr/bin/uiscsictl"}
ATTACH_MODES = ("netlink", "ioctl")


@dataclass(frozen=True)
class SysvPlan:
    """One sysvinit guest configuration; ``port`` is the host tgtd's (10.0.2.2:port in the guest)."""

    port: int
    shim: bool = True
    attach: str = "netlink"
    payload_mb: int = 8

    @property
    def proof_plan(self) -> guest.GuestPlan:
        return guest.GuestPlan(port=self.port, shim=self.shim, payload_mb=self.payload_mb)


def attach_option(mode: str) -> str:
    """uiscsid's --attach word for MODE: the ioctl bridge is called `nbd` by daemons that predate `ioctl`."""
    if mode not in ATTACH_MODES:
        raise ValueError(f"attach mode {mode!r}: choose one of {', '.join(ATTACH_MODES)}")
    if mode == "ioctl":
        from initiator.daemon import uiscsid

        choices = next(a.choices for a in uiscsid.build_parser()._actions if a.dest == "attach")
        return "ioctl" if "ioctl" in (choices or ()) else "nbd"
    return mode


def config_text(plan: SysvPlan) -> str:
    text = guest.config_text(plan.proof_plan)
    return text.replace("    lun 1\n", f"    lun 1\n    replacement_timeout {REPLACEMENT_TIMEOUT}\n")


def env_text(plan: SysvPlan) -> str:
    """proof.env for the guest scripts: the packaged programs and the host-like paths."""
    values = {
        "PROOF_DATA": guest.MOUNTPOINT,
        "PROOF_RESULTS": "/results",
        "PROOF_RUN": "/run/proof",
        "PROOF_MB": str(plan.payload_mb),
        "PROOF_BOOTKIT": PACKAGED["bootkit"],
        "PROOF_UISCSICTL": PACKAGED["uiscsictl"],
        "PROOF_SOCK": guest.SOCKET,
        "PROOF_CONFIG": "/etc/uiscsi.conf",
        "PROOF_FSTAB": "/etc/fstab",
        "PROOF_PIDFILE": guest.PIDFILE,
    }
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def no_shim_script() -> str:
    """/etc/init.d/uiscsid as the package has it, but with the daemon started --no-flag (the control)."""
    settings = replace(rc_render.Settings(**PACKAGED), shim=False)
    return rc_render.render("sysvinit", settings).files["etc/init.d/uiscsid"].text


def image_files(plan: SysvPlan) -> dict[str, FileSpec | str]:
    files: dict[str, FileSpec | str] = {
        "/etc/uiscsi.conf": config_text(plan),
        "/etc/fstab": ROOT_FSTAB + guest.fstab_text(plan.proof_plan),
        "/etc/default/uiscsid": f'# bootkit proof: the attach mode, explicit\nUISCSID_OPTS="--attach '
                                f'{attach_option(plan.attach)}"\n',
        f"{LIB}/proof.env": env_text(plan),
    }
    for script in (*guest.SCRIPTS.glob("*.sh"), *SYSV_SCRIPTS.glob("*.sh")):
        files[f"{LIB}/{script.name}"] = FileSpec(script.read_text(), 0o755)
    for name in SERVICES:
        files[f"/etc/init.d/{name}"] = FileSpec((SYSV_SCRIPTS / f"{name}.init").read_text(), 0o755)
    if not plan.shim:
        files["/etc/init.d/uiscsid"] = FileSpec(no_shim_script(), 0o755)
    return files


def build_image(plan: SysvPlan, path: Path, deb: Path, kernel: KernelTree | None = None,
                progress: Callable[[str], None] = lambda _: None) -> GuestImage:
    """The guest's root disk at PATH (see the module docstring)."""
    return make_image(path, "sysvinit", debs=[deb], files=image_files(plan), dirs=[guest.MOUNTPOINT],
                      enable_units=list(SERVICES), kernel=kernel, progress=progress)


def command(*names: str, env: dict[str, str] | None = None) -> str:
    """The boot's command: the named proof scripts in turn, the last one's status is the command's."""
    lines = ["#!/bin/sh"] + [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    lines += [f"{LIB}/{n}" for n in names[:-1]] + [f"exec {LIB}/{names[-1]}"]
    return "\n".join(lines) + "\n"


@dataclass
class SysvRunner:
    """Boots the image once per call; keeps console.log and the rc markers (rc.log) in the results dir."""

    kernel: KernelTree | None = None
    stream: TextIO | None = None
    timeout: float = 600.0

    def boot(self, image: GuestImage, results: Path, script: str, after: str,
             power_cut: PowerCut | None = None) -> GuestResult:
        shutil.rmtree(results, ignore_errors=True)
        results.mkdir(parents=True)
        r = run_image(image, script=script, after=after, net=True, results_dir=results, timeout=self.timeout,
                      power_cut=power_cut, stream=self.stream, kernel=self.kernel)
        (results / "console.log").write_text(r.console + "\n")
        (results / "rc.log").write_text(rc_markers(r.console))
        return r


def rc_markers(console: str) -> str:
    """The LSB script's `rc: ...` marker lines of a console, in order."""
    return "".join(f"{ln.strip()}\n" for ln in console.splitlines() if ln.strip().startswith("rc: "))
