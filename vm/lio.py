"""LIO, the Linux kernel's iSCSI target, as a test peer beside tgtd and istgt (vm/targets.py).

The host has no kernel modules, so LIO runs in one QEMU guest (TCG, the usual harness: host root over 9p)
and the host reaches it through QEMU's user-net port forwarding: ``127.0.0.1:PORT`` -> guest 3260. One
guest serves a whole test session (boot + module load about 5-10 s); `Lio.start(guest, ...)` then resets
and reconfigures it in a fraction of a second::

    with LioGuest.boot(workdir) as g:                  # or Lio.start() alone: it boots its own guest
        t = Lio.start(g, chap=("iuser", "isecret"), params={"MaxConnections": "4"})
        t.url()             # iscsi://127.0.0.1:PORT/iqn.2026-12.bootkit:lio/0   (the disk is LUN 0)
        t.chap_algorithms() # [8]: the CHAP_A LIO chose at each login since the reset (its dynamic debug)

The LUN is an iblock backstore on the guest's /dev/vda, a raw image on the host (`Lio.backing[0]`), so
the host reads what LIO wrote with no initiator in between.

LIO is configured through configfs directly, with shell writes (guest_lio/admin.sh runs them): targetcli
refuses IQNs with no dot after the date (``iqn.2026-12.x:y``) and needs D-Bus. Facts this relies on (kernel
6.1, checked in the guest; see ../shared/TARGETS.md):

- ``mkdir /sys/kernel/config/target/iscsi`` is what loads the fabric; there is no default portal.
- CHAP names and secrets are written with ``printf %s``: a trailing newline would become part of them.
  A value starting with ``NULL`` unsets it (so no secret may start so).
- The effective ErrorRecoveryLevel is the node ACL's ``attrib/default_erl``, copied from the TPG's
  ``attrib/default_erl`` when a dynamic ACL is made at login; ``param/ErrorRecoveryLevel`` is overridden.
  `Lio.update("ErrorRecoveryLevel", N)` therefore writes all three.
- ``generate_node_acls=1`` forces ``cache_dynamic_acls=1`` (writing 0 is ignored): LIO keeps a dynamic ACL
  per initiator name for the TPG's life, with the node attributes (default_erl, queue depth) of its first
  login. CHAP and ``param/`` values are read at each login. The reset drops the cached ACLs of the names
  LIO logged since the last reset (``Dynamic ACL NAME is trying to connect``): an explicit ACL made and
  removed under that name replaces the cached one, and the next login makes a fresh one.
- Writing 0 to the TPG's ``enable`` releases every session (force); 1 lets logins in again.
- With ``authentication=0``, LIO answers ``AuthMethod=CHAP`` to an offer of ``CHAP,None`` and yet leaves
  the security stage at once, without the exchange.
"""

from __future__ import annotations

import itertools
import re
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from vm.harness import BootFiles, Disk, GuestResult, run_guest
from vm.targets import free_port

IQN = "iqn.2026-12.bootkit:lio"  # no dot after the date on purpose: targetcli refuses it, configfs does not
GUEST_PORT = 3260
TARGET = "/sys/kernel/config/target"
BACKSTORE = f"{TARGET}/core/iblock_0/disk0"
GUEST_SCRIPT = Path(__file__).with_name("guest_lio") / "admin.sh"
# LIO's own defaults for every parameter a test may change; a reset writes them all back.
DEFAULT_PARAMS = {
    "HeaderDigest": "CRC32C,None", "DataDigest": "CRC32C,None", "MaxConnections": "1",
    "ErrorRecoveryLevel": "0", "InitialR2T": "Yes", "ImmediateData": "Yes", "FirstBurstLength": "65536",
    "MaxBurstLength": "262144", "MaxRecvDataSegmentLength": "8192", "MaxXmitDataSegmentLength": "262144",
    "MaxOutstandingR2T": "1", "DefaultTime2Wait": "2", "DefaultTime2Retain": "20",
}
AUTH_FILES = ("userid", "password", "userid_mutual", "password_mutual")
# Dynamic debug: the CHAP choice ("Got CHAP_A=N"), every SNACK received ("Got ISCSI_INIT_SNACK, ... Type"),
# SNACK handling, and "Dynamic ACL NAME is trying to connect" (see reset_script).
DEBUG = ("file iscsi_target_auth.c", "func iscsit_handle_snack", "file iscsi_target_erl1.c",
         "file iscsi_target_nego.c")
_CHAP_A = re.compile(r"\[server\] Got CHAP_A=(\d+)")


class LioError(RuntimeError):
    """The LIO guest did not boot, died, or a configuration step failed (the message says which)."""


# ------------------------------------------------------------------ configfs, as shell text (pure)

def tpg(iqn: str) -> str:
    return f"{TARGET}/iscsi/{iqn}/tpgt_1"


def write(path: str, value: str) -> str:
    """One configfs write with no trailing newline (LIO would keep it as part of the value)."""
    if "\n" in value or "\0" in value:
        raise ValueError(f"{path}: a configfs value cannot hold a newline or NUL")
    return f"printf %s {shlex.quote(value)} > {shlex.quote(path)}"


def _credential(what: str, value: str) -> str:
    if not value or value.startswith("NULL") or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r}: LIO needs a non-empty value without whitespace, "
                         "not starting with NULL (that unsets it)")
    return value


def setup_script(iqn: str = IQN, device: str = "/dev/vda") -> str:
    """Backstore on ``device``, target, TPG 1 with LUN 0 and a portal on every address, dynamic ACLs."""
    t = tpg(iqn)
    lines = [f"mkdir -p {BACKSTORE} {shlex.quote(t)}/lun/lun_0",
             write(f"{BACKSTORE}/control", f"udev_path={device}"), write(f"{BACKSTORE}/enable", "1"),
             f"ln -s {BACKSTORE} {shlex.quote(t)}/lun/lun_0/disk0",
             f"mkdir {shlex.quote(t)}/np/0.0.0.0:{GUEST_PORT}"]
    for name, value in (("generate_node_acls", "1"), ("demo_mode_write_protect", "0")):
        lines.append(write(f"{t}/attrib/{name}", value))
    lines += [f"echo '{query} +p' > /sys/kernel/debug/dynamic_debug/control" for query in DEBUG]
    lines.append(write(f"{t}/enable", "1"))
    return "\n".join(lines) + "\n"


# Explicit ACLs go first (their LUN links, then the LUN dirs), then the cached dynamic ACLs of the names LIO
# logged since the last reset; the log is emptied last, so the next test reads only its own.
_DROP_ACLS = """\
for acl in {tpg}/acls/*; do
    [ -d "$acl" ] || continue
    for lun in "$acl"/lun_*; do
        [ -d "$lun" ] || continue
        for link in "$lun"/*; do if [ -L "$link" ]; then rm "$link"; fi; done
        rmdir "$lun"
    done
    rmdir "$acl"
done
bb=/bootkit/bin/busybox
for name in $($bb dmesg | $bb sed -n 's/.* Dynamic ACL \\(.*\\) is trying to connect$/\\1/p' | $bb sort -u); do
    mkdir {tpg}/acls/"$name" && rmdir {tpg}/acls/"$name"
done
$bb dmesg -c > /dev/null
"""


def reset_script(iqn: str = IQN, enable: bool = True) -> str:
    """Drop every session and bring the TPG back to `setup_script`'s state: no auth, LIO's parameter
    defaults, ERL 0, no ACLs (explicit or cached) and an empty kernel log. ``enable=False`` leaves the TPG
    disabled, for more configuration before logins are let in."""
    t = tpg(iqn)
    lines = [write(f"{t}/enable", "0"), write(f"{t}/attrib/authentication", "0")]
    lines += [write(f"{t}/auth/{f}", "NULL") for f in AUTH_FILES]
    lines += [write(f"{t}/param/{k}", v) for k, v in DEFAULT_PARAMS.items()]
    lines += [write(f"{t}/attrib/default_erl", "0"), _DROP_ACLS.format(tpg=shlex.quote(t)).rstrip("\n")]
    if enable:
        lines.append(write(f"{t}/enable", "1"))
    return "\n".join(lines) + "\n"


def auth_script(iqn: str, chap: tuple[str, str] | None, mutual: tuple[str, str] | None) -> str:
    """TPG-level CHAP for dynamic ACLs: ``chap`` is the initiator's (user, secret), ``mutual`` the
    target's own; None turns each off. LIO does not insist on mutual CHAP once it is configured."""
    if mutual and not chap:
        raise ValueError("mutual CHAP needs the initiator's CHAP too")
    t = tpg(iqn)
    user, secret = chap or ("NULL", "NULL")
    tuser, tsecret = mutual or ("NULL", "NULL")
    for what, pair in (("CHAP", chap), ("mutual CHAP", mutual)):
        if pair:
            _credential(f"{what} user", pair[0])
            _credential(f"{what} secret", pair[1])
    values = dict(zip(AUTH_FILES, (user, secret, tuser, tsecret), strict=True))
    lines = [write(f"{t}/auth/{k}", v) for k, v in values.items()]
    lines.append(write(f"{t}/attrib/authentication", "1" if chap else "0"))
    return "\n".join(lines) + "\n"


def param_script(iqn: str, key: str, value: str) -> str:
    """Set one TPG parameter (the names of ``param/``); ErrorRecoveryLevel also sets ``default_erl``."""
    t = tpg(iqn)
    if key not in DEFAULT_PARAMS:
        raise ValueError(f"unknown LIO parameter {key!r}; known: {', '.join(DEFAULT_PARAMS)}")
    lines = [write(f"{t}/param/{key}", value)]
    if key == "ErrorRecoveryLevel":
        lines.append(write(f"{t}/attrib/default_erl", value))
        lines.append(f"for a in {shlex.quote(t)}/acls/*/attrib/default_erl; do [ -f \"$a\" ] || continue; "
                     f"printf %s {shlex.quote(value)} > \"$a\"; done")
    return "\n".join(lines) + "\n"


def acl_script(iqn: str, initiator: str) -> str:
    """An explicit ACL for ``initiator`` with LUN 0 mapped: LIO then shows its sessions in ``info``."""
    if not re.fullmatch(r"(iqn|eui|naa)\.[A-Za-z0-9.:_-]+", initiator):
        raise ValueError(f"{initiator!r} is not an iSCSI name")
    acl = shlex.quote(f"{tpg(iqn)}/acls/{initiator}")
    return (f"mkdir -p {acl}/lun_0\nln -s {shlex.quote(tpg(iqn))}/lun/lun_0 {acl}/lun_0/lun0\n"
            f"read -r erl < {shlex.quote(tpg(iqn))}/attrib/default_erl\nprintf %s \"$erl\" > {acl}/attrib/default_erl\n")


def chap_algorithms_in(log: str) -> list[int]:
    """The CHAP_A LIO chose at each login, in order, from its dynamic-debug lines ``Got CHAP_A=N``."""
    return [int(m) for m in _CHAP_A.findall(log)]


# ------------------------------------------------------------------ the guest and its admin channel

@dataclass(frozen=True)
class AdminResult:
    rc: int
    output: str
    seconds: float


@dataclass
class LioGuest:
    """One guest running LIO; `run` executes a shell script in it through files in its /results export.

    ``boot_seconds`` is QEMU start to the admin loop's ``ready``, ``setup_seconds`` the LIO setup after.
    """

    workdir: Path
    port: int
    disk: Path
    boot_seconds: float = 0.0
    setup_seconds: float = 0.0
    result: GuestResult | None = None
    _thread: threading.Thread | None = None
    _proc: object = None
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ctl(self) -> Path:
        return self.workdir / "ctl"

    @classmethod
    def boot(cls, workdir: Path, size_mb: int = 32, boot_files: BootFiles | None = None,
             timeout: float = 180.0, session_limit: float = 3600.0) -> LioGuest:
        workdir = Path(workdir)
        (workdir / "ctl").mkdir(parents=True, exist_ok=True)
        disk = Disk.create(workdir / "lun0.img", size_mb << 20)
        g = cls(workdir=workdir, port=free_port(), disk=disk.path)
        start = time.monotonic()

        def guest() -> None:
            with open(workdir / "console.log", "w") as console:
                g.result = run_guest(script=GUEST_SCRIPT.read_text(), disks=[disk], hostfwd=[(g.port, GUEST_PORT)],
                                     results_dir=g.ctl, timeout=session_limit, stream=console,
                                     boot_files=boot_files, on_start=lambda p: setattr(g, "_proc", p))

        g._thread = threading.Thread(target=guest, name="lio-guest", daemon=True)
        g._thread.start()
        try:
            while not (g.ctl / "ready").exists():
                if not g._thread.is_alive() or (g.ctl / "failed").exists() or time.monotonic() - start > timeout:
                    raise LioError(f"the LIO guest did not come up within {timeout:g} s: {g.tail()}")
                time.sleep(0.05)
            g.boot_seconds = round(time.monotonic() - start, 2)
            g.setup_seconds = g.check(setup_script()).seconds
        except BaseException:
            g.stop()
            raise
        return g

    @property
    def alive(self) -> bool:
        """QEMU still runs (a guest kernel panic ends it: the harness boots with panic=-1 and -no-reboot)."""
        return self._thread is not None and self._thread.is_alive()

    def tail(self, lines: int = 25) -> str:
        """The last console lines (the guest's kernel messages land there too)."""
        try:
            text = (self.workdir / "console.log").read_text(errors="replace")
        except OSError:
            return "(no console)"
        failed = self.ctl / "failed"
        head = failed.read_text().strip() + "\n" if failed.exists() else ""
        return head + "\n".join(text.splitlines()[-lines:])

    def run(self, script: str, timeout: float = 60.0) -> AdminResult:
        """Run ``script`` with ``sh -e`` in the guest; its exit status and output come back."""
        with self._lock:
            n = next(self._seq)
            base = self.ctl / f"{n:06d}"
            part = base.with_suffix(".part")
            part.write_text(script)
            start = time.monotonic()
            part.rename(base.with_suffix(".cmd"))  # whole, or not at all, as the guest sees it
            rc_file = base.with_suffix(".rc")
            while not rc_file.exists():
                if self._thread is None or not self._thread.is_alive():
                    raise LioError(f"the LIO guest is gone (admin request {n}): {self.tail()}")
                if time.monotonic() - start > timeout:
                    raise LioError(f"the LIO guest did not answer admin request {n} within {timeout:g} s")
                time.sleep(0.01)
            seconds = round(time.monotonic() - start, 3)
            return AdminResult(int(rc_file.read_text().strip() or -1), base.with_suffix(".out").read_text(),
                               seconds)

    def check(self, script: str, timeout: float = 60.0) -> AdminResult:
        r = self.run(script, timeout)
        if r.rc != 0:
            raise LioError(f"LIO configuration step failed (exit {r.rc}): {r.output.strip()}\n--- script ---\n"
                           f"{script}")
        return r

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the admin loop to end (the guest powers off), then wait; kill QEMU if it does not."""
        if self._thread is None:
            return
        (self.ctl / "poweroff").touch()
        self._thread.join(timeout)
        proc = self._proc
        if self._thread.is_alive() and proc is not None:
            proc.kill()  # type: ignore[attr-defined]
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------ the target, shaped like Tgt / Istgt

@dataclass
class Lio:
    """LIO's target ``iqn`` in a `LioGuest`, configured for one test; the disk is LUN 0."""

    guest: LioGuest
    iqn: str = IQN
    host: str = "127.0.0.1"
    chap: tuple[str, str] | None = None
    mutual: tuple[str, str] | None = None
    params: dict[str, str] = field(default_factory=dict)
    own_guest: bool = False
    reconfigure_seconds: float = 0.0

    @classmethod
    def start(cls, guest: LioGuest | None = None, *, chap: tuple[str, str] | None = None,
              mutual: tuple[str, str] | None = None, params: dict[str, str] | None = None,
              acls: tuple[str, ...] = (), workdir: Path | None = None) -> Lio:
        """Reset ``guest`` (boot one under ``workdir`` when None; `stop` then powers it off) and configure
        CHAP, parameters and explicit ACLs, all in one admin request. Earlier `Lio` objects on the same
        guest see the new configuration: one live configuration per guest."""
        own = guest is None
        if guest is None:
            if workdir is None:
                raise ValueError("Lio.start() without a guest needs a workdir for it")
            guest = LioGuest.boot(workdir)
        t = cls(guest=guest, chap=chap, mutual=mutual, params=dict(params or {}), own_guest=own)
        script = reset_script(t.iqn, enable=False) + auth_script(t.iqn, chap, mutual)
        script += "".join(param_script(t.iqn, k, v) for k, v in t.params.items())
        script += "".join(acl_script(t.iqn, a) for a in acls)
        script += write(f"{tpg(t.iqn)}/enable", "1") + "\n"
        t.reconfigure_seconds = guest.check(script).seconds
        return t

    @property
    def port(self) -> int:
        return self.guest.port

    @property
    def portal(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def backing(self) -> list[Path]:
        return [self.guest.disk]

    def url(self, lun: int = 0, host: str | None = None) -> str:
        return f"iscsi://{host or self.host}:{self.port}/{self.iqn}/{lun}"

    def update(self, key: str, value: str) -> None:
        """Set a TPG parameter for the next logins (HeaderDigest, MaxConnections, ErrorRecoveryLevel, ...)."""
        self.guest.check(param_script(self.iqn, key, value))
        self.params[key] = value

    def set_auth(self, chap: tuple[str, str] | None, mutual: tuple[str, str] | None = None) -> None:
        self.guest.check(auth_script(self.iqn, chap, mutual))
        self.chap, self.mutual = chap, mutual

    def add_acl(self, initiator: str) -> None:
        self.guest.check(acl_script(self.iqn, initiator))

    def set_enabled(self, enabled: bool) -> float:
        """Disable the TPG (LIO releases every session at once and refuses logins) or enable it again.
        Returns the seconds the request took."""
        return self.guest.check(write(f"{tpg(self.iqn)}/enable", "1" if enabled else "0")).seconds

    def drop_sessions(self, down_for: float = 0.0) -> float:
        """Release every session, keep logins out for ``down_for`` s, let them in again (one request)."""
        t = tpg(self.iqn)
        pause = f"sleep {down_for:g}\n" if down_for > 0 else ""
        return self.guest.check(write(f"{t}/enable", "0") + "\n" + pause + write(f"{t}/enable", "1")).seconds

    def read(self, name: str) -> str:
        """A configfs file under the TPG, e.g. ``param/MaxConnections`` or ``acls/IQN/info``."""
        return self.guest.check(f"cat {shlex.quote(tpg(self.iqn) + '/' + name)}").output

    def connections(self, initiator: str) -> int:
        """Logged-in connections LIO counts for ``initiator``'s session (needs `add_acl` first)."""
        return self.read(f"acls/{initiator}/info").count("TARG_CONN_STATE_LOGGED_IN")

    def log(self) -> str:
        """LIO's kernel messages since this configuration (dynamic debug on for CHAP and SNACK)."""
        return self.guest.check("/bootkit/bin/busybox dmesg").output

    def chap_algorithms(self) -> list[int]:
        return chap_algorithms_in(self.log())

    def stop(self) -> None:
        if self.own_guest:
            self.guest.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
