"""Boot a QEMU guest that runs this project, run one command in it, and hand back what happened.

The guest runs the *host's* root (read-only 9p + tmpfs overlay), so every host program, the project's venv
and its code are there at their host paths; PATH starts with the bin dir of the venv that launched the
harness (``dirname(sys.executable)``, symlinks not resolved), so ``python3``, ``uiscsid``, ``uiscsictl`` and
``bootkit`` are the project's own. Writes outside the exports below land in guest RAM and vanish at
poweroff. The root share is mounted with cache=loose, which halves Python's start-up under TCG: a host file
changed *during* a boot may not be seen there; hand live files in through ``shares`` (uncached). Each boot
is TCG: ~7-10 s for boot -> short command -> poweroff on an idle host, 15-25 s when the 2 cores are shared.

Use::

    from vm.harness import run_guest, Disk, PowerCut

    r = run_guest(["sh", "-c", "echo hi > /results/out; mkfs.ext4 -q /dev/vda"],
                  disks=[Disk.create(tmp_path / "d.img", 64 << 20)], net=True, timeout=120)
    assert r.exit_code == 0, r.console
    assert (r.results_dir / "out").read_text() == "hi\\n"

Contract, guest side:

- ``command`` (argv list) or ``script`` (text; run directly when it starts with ``#!``, else by /bin/sh)
  runs as root with stdin=/dev/null and stdout/stderr on the console; its exit status is ``exit_code``.
- ``/results`` is a writable 9p export of ``results_dir`` (host); what the guest writes there is on the host
  when ``run_guest`` returns. A new temporary dir is made (and kept) when ``results_dir`` is None.
- ``disks`` (paths or ``Disk``) are /dev/vda, /dev/vdb, ... in order; the same file may be used across
  any number of boots (persistence); ``Disk.create(path, size)`` makes a sparse raw one.
- ``net=True``: eth0 is 10.0.2.15/24, and a host service on 127.0.0.1:PORT is reached at 10.0.2.2:PORT.
  ``hostfwd=[(HOST_PORT, GUEST_PORT), ...]`` (implies net) forwards the host's 127.0.0.1:HOST_PORT to
  the guest's GUEST_PORT over TCP (QEMU user networking), so a host program reaches a guest service.
- ``rc_dir``: a host dir holding the rendered ``rc`` and/or ``rc.shutdown`` (names: ``rc_boot``,
  ``rc_shutdown``). It is *copied* at launch to /bootkit/rc in the guest's RAM, so it may live under the
  host's /tmp and survives ``umount -a``. Order: rc -> command -> rc.shutdown -> sync -> poweroff -f.
  Each runs with no arguments and the same env; a failing rc does not stop the command.
- ``shares={"/guest/path": host_dir}``: extra writable 9p exports (host dirs under /tmp included).
  Outside these, the guest's /tmp and /run are fresh tmpfs: the host's /tmp is *not* visible, except
  that the project's tree and its venv are bound in at their host paths when they live there (a clone
  under /tmp still runs its own code in the guest).
- ``env``: extra variables, applied after the defaults (PATH, HOME=/root, LANG=C.UTF-8,
  PYTHONUNBUFFERED=1, VIRTUAL_ENV); ``cwd`` defaults to the host's cwd ("/" if that is under /tmp).
- ``modprobe`` works in the guest: the cached kernel's modules are at /lib/modules/$(uname -r);
  nbd, ext4 (+crc32c), overlay, 9p, virtio_net and virtio_blk are already loaded. The static busybox is
  at /bootkit/bin/busybox (not on PATH: the host's own tools come first).
- ``power_cut=PowerCut(marker="TEXT", delay=0.0)`` SIGKILLs QEMU ``delay`` s after a console line
  contains TEXT (``marker=None``: ``delay`` s after QEMU starts; ``marker="cmd-begin"``: once the command
  starts). Raw disk files keep exactly what the guest wrote to the device; its unsynced page cache is
  lost, as on real hardware. ``result.power_cut`` says it fired.
- ``timeout`` is a hard wall-clock limit: QEMU is killed and ``timed_out`` is set.
- ``stream`` (a text file, e.g. sys.stderr) gets the console live; ``on_start(proc)`` is called once QEMU
  runs. /results is live both ways (9p, no cache), so a host thread may watch it for requests mid-boot.
- A reboot cycle is several ``run_guest`` calls against the same disk files (each boot is a fresh QEMU);
  after a power cut the next boot sees the disk exactly as the cut left it.

Result: ``GuestResult`` with ``exit_code`` (None when the command never finished), ``console``, ``lines``
(each with ``t``: host seconds since QEMU start), ``events`` (boot/rc-begin/rc-end/cmd-begin/cmd-end/
shutdown-begin/shutdown-end/poweroff, each with guest ``uptime`` and host ``t``), ``results_dir``,
``duration``, ``timed_out``, ``power_cut`` and ``error``. In pytest, use the ``vm_guest`` fixture
(vm/pytest_plugin.py), which calls ``run_guest`` with a results dir under ``tmp_path``.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TextIO

from vm import kernel as kernel_mod
from vm.console import STAGE1_FAILED, ConsoleLine, GuestEvent, LineAssembler, marker_re, parse_event
from vm.initramfs import ensure_initramfs
from vm.qemu import BootSpec, Disk, Export, argv, qemu_binary

__all__ = ["GUEST_RC_DIR", "GUEST_RESULTS", "BootFiles", "Disk", "GuestError", "GuestResult", "PowerCut",
           "prepare", "run_guest", "supervise"]

GUEST_RESULTS = "/results"
GUEST_RC_DIR = "/bootkit/rc"
RESERVED = ("/", "/proc", "/sys", "/dev", "/bootkit", GUEST_RESULTS)
HIDDEN_PREFIXES = ("/tmp", "/run", "/proc", "/sys", "/dev")


class GuestError(RuntimeError):
    """The harness could not boot the guest (no qemu, no kernel) or a checked command failed."""


@dataclass(frozen=True)
class PowerCut:
    """Kill QEMU (SIGKILL) ``delay`` seconds after a console line contains ``marker`` (None: after start)."""

    marker: str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class BootFiles:
    """What QEMU boots: the unpacked kernel package and the initramfs built for it."""

    kernel: kernel_mod.KernelTree
    initramfs: Path


@dataclass
class GuestResult:
    """Everything one boot produced; a failed command is data here, not an exception (see ``check``)."""

    exit_code: int | None
    console: str
    lines: list[ConsoleLine]
    events: list[GuestEvent]
    results_dir: Path
    duration: float
    timed_out: bool = False
    power_cut: bool = False
    error: str | None = None
    qemu_returncode: int | None = None

    def event(self, name: str) -> GuestEvent | None:
        """The first marker event called ``name`` (e.g. "rc-end"), or None."""
        return next((e for e in self.events if e.name == name), None)

    def line_time(self, text: str) -> float | None:
        """Host time (s since QEMU start) of the first console line containing ``text``."""
        return next((ln.t for ln in self.lines if text in ln.text), None)

    def summary(self) -> dict[str, object]:
        """What `bootkit vm run|boot --json` print."""
        return {"exit_code": self.exit_code, "error": self.error, "timed_out": self.timed_out,
                "duration": self.duration, "results_dir": str(self.results_dir),
                "events": [e.__dict__ for e in self.events]}

    def check(self) -> GuestResult:
        """Raise GuestError with the console tail unless the command exited 0."""
        if self.exit_code != 0:
            tail = "\n".join(ln.text for ln in self.lines[-40:])
            why = self.error or f"exit code {self.exit_code}"
            raise GuestError(f"guest command failed: {why}\n--- console tail ---\n{tail}")
        return self


@lru_cache(maxsize=1)
def _prepare_cached() -> BootFiles:
    tree = kernel_mod.ensure_kernel(progress=lambda s: print(f"bootkit vm: {s}", file=sys.stderr))
    return BootFiles(tree, ensure_initramfs(tree))


def prepare() -> BootFiles:
    """The cached kernel (fetched first if the cache is empty) and its initramfs (cached by input hash).

    ``bootkit vm fetch`` is what moves the cache to a newer Debian kernel; a boot never asks apt.
    """
    return _prepare_cached()


def default_venv_bin() -> Path:
    return Path(os.path.dirname(sys.executable))


def hidden_binds(venv_bin: Path) -> list[str]:
    """Host dirs the guest needs that lie under a prefix the guest replaces with a fresh tmpfs (a clone
    under /tmp, as CI may make): the project's own tree and the venv. The guest binds each from the
    read-only host root at the same path, so PATH and the editable install keep working there."""
    project = Path(__file__).resolve().parents[1]
    wanted = [str(project), os.path.abspath(venv_bin.parent)]
    out: list[str] = []
    for path in wanted:
        if any(path.startswith(p + "/") for p in HIDDEN_PREFIXES) and path not in out:
            out.append(path)
    return out


def _default_cwd() -> str:
    cwd = os.getcwd()
    hidden = any(cwd == p or cwd.startswith(p + "/") for p in HIDDEN_PREFIXES)
    return "/" if hidden else cwd


def _check_bind(path: str) -> str:
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise ValueError(f"cannot show {path!r} in the guest: it needs an absolute path without whitespace")
    return path


def _check_guest_path(path: str) -> str:
    if not path.startswith("/") or any(c.isspace() for c in path) or ".." in path.split("/"):
        raise ValueError(f"guest path {path!r} must be absolute, without whitespace or '..'")
    norm = os.path.normpath(path)
    if any(norm == r or norm.startswith(r.rstrip("/") + "/") for r in RESERVED if r != "/") or norm == "/":
        raise ValueError(f"guest path {path!r} is reserved by the harness")
    return norm


def guest_env(venv_bin: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The guest command's environment: the venv first on PATH, then the caller's variables."""
    env = {
        "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
        "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
    }
    if (venv_bin.parent / "pyvenv.cfg").is_file():
        env["VIRTUAL_ENV"] = str(venv_bin.parent)
    for key, value in (extra or {}).items():
        if not key.isidentifier():
            raise ValueError(f"environment variable name {key!r} is not valid")
        env[key] = str(value)
    return env


def writable_exports(results_dir: str | Path | None, shares: Mapping[str, str | Path] | None,
                     ) -> tuple[Path, list[Export], list[tuple[str, str]]]:
    """The results dir (a new temporary one when None) and the shares as 9p exports, with the guest
    paths their tags go on ("TAG GUESTPATH" lines for the guest's stage 1)."""
    results = Path(results_dir) if results_dir is not None else Path(
        tempfile.mkdtemp(prefix="bootkit-vm-results-"))
    results.mkdir(parents=True, exist_ok=True)
    exports = [Export("results", results.resolve(), False)]
    mounts = [("results", GUEST_RESULTS)]
    for i, (gpath, hpath) in enumerate((shares or {}).items()):
        host = Path(hpath).resolve()
        if not host.is_dir():
            raise ValueError(f"share {gpath}: host path {host} is not a directory")
        exports.append(Export(f"share{i}", host, False))
        mounts.append((f"share{i}", _check_guest_path(gpath)))
    return results, exports, mounts


def _write_job(job: Path, *, nonce: str, command: Sequence[str] | None, script: str | None,
               env: dict[str, str], net: bool, cwd: str, rc_dir: Path | None, rc_boot: str,
               rc_shutdown: str, mounts: list[tuple[str, str]], modules_dir: Path,
               binds: Sequence[str] = ()) -> None:
    if (command is None) == (script is None):
        raise ValueError("give exactly one of command (argv list) or script (text)")
    if isinstance(command, str):
        raise TypeError("command must be an argv list; pass shell text as script=")
    body = script if script is not None else "#!/bin/sh\nexec " + shlex.join(list(command or [])) + "\n"
    (job / "cmd").write_text(body)
    (job / "cmd").chmod(0o755)
    rc = rc_sd = ""
    if rc_dir is not None:
        rc_dir = Path(rc_dir)
        if not rc_dir.is_dir():
            raise ValueError(f"rc_dir {rc_dir} is not a directory")
        shutil.copytree(rc_dir, job / "rc", symlinks=True)
        for f in (job / "rc").rglob("*"):
            if f.is_file() and not f.is_symlink() and f.read_bytes()[:2] == b"#!":
                f.chmod(f.stat().st_mode | 0o111)
        rc = f"{GUEST_RC_DIR}/{rc_boot}" if (job / "rc" / rc_boot).is_file() else ""
        rc_sd = f"{GUEST_RC_DIR}/{rc_shutdown}" if (job / "rc" / rc_shutdown).is_file() else ""
        if not rc and not rc_sd:
            raise ValueError(f"rc_dir {rc_dir} holds neither {rc_boot!r} nor {rc_shutdown!r}")
    config = {"BOOTKIT_NONCE": nonce, "BOOTKIT_NET": "1" if net else "0", "BOOTKIT_CWD": cwd,
              "BOOTKIT_RC": rc, "BOOTKIT_RC_SHUTDOWN": rc_sd}
    (job / "config").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in config.items()))
    (job / "env").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    (job / "mounts").write_text("".join(f"{tag} {path}\n" for tag, path in mounts))
    (job / "modules-dir").write_text(f"{modules_dir}\n")
    (job / "binds").write_text("".join(f"{_check_bind(path)}\n" for path in binds))


@dataclass
class _Run:
    """State shared between the console reader thread and the waiting thread."""

    proc: subprocess.Popen[bytes]
    start: float
    pattern: object
    stream: TextIO | None
    power_cut: PowerCut | None
    lines: list[ConsoleLine] = field(default_factory=list)
    events: list[GuestEvent] = field(default_factory=list)
    cut_fired: threading.Event = field(default_factory=threading.Event)
    timer: threading.Timer | None = None

    def cut(self) -> None:
        if self.proc.poll() is None:  # a guest that already powered off was not cut
            self.cut_fired.set()
            self.proc.kill()

    def arm(self, delay: float) -> None:
        if self.timer is None:
            self.timer = threading.Timer(max(0.0, delay), self.cut)
            self.timer.daemon = True
            self.timer.start()

    def take(self, text: str) -> None:
        line = ConsoleLine(round(time.monotonic() - self.start, 3), text)
        self.lines.append(line)
        event = parse_event(self.pattern, line)  # type: ignore[arg-type]
        if event is not None:
            self.events.append(event)
        pc = self.power_cut
        if pc is not None and pc.marker is not None and pc.marker in text:
            self.arm(pc.delay)

    def read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        asm = LineAssembler()
        while chunk := os.read(fd, 65536):
            if self.stream is not None:
                self.stream.write(chunk.decode("utf-8", "replace").replace("\r", ""))
                self.stream.flush()
            for text in asm.feed(chunk):
                self.take(text)
        for text in asm.flush():
            self.take(text)


def run_guest(command: Sequence[str] | None = None, *, script: str | None = None,
              disks: Sequence[Disk | str | Path] = (), net: bool = False,
              hostfwd: Sequence[tuple[int, int]] = (),
              rc_dir: str | Path | None = None, rc_boot: str = "rc", rc_shutdown: str = "rc.shutdown",
              env: Mapping[str, str] | None = None, shares: Mapping[str, str | Path] | None = None,
              results_dir: str | Path | None = None, power_cut: PowerCut | None = None,
              timeout: float = 180.0, mem: int = 1024, cpus: int = 2, cwd: str | None = None,
              venv_bin: str | Path | None = None, stream: TextIO | None = None,
              boot_files: BootFiles | None = None, kernel_quiet: bool = True,
              on_start: Callable[[subprocess.Popen[bytes]], None] | None = None) -> GuestResult:
    """Boot one guest, run ``command`` or ``script`` in it, power off, and return a GuestResult.

    See the module docstring for the guest-side contract. Raises GuestError when QEMU or the kernel is
    missing and ValueError for bad arguments; a failing guest command is a result, not an exception.
    """
    qemu = qemu_binary()
    if qemu is None:
        raise GuestError("qemu-system-x86_64 not found: install qemu-system-x86")
    try:
        files = boot_files or prepare()
    except (kernel_mod.KernelFetchError, OSError, RuntimeError) as exc:
        raise GuestError(f"cannot prepare the guest kernel: {exc}") from exc
    results, exports, mounts = writable_exports(results_dir, shares)
    nonce = secrets.token_hex(6)
    net = net or bool(hostfwd)
    job = Path(tempfile.mkdtemp(prefix="bootkit-vm-job-"))
    try:
        vbin = Path(venv_bin) if venv_bin else default_venv_bin()
        _write_job(job, nonce=nonce, command=command, script=script, env=guest_env(vbin, env), net=net,
                   cwd=cwd or _default_cwd(), rc_dir=Path(rc_dir) if rc_dir else None, rc_boot=rc_boot,
                   rc_shutdown=rc_shutdown, mounts=mounts, modules_dir=files.kernel.modules_dir,
                   binds=hidden_binds(vbin))
        disk_list = tuple(Disk.of(d) for d in disks)
        for disk in disk_list:
            if not disk.path.is_file():
                raise ValueError(f"disk {disk.path} does not exist (Disk.create(path, size) makes one)")
        spec = BootSpec(files.kernel.vmlinuz, files.initramfs, job, mem=mem, cpus=cpus, disks=disk_list,
                        net=net, hostfwd=tuple(hostfwd), exports=tuple(exports), kernel_quiet=kernel_quiet)
        return supervise(argv(spec, qemu), nonce, results, power_cut, timeout, stream, on_start)
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _die_with_parent(args: list[str]) -> list[str]:
    """Have QEMU SIGKILLed when the harness dies (setpriv sets PR_SET_PDEATHSIG, which survives exec)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *args] if setpriv else args


def supervise(args: list[str], nonce: str, results: Path, power_cut: PowerCut | None = None,
              timeout: float = 180.0, stream: TextIO | None = None,
              on_start: Callable[[subprocess.Popen[bytes]], None] | None = None) -> GuestResult:
    """Run ``args`` (QEMU) with the console on its stdout: collect lines and events, apply the power cut
    and the hard timeout, and build the GuestResult. Any console-producing program works, which is how
    the supervision rules are tested without a boot.
    """
    start = time.monotonic()
    proc = subprocess.Popen(_die_with_parent(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    run = _Run(proc, start, marker_re(nonce), stream, power_cut)
    reader = threading.Thread(target=run.read, name="bootkit-vm-console", daemon=True)
    reader.start()
    timed_out = False
    try:
        if on_start is not None:
            on_start(proc)
        if power_cut is not None and power_cut.marker is None:
            run.arm(power_cut.delay)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = not run.cut_fired.is_set()
            proc.kill()
            proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if run.timer is not None:
            run.timer.cancel()
        reader.join(timeout=10)
    end = next((e for e in run.events if e.name == "cmd-end"), None)
    result = GuestResult(
        exit_code=end.status if end else None, console="\n".join(ln.text for ln in run.lines),
        lines=run.lines, events=run.events, results_dir=results, duration=round(time.monotonic() - start, 3),
        timed_out=timed_out, power_cut=run.cut_fired.is_set(), qemu_returncode=proc.returncode)
    result.error = _diagnose(result, timeout)
    return result


def _diagnose(r: GuestResult, timeout: float) -> str | None:
    if r.timed_out:
        return f"timed out after {timeout:g} s"
    if r.power_cut:
        return "power cut" if r.exit_code is None else None
    failed = next((ln.text for ln in r.lines if STAGE1_FAILED in ln.text), None)
    if failed:
        return failed.strip()
    if r.exit_code is None:
        return f"qemu exited ({r.qemu_returncode}) before the command finished"
    if r.event("poweroff") is None:
        return "the guest did not reach poweroff"
    return None
