"""Real iSCSI targets on loopback: tgtd and istgt launchers, each on a free port.

The host side of the harness's scenarios (`bootkit vm reboot-test`), the demo, the benchmark and the tests
all start targets through these classes: ``with Tgt.start(size_mb=64) as t: ... t.url(1)``.

Facts (../shared/TARGETS.md): tgtd ignores SIGTERM (use SIGINT/SIGKILL), every tgtadm call needs the
instance's ``-C N``, LUN 0 is tgt's controller and the disk is LUN 1; istgt's disk is LUN 0, a login
takes about 1 s there and it stops on SIGTERM within about 3 s.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

LOCK_DIR = Path("/run/lock/bootkit-tgtd")


def claim_control_number() -> tuple[int, int]:
    """A tgtd control number (-C N) no other process holds, and the open lock file that holds it.

    Concurrent test runs each start several tgtd instances; a per-number flock (held for the instance's
    life, released by the kernel if we die) keeps them from sharing a control socket.
    """
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for _ in range(1000):
        n = random.randint(1000, 32767)  # tgtd refuses -C above 32767
        fd = os.open(LOCK_DIR / f"{n}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if not Path(f"/run/tgtd/socket.{n}").exists() and not Path(f"/var/run/tgtd/socket.{n}").exists():
            return n, fd
        os.close(fd)
    raise RuntimeError("no free tgtd control number")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (never 3260)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 3260:
            return port


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def wait_port_free(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.1)
    raise TimeoutError(f"port {port} still busy after {timeout}s")


def make_backing(path: Path, size_mb: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    return path


@dataclass
class Tgt:
    """One tgtd instance with one target (tid 1) and ``luns`` disk LUNs (1..luns)."""

    port: int
    control: int
    iqn: str
    backing: list[Path]
    workdir: Path
    chap: tuple[str, str] | None = None
    mutual: tuple[str, str] | None = None
    params: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    lock_fd: int = -1  # holds the control number (see claim_control_number)

    @classmethod
    def start(cls, workdir: Path | None = None, size_mb: int = 64, chap: tuple[str, str] | None = None,
              mutual: tuple[str, str] | None = None, params: dict[str, str] | None = None, luns: int = 1,
              backing: list[Path] | None = None, iqn: str | None = None, port: int | None = None) -> Tgt:
        own_workdir = workdir is None
        workdir = Path(workdir or tempfile.mkdtemp(prefix="tgt-", dir="/dev/shm"))
        control, lock_fd = claim_control_number()
        t = cls(port=port or free_port(), control=control, lock_fd=lock_fd, backing=[], workdir=workdir,
                iqn="", chap=chap, mutual=mutual, params=dict(params or {}))
        t.iqn = iqn or f"iqn.2026-11.test.bootkit:tgt{t.port}"
        try:
            if backing is None:
                backing = [make_backing(workdir / f"lun{i}.img", size_mb) for i in range(1, luns + 1)]
            t.backing = list(backing)
            t._launch()
        except BaseException:
            t.stop()
            if own_workdir:  # a failed start leaves nothing behind in /dev/shm
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        return t

    @classmethod
    def start_retrying(cls, attempts: int = 3, **kw) -> Tgt:
        """`start`, tried again when a launch fails (a busy machine, a control number another run took), for
        the callers without a fixture to fall back on: the demo, the benchmark, the proof scenarios."""
        for attempt in range(1, attempts + 1):
            try:
                return cls.start(**kw)
            except RuntimeError:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def adm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args],
                              capture_output=True, text=True, check=check, timeout=20)

    def _launch(self) -> None:
        log = self.workdir / f"tgtd-{self.control}.log"
        with open(log, "ab") as out:  # Popen keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                ["tgtd", "-f", "-C", str(self.control), "--iscsi", f"portal={self.host}:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while self.adm("--op", "show", "--mode", "target", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tgtd -C {self.control} did not start; see {log}")
            time.sleep(0.05)
        self.adm("--op", "new", "--mode", "target", "--tid", "1", "-T", self.iqn)
        for lun, path in enumerate(self.backing, start=1):
            self.adm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", str(lun), "-b", str(path))
        for key, value in self.params.items():
            self.update(key, value)
        if self.chap:
            self.adm("--op", "new", "--mode", "account", "--user", self.chap[0], "--password", self.chap[1])
            self.adm("--op", "bind", "--mode", "account", "--tid", "1", "--user", self.chap[0])
        if self.mutual:
            self.adm("--op", "new", "--mode", "account", "--user", self.mutual[0], "--password", self.mutual[1])
            self.adm("--op", "bind", "--mode", "account", "--tid", "1", "--user", self.mutual[0], "--outgoing")
        self.adm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
        wait_port(self.host, self.port)

    def update(self, key: str, value: str) -> None:
        """Set a target parameter (ImmediateData, InitialR2T, MaxBurstLength, ...)."""
        self.params[key] = value
        self.adm("--op", "update", "--mode", "target", "--tid", "1", "--name", key, "--value", value)

    def url(self, lun: int = 1, host: str | None = None) -> str:
        return f"iscsi://{host or self.host}:{self.port}/{self.iqn}/{lun}"

    @property
    def portal(self) -> tuple[str, int]:
        return (self.host, self.port)

    def kill(self) -> None:
        """Stop tgtd abruptly (SIGKILL): connections drop as on a target crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        """Crash and relaunch the same target on the same port and backing files."""
        self.kill()
        time.sleep(down_for)
        wait_port_free(self.port)
        self._launch()

    def stop(self) -> None:
        self.kill()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


ISTGT_CONF = """\
[Global]
  NodeBase "{nodebase}"
  PidFile {workdir}/istgt.pid
  AuthFile {workdir}/auth.conf
  MediaDirectory {workdir}
  LogFacility "local7"
  Timeout 30
  NopInInterval 20
  DiscoveryAuthMethod Auto
  MaxSessions 16
  MaxConnections {max_connections}
  MaxR2T 32
  MaxOutstandingR2T 16
  DefaultTime2Wait 2
  DefaultTime2Retain 60
  FirstBurstLength {first_burst}
  MaxBurstLength {max_burst}
  MaxRecvDataSegmentLength 262144
  InitialR2T Yes
  ImmediateData {immediate_data}
  DataPDUInOrder Yes
  DataSequenceInOrder Yes
  ErrorRecoveryLevel 0

[UnitControl]
  AuthMethod Auto
  AuthGroup AuthGroup10000
  Portal UC1 127.0.0.1:{ucport}
  Netmask 127.0.0.1

[PortalGroup1]
  Portal DA1 127.0.0.1:{port}

[InitiatorGroup1]
  InitiatorName "ALL"
  Netmask 127.0.0.0/8

[LogicalUnit1]
  TargetName {name}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod {auth}
  AuthGroup AuthGroup1
  UseDigest {digest}
  UnitType Disk
  QueueDepth 64
  LUN0 Storage {backing} {size_mb}MB
"""


@dataclass
class Istgt:
    """One istgt instance exporting one disk as LUN 0.

    istgt 0.4 refuses `InitialR2T No` at startup, so that is always Yes here.
    """

    port: int
    iqn: str
    backing: Path
    workdir: Path
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"

    @classmethod
    def start(cls, workdir: Path | None = None, size_mb: int = 64, chap: tuple[str, str] | None = None,
              mutual: tuple[str, str] | None = None, mutual_required: bool = False, digest: str = "Auto",
              max_connections: int = 4, immediate_data: bool = True,
              first_burst: int = 65536, max_burst: int = 262144) -> Istgt:
        own_workdir = workdir is None
        workdir = Path(workdir or tempfile.mkdtemp(prefix="istgt-", dir="/dev/shm"))
        port = free_port()
        backing = make_backing(workdir / "disk0.img", size_mb)
        auth = "Auto"
        if chap:
            auth = "CHAP Mutual" if mutual_required else "CHAP"
        secrets = f'  Auth "{chap[0]}" "{chap[1]}"' if chap else ""
        if chap and mutual:
            secrets += f' "{mutual[0]}" "{mutual[1]}"'
        (workdir / "auth.conf").write_text(f"[AuthGroup1]\n  Comment \"test\"\n{secrets}\n")
        nodebase = "iqn.2026-11.test.bootkit"
        conf = ISTGT_CONF.format(
            nodebase=nodebase, workdir=workdir, port=port, ucport=free_port(), name=f"istgt{port}",
            auth=auth, digest=digest, backing=backing, size_mb=size_mb, max_connections=max_connections,
            immediate_data="Yes" if immediate_data else "No",
            first_burst=first_burst, max_burst=max_burst)
        (workdir / "istgt.conf").write_text(conf)
        t = cls(port=port, iqn=f"{nodebase}:istgt{port}", backing=backing, workdir=workdir)
        log = workdir / "istgt.log"
        with open(log, "ab") as out:
            t.proc = subprocess.Popen(["istgt", "-c", str(workdir / "istgt.conf"), "-D"], stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(t.host, port, timeout=15)
        except TimeoutError:
            t.stop()
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"istgt did not start (port {port})") from None
        return t

    def url(self, lun: int = 0, host: str | None = None) -> str:
        return f"iscsi://{host or self.host}:{self.port}/{self.iqn}/{lun}"

    @property
    def portal(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stop(self, graceful: bool = False) -> None:
        """SIGKILL by default: istgt's SIGTERM path takes ~3 s and nothing here needs it, since each
        instance has its own port and backing file. ``graceful=True`` sends SIGTERM and waits."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
