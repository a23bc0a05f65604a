"""Boot a Debian guest image (vm/guest_image.py) under QEMU, run one command once its boot is done, and
hand back the same GuestResult as the host-root guest (vm/harness.py).

The image is /dev/vda, read-write: every boot of a reboot cycle is one ``run_image`` call on the same file
(QEMU runs with -no-reboot, so a guest reboot ends the call), and a power cut leaves the disk as the guest
last wrote it. The guest never sees the host's root: only its own disk, the /results export and the
``shares`` given. Its init is the image's own (systemd, or sysvinit's /sbin/init), reached through a small
initramfs that mounts the disk read-only and switch_roots, as initramfs-tools does.

Use::

    from vm.guest_image import make_image
    from vm.image_boot import run_image

    img = make_image(tmp_path / "root.img", "systemd", debs=[deb], dirs=["/srv/out"])
    r = run_image(img, script="systemd-detect-virt > /results/virt", shares={"/srv/out": out_dir})
    assert r.exit_code == 0 and (r.results_dir / "virt").read_text() == "qemu\\n"

Contract, guest side:

- ``command`` (argv) or ``script`` (text, run directly when it starts with ``#!``, else by /bin/sh) runs as
  root once the boot is done: after multi-user.target (bootkit-vm-job.service, Type=simple, so it may
  itself wait for ``systemctl is-system-running --wait``), or last in the sysvinit runlevel. Its output
  goes to the console; its exit status is ``exit_code``. Then ``after`` happens: "poweroff" (default),
  "reboot" (also ends the QEMU run) or "none" (the command shuts the guest down itself, e.g. with
  ``systemctl reboot`` to prove a shutdown path). With neither command nor script the guest just boots,
  and ``after`` does not apply: the run ends when the guest powers off by itself or at ``timeout``.
- Markers: the initramfs prints ``boot``; the runner ``cmd-begin`` and ``cmd-end STATUS``; anything in the
  guest may print more with ``bootkit-vm-mark EVENT [STATUS]`` (e.g. from a unit's ExecStop), and each
  becomes a GuestEvent with the guest's uptime and the host time. ``poweroff`` or ``reboot`` (uptime -1)
  is added when the kernel reports the power-off or the restart: either ends the QEMU run.
- ``/results`` is a writable 9p export of ``results_dir``; ``shares={"/guest/path": host_dir}`` mounts more
  (the mount points must exist in the image: ``make_image(dirs=...)``), before init starts.
- ``net=True``: QEMU user networking; the image configures eth0 as 10.0.2.15/24 with the gateway
  10.0.2.2, which reaches the host's 127.0.0.1.
- ``init``: another init to switch_root to (default: the image's own).
- ``power_cut``, ``timeout``, ``stream``, ``on_start``: as for run_guest.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from vm import kernel as kernel_mod
from vm.console import GuestEvent
from vm.guest_image import GuestImage
from vm.harness import GuestError, GuestResult, PowerCut, supervise, writable_exports
from vm.initramfs import ensure_initramfs
from vm.qemu import BootSpec, Disk, Export, argv, qemu_binary

AFTER = ("poweroff", "reboot", "none")
# What the kernel prints (at KERN_EMERG, so even with `quiet`) as its very last words.
KERNEL_END = {"reboot: Power down": "poweroff", "reboot: Restarting system": "reboot"}
# systemd's console: its status lines without colour; journald's too when asked for.
SYSTEMD_ARGS = ("systemd.show_status=1", "systemd.log_color=0")


def _job(job: Path, nonce: str, command: Sequence[str] | None, script: str | None, after: str,
         mounts: list[tuple[str, str]]) -> None:
    if command is not None and script is not None:
        raise ValueError("give at most one of command (argv list) or script (text)")
    if isinstance(command, str):
        raise TypeError("command must be an argv list; pass shell text as script=")
    if after not in AFTER:
        raise ValueError(f"after={after!r}: choose one of {', '.join(AFTER)}")
    if command is not None or script is not None:
        body = script if script is not None else "#!/bin/sh\nexec " + shlex.join(list(command or [])) + "\n"
        (job / "cmd").write_text(body)
        (job / "cmd").chmod(0o755)
    (job / "config").write_text(f"BOOTKIT_NONCE={nonce}\nBOOTKIT_AFTER={after}\n")
    (job / "mounts").write_text("".join(f"{tag} {path}\n" for tag, path in mounts))


def run_image(image: GuestImage | str | Path, command: Sequence[str] | None = None, *,
              script: str | None = None, after: str = "poweroff", init: str | None = None,
              disks: Sequence[Disk | str | Path] = (), net: bool = False,
              shares: Mapping[str, str | Path] | None = None, results_dir: str | Path | None = None,
              power_cut: PowerCut | None = None, timeout: float = 300.0, mem: int = 1024, cpus: int = 2,
              stream: TextIO | None = None, kernel_args: Sequence[str] = (), journal_to_console: bool = False,
              kernel_quiet: bool = True, kernel: kernel_mod.KernelTree | None = None,
              on_start: Callable[[subprocess.Popen[bytes]], None] | None = None) -> GuestResult:
    """Boot ``image`` once (see the module docstring); extra ``disks`` are /dev/vdb, /dev/vdc, ...

    Raises GuestError when QEMU or the kernel is missing and ValueError for bad arguments; what happens
    in the guest is the result, not an exception.
    """
    qemu = qemu_binary()
    if qemu is None:
        raise GuestError("qemu-system-x86_64 not found: install qemu-system-x86")
    img = image if isinstance(image, GuestImage) else None
    path = Path(img.path if img else image)
    if not path.is_file():
        raise ValueError(f"image {path} does not exist (vm.guest_image.make_image builds one)")
    try:
        tree = kernel or kernel_mod.ensure_kernel(lambda s: print(f"bootkit vm: {s}", file=sys.stderr))
        initramfs = ensure_initramfs(tree, "image")
    except (kernel_mod.KernelFetchError, OSError, RuntimeError) as exc:
        raise GuestError(f"cannot prepare the guest kernel: {exc}") from exc
    if img is not None and img.kernel_release != tree.release:
        raise GuestError(f"{path} holds the modules of {img.kernel_release}, the cached kernel is "
                         f"{tree.release}: build the image again")
    results, exports, mounts = writable_exports(results_dir, shares)
    nonce = secrets.token_hex(6)
    job = Path(tempfile.mkdtemp(prefix="bootkit-vm-job-"))
    try:
        _job(job, nonce, command, script, after, mounts)
        exports.append(Export("job", job, True))
        words = ["root=/dev/vda", "ro", "net.ifnames=0", f"bootkit.nonce={nonce}", *SYSTEMD_ARGS]
        if init or (img and img.init):
            words.append(f"init={init or img.init}")  # type: ignore[union-attr]
        if journal_to_console:
            words.append("systemd.journald.forward_to_console=1")
        if not net:  # no NIC: network-online would wait for one until its 2 min timeout
            words.append("systemd.mask=systemd-networkd-wait-online.service")
        extra = tuple(Disk.of(d) for d in disks)
        for disk in extra:
            if not disk.path.is_file():
                raise ValueError(f"disk {disk.path} does not exist (Disk.create(path, size) makes one)")
        spec = BootSpec(tree.vmlinuz, initramfs, None, mem=mem, cpus=cpus, disks=(Disk(path), *extra), net=net,
                        exports=tuple(exports), kernel_quiet=kernel_quiet,
                        extra_cmdline=(*words, *kernel_args), host_root=False)
        result = supervise(argv(spec, qemu), nonce, results, power_cut, timeout, stream, on_start)
    finally:
        shutil.rmtree(job, ignore_errors=True)
    _finish(result, has_command=command is not None or script is not None)
    return result


def _finish(r: GuestResult, has_command: bool) -> None:
    """Add the kernel's last word as a ``poweroff`` or ``reboot`` event (uptime -1: the guest printed no
    uptime) and say what went wrong, if anything."""
    end = next((ln for ln in reversed(r.lines) if any(k in ln.text for k in KERNEL_END)), None)
    if end is not None:
        name = next(v for k, v in KERNEL_END.items() if k in end.text)
        if r.event(name) is None:
            r.events.append(GuestEvent(name, -1.0, end.t))
    if r.timed_out or r.power_cut:
        return  # supervise said it already
    if r.error and "stage1 failed" in r.error:
        return
    if has_command and r.exit_code is None:
        r.error = f"qemu exited ({r.qemu_returncode}) before the command finished"
    elif end is None:
        r.error = "the guest did not power off or reboot"
    else:
        r.error = None
