"""One configured target inside uiscsid: its session, its LUN backends, NBD devices and by-iscsi links.

A target's life is a loop: log in (backing off 1, 2, 4 ... 128 s after failures, as OpenBSD's iscsid
does), set up its LUNs, then follow the session's state changes (it subscribes to them: no polling). The
session recovers lost connections by itself (ERL0, commands wait); only when it gives up after the
replacement timeout does this loop log in afresh, handing the new session to the LUN backends that stay
attached, so /dev/nbdN never vanishes.
Each device gets its /dev/disk/by-iscsi name from udev where udev names devices (the daemon writes the
info file and triggers: kernel/udev_info), else from a link the daemon makes (kernel/devnames).
States: init, logging-in, logged-in, recovering, failed, discovered (a discovery target), detached.
The loop's own waits are bounded with asyncio.timeout, never asyncio.wait_for: on Python 3.11 wait_for
swallows a cancel that lands as the awaited thing completes (cpython#86296), and `stop` cancels the loop
and waits for it to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import time
from dataclasses import dataclass, field

from ..errors import ISCSIError
from ..io.session import Session, open_session
from ..kernel import attach as nbd_attach
from ..kernel import devnames, nbd_sysfs, udev_info
from ..kernel.backends import IscsiLun
from ..kernel.nbd_ioctl import NbdDevice
from ..kernel.nbd_netlink import KeptDevice
from ..kernel.nbd_wire import NbdError
from ..protocol.chap import algorithm_names
from ..protocol.escalation import Counts
from ..protocol.recovery import Backoff
from ..protocol.session_state import SessionState
from ..scsi import commands as scsi
from ..scsi.parsers import DISK
from .wire import TargetConf

log = logging.getLogger("uiscsid.target")
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 128.0
_GONE = (SessionState.FAILED, SessionState.CLOSED, SessionState.FREE)


@dataclass
class LunRuntime:
    lun: int
    backend: IscsiLun | None = None
    device: NbdDevice | None = None
    link: str | None = None
    link_by: str | None = None      # "udev" (the daemon wrote the info file) or "daemon" (its own symlink)
    error: str | None = None

    def info(self) -> dict:
        b, d = self.backend, self.device
        live = d is not None and d.connected
        return {"lun": self.lun, "block_size": b.block_size if b else None, "size": b.size if b else None,
                "unmap": bool(b and b.can_trim), "device": d.path if live else None,
                "attach": nbd_attach.kind(d) if live else None, "link": self.link, "link_by": self.link_by,
                "link_present": self.link_present(), "error": self.error}

    def link_present(self) -> bool | None:
        """Whether the by-iscsi link exists and leads to the device (None: no device or no link)."""
        d = self.device
        if d is None or not d.connected or self.link is None:
            return None
        try:
            return os.path.samefile(self.link, d.path)
        except OSError:
            return False


@dataclass
class StopReport:
    """What stopping a target left behind: failures to report, and devices kept because they are in use."""

    problems: list[str] = field(default_factory=list)
    kept: dict[str, list[str]] = field(default_factory=dict)  # device path -> why it is in use


class TargetRuntime:
    """The daemon's view of one target; `start` it, `stop` it, ask it for `summary` and friends."""

    def __init__(self, conf: TargetConf, attach: str, link_dir: str) -> None:
        self.conf = conf
        self.attach = attach            # kernel.attach.MODES: "auto", "netlink", "ioctl" ("nbd") or "none"
        self.link_dir = link_dir
        self.state = "init"
        self.error: str | None = None
        self.session: Session | None = None
        self.luns: dict[int, LunRuntime] = {}
        self.discovered: list[dict] = []
        self.children: list[TargetRuntime] = []     # a discovery target logs in to what it found
        self.logins = 0
        self.escalation = Counts()   # command timeouts and their escalation, over every session of the target
        self.since = time.time()
        self.settled = asyncio.Event()
        self.retry_now = asyncio.Event()   # set by kick(): end the current backoff sleep early
        self.task: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return self.conf.name

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"target-{self.name}")

    def kick(self) -> None:
        """Retry a failed login now instead of after the backoff, and let a reload --wait cover the
        attempt: an admin who reloads after bringing the target back means "try again now"."""
        self.settled.clear()
        self.retry_now.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if kicked; True when kicked (the backoff then restarts)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.retry_now.wait()
        kicked = self.retry_now.is_set()
        self.retry_now.clear()
        return kicked

    def _set(self, state: str, error: str | None = None) -> None:
        if state != self.state:
            log.info("target %s: %s%s", self.name, state, f" ({error})" if error else "")
            self.since = time.time()
        self.state, self.error = state, error

    # ------------------------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX)
        while True:
            self._set("logging-in", self.error)
            try:
                session = await open_session(self.conf.session, self.escalation)
            except (ISCSIError, OSError) as e:
                self._set("failed", str(e) or type(e).__name__)
                self.settled.set()
                if await self._pause(backoff.delay):
                    backoff.reset()
                else:
                    backoff.failed()
                continue
            backoff.reset()
            self.logins += 1
            self.session = session
            try:
                if self.conf.discovery:
                    await self._discover(session)
                    return
                await self._setup_luns(session)
                self._set("logged-in")
                self.settled.set()
                await self._follow(session)
            except (ISCSIError, OSError) as e:
                self._set("failed", str(e))
                self.settled.set()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await session.close()
            await self._pause(backoff.delay)

    async def _discover(self, session: Session) -> None:
        """SendTargets, then a normal target (named PARENT/IQN) for each one found, as FreeBSD's iscsictl -A -d."""
        found = await session.send_targets()
        self.discovered = [{"name": t.name, "portals": [list(p) for p in t.portals]} for t in found]
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await session.close()
        self.session = None
        for t in found:
            address, port = self._pick_portal(t.portals)
            params = dataclasses.replace(self.conf.session, target_name=t.name, host=address, port=port)
            conf = dataclasses.replace(self.conf, name=f"{self.name}/{t.name}", session=params, discovery=False,
                                       luns=())
            child = TargetRuntime(conf, self.attach, self.link_dir)
            child.start()
            self.children.append(child)
        self._set("discovered")
        await asyncio.gather(*(c.settled.wait() for c in self.children))
        self.settled.set()

    def _pick_portal(self, portals: list[tuple[str, int, int]]) -> tuple[str, int]:
        """The advertised portal on the address we discovered through, else the first that is an IP.

        A portal that is a name or a wildcard (the daemon does no DNS) falls back to the discovery address.
        """
        here = self.conf.session
        usable = []
        for host, port, _tpgt in portals:
            with contextlib.suppress(ValueError):
                if not ipaddress.ip_address(host).is_unspecified:
                    usable.append((host, port))
        for host, port in usable:
            if host == here.host:
                return host, port
        return usable[0] if usable else (here.host, portals[0][1] if portals else here.port)

    async def _setup_luns(self, session: Session) -> None:
        wanted = list(self.conf.luns)
        if not wanted:
            for lun in await scsi.report_luns(session):
                with contextlib.suppress(scsi.SCSIError):
                    if (await scsi.inquiry(session, lun)).device_type == DISK:
                        wanted.append(lun)
        for lun in wanted:
            lr = self.luns.setdefault(lun, LunRuntime(lun))
            try:
                if lr.backend is None:
                    lr.backend = await IscsiLun.open(session, lun)
                else:
                    lr.backend.session = session            # a new login: the device stays attached
                if self.attach != "none" and (lr.device is None or not lr.device.connected):
                    lr.device = await nbd_attach.attach(
                        self.attach, lr.backend, self._stable_name(lun),
                        dead_conn_timeout=max(1, int(self.conf.session.replacement_timeout)))
                    await self._name(lr)
                lr.error = None
            except (ISCSIError, NbdError, OSError) as e:
                lr.error = str(e)
                log.error("target %s LUN %d: %s", self.name, lun, e)

    def _stable_name(self, lun: int) -> str:
        return devnames.stable_name(self.conf.session.target_name or "", lun)

    async def _name(self, lr: LunRuntime) -> None:
        """Give the new device its by-iscsi name: udev's (info file + change event) where udev names
        devices and the links go to the standard place, else a link of our own."""
        assert lr.device is not None
        target = self.conf.session.target_name or ""
        if self.link_dir == devnames.LINK_DIR and udev_info.udev_names():
            kname = os.path.basename(lr.device.path)
            # in a thread: reading the partition table is I/O this loop serves
            problems = await asyncio.to_thread(udev_info.announce, kname, target, lr.lun)
            for problem in problems:
                log.warning("target %s LUN %d: udev change event: %s", self.name, lr.lun, problem)
            lr.link, lr.link_by = udev_info.link_path(target, lr.lun), "udev"
        else:
            lr.link = devnames.make_link(self.link_dir, devnames.link_name(target, lr.lun), lr.device.path)
            lr.link_by = "daemon"

    def missing_links(self) -> list[dict]:
        """Attached LUNs (its own and its discovered targets') whose by-iscsi link is not there yet."""
        out = [m for child in self.children for m in child.missing_links()]
        out += [{"target": self.name, "lun": lr.lun, "device": lr.device.path, "link": lr.link, "by": lr.link_by}
                for lr in self.luns.values() if lr.device is not None and lr.link_present() is False]
        return out

    async def _follow(self, session: Session) -> None:
        """Mirror the session's state changes until it gives up (a relogin then starts afresh)."""
        changed = asyncio.Event()
        unsubscribe = session.subscribe(lambda change: changed.set())
        try:
            while True:
                st = session.state
                if st in _GONE:
                    raise ISCSIError(f"the session {st.value}: no relogin within the replacement timeout "
                                     f"({self.conf.session.replacement_timeout:g} s)")
                self._set("recovering" if st is SessionState.RECOVERING else "logged-in")
                changed.clear()
                await changed.wait()
        finally:
            unsubscribe()

    # ------------------------------------------------------------------------------------ stopping
    def busy(self) -> dict[str, list[str]]:
        """Attached devices (its own and its discovered targets') that are mounted or held, with why."""
        out = {k: v for child in self.children for k, v in child.busy().items()}
        for lr in self.luns.values():
            if lr.device is not None and lr.device.connected and (users := lr.device.users()):
                out[lr.device.path] = users
        return out

    async def busy_now(self, timeout: float = 2.0) -> dict[str, list[str]]:
        """``busy()``, and the devices the kernel still holds claimed though unmounted (``nbd_sysfs.claimed``):
        detaching one of those loses the unmount's last journal and superblock writes. Asked from a thread,
        as this process serves the reads that opening the device makes; a probe that does not return within
        ``timeout`` counts as not claimed."""
        out = self.busy()
        for child in self.children:
            out |= await child.busy_now(timeout)
        for lr in self.luns.values():
            dev = lr.device
            if dev is None or not dev.connected or dev.path in out:
                continue
            try:
                async with asyncio.timeout(timeout):
                    why = await asyncio.to_thread(nbd_sysfs.claimed, dev.index)
            except TimeoutError:
                why = []
            if why:
                out[dev.path] = why
        return out

    async def flush(self, timeout: float = 3.0) -> list[str]:
        """SYNCHRONIZE CACHE on every LUN; returns the failures (never raises)."""
        if self.session is None:
            return []
        luns = [lr for lr in self.luns.values() if lr.backend is not None]
        results = await asyncio.gather(*(asyncio.wait_for(lr.backend.flush(), timeout) for lr in luns),
                                       return_exceptions=True)
        return [f"{self.name} LUN {lr.lun}: flush failed: {r or 'timed out'}" for lr, r in zip(luns, results,
                strict=True) if isinstance(r, BaseException)]

    async def stop(self, force: bool = False, timeout: float = 4.0, keep_busy: bool = False) -> StopReport:
        """Flush, detach the devices, log out. Busy devices: refused (NbdError) unless force or keep_busy.

        With ``keep_busy`` the busy devices stay attached and the session stays up to serve them; the
        report's ``kept`` says which.
        """
        busy = await self.busy_now()
        if busy and not force and not keep_busy:
            what = "; ".join(f"{dev} {', '.join(u)}" for dev, u in busy.items())
            raise NbdError(f"target {self.name}: {what}: unmount first, or detach --force")
        if busy and keep_busy and not force:
            for lr in self.luns.values():       # detach what is not in use; keep the session for the rest
                if lr.device is not None and lr.device.connected and lr.device.path not in busy:
                    with contextlib.suppress(NbdError, TimeoutError):
                        await lr.device.disconnect(timeout=timeout / 2)
                    self._unlink(lr)
            return StopReport(kept=busy)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        report = StopReport()
        for child in self.children:
            report.problems += (await child.stop(force=force, timeout=timeout)).problems
        self.children = []
        report.problems += await self.flush(timeout=timeout / 2)
        for lr in self.luns.values():
            if lr.device is not None:
                try:
                    await lr.device.disconnect(force=force, timeout=timeout / 2)
                except (NbdError, TimeoutError) as e:
                    report.problems.append(f"{lr.device.path}: {e}")
            self._unlink(lr)
        if self.session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.session.close(), timeout / 2)
            self.session = None
        self._set("detached")
        return report

    def _unlink(self, lr: LunRuntime) -> None:
        if lr.link_by == "udev" and lr.device is not None:
            for problem in udev_info.withdraw(os.path.basename(lr.device.path)):
                log.warning("target %s LUN %d: udev change event: %s", self.name, lr.lun, problem)
        elif lr.link is not None:
            devnames.remove_link(lr.link)
        lr.link = lr.link_by = None

    async def park(self) -> None:
        """At exit in netlink mode: stop serving the devices still attached; the kernel keeps them."""
        for lr in self.luns.values():
            if isinstance(lr.device, KeptDevice) and lr.device.connected:
                await lr.device.park()

    # ------------------------------------------------------------------------------------ reports
    def summary(self) -> dict:
        c, s = self.conf, self.conf.session
        return {"name": c.name, "state": self.state, "error": self.error, "address": s.host, "port": s.port,
                "target_name": s.target_name, "since": self.since, "logins": self.logins,
                "connections": self.session.connections if self.session else 0,
                "connections_asked": s.max_connections,
                "connections_granted": self.session.connections_granted if self.session else 0,
                "devices": [lr.device.path for lr in self.luns.values() if lr.device and lr.device.connected],
                "lun_errors": {str(lr.lun): lr.error for lr in self.luns.values() if lr.error},
                "discovered": self.discovered, "escalation": dataclasses.asdict(self.escalation)}

    def session_info(self) -> dict:
        s = self.session
        neg = s.negotiated if s else None
        return {"name": self.name, "state": self.state, "session_state": s.state.value if s else None,
                "connections": s.connections if s else 0, "tsih": s.tsih if s else None,
                "connections_asked": self.conf.session.max_connections,
                "connections_granted": s.connections_granted if s else 0,
                "chap_algorithm": algorithm_names((s.chap_algorithm,))[0] if s and s.chap_algorithm else None,
                "negotiated": dataclasses.asdict(neg) if neg is not None else None}

    def stats(self) -> dict:
        s = self.session
        return {"name": self.name,
                "session": dataclasses.asdict(s.stats) if s else None,
                "luns": {str(lr.lun): dataclasses.asdict(lr.device.stats) for lr in self.luns.values()
                         if lr.device is not None}}
