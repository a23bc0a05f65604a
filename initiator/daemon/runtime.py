"""One configured target inside uiscsid: its session, its LUN backends, NBD devices and by-iscsi links.

A target's life is a loop: log in (backing off 1, 2, 4 ... 128 s after failures, as OpenBSD's iscsid
does), set up its LUNs, then watch the session. The transport recovers lost connections by itself
(ERL0, commands wait); only when it gives up after the replacement timeout does this loop log in
afresh, handing the new session to the LUN backends that stay attached, so /dev/nbdN never vanishes.
States: init, logging-in, logged-in, recovering, failed, discovered (a discovery target), detached.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import time
from dataclasses import dataclass

from ..ctl.config import TargetConf
from ..errors import ISCSIError
from ..io.session import SessionConfig, open_session
from ..kernel.backends import IscsiLun
from ..kernel.nbd_ioctl import NbdDevice, NbdError
from ..kernel.nbd_netlink import KeptDevice
from ..scsi import commands as scsi

log = logging.getLogger("uiscsid.target")
BACKOFF_MAX = 128.0
DISK = 0x00


def session_state(session: object) -> str:
    """The transport session's state word (up, recovering, failed, closed...)."""
    return str(getattr(session, "state", None) or getattr(session, "_state", "unknown"))


@dataclass
class LunRuntime:
    lun: int
    backend: IscsiLun | None = None
    device: NbdDevice | None = None
    link: str | None = None
    error: str | None = None

    def info(self) -> dict:
        b, d = self.backend, self.device
        return {"lun": self.lun, "block_size": b.block_size if b else None, "size": b.size if b else None,
                "unmap": bool(b and b.can_trim), "device": d.path if d and d.connected else None,
                "link": self.link, "error": self.error}


class TargetRuntime:
    """The daemon's view of one target; `start` it, `stop` it, ask it for `summary` and friends."""

    def __init__(self, conf: TargetConf, attach: str, link_dir: str) -> None:
        self.conf = conf
        self.attach = attach            # "nbd" (ioctl), "netlink" (devices outlive us) or "none"
        self.link_dir = link_dir
        self.state = "init"
        self.error: str | None = None
        self.session = None
        self.luns: dict[int, LunRuntime] = {}
        self.discovered: list[dict] = []
        self.children: list[TargetRuntime] = []     # a discovery target logs in to what it found
        self.logins = 0
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

    async def _pause(self, backoff: float) -> bool:
        """Sleep ``backoff`` seconds, or less if kicked; True when kicked (the backoff then restarts)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.retry_now.wait(), backoff)
        kicked = self.retry_now.is_set()
        self.retry_now.clear()
        return kicked

    def _set(self, state: str, error: str | None = None) -> None:
        if state != self.state:
            log.info("target %s: %s%s", self.name, state, f" ({error})" if error else "")
            self.since = time.time()
        self.state, self.error = state, error

    def session_config(self) -> SessionConfig:
        c = self.conf
        return SessionConfig(
            host=c.address, port=c.port, initiator_name=c.initiator_name or "", target_name=c.target_name,
            chap_user=c.chap.user if c.chap else None, chap_secret=c.chap.secret if c.chap else None,
            mutual_user=c.mutual.user if c.mutual else None, mutual_secret=c.mutual.secret if c.mutual else None,
            header_digest=c.header_digest, data_digest=c.data_digest, max_connections=c.connections,
            replacement_timeout=c.replacement_timeout)

    # ------------------------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        backoff = 1.0
        while True:
            self._set("logging-in", self.error)
            try:
                session = await open_session(self.session_config())
            except (ISCSIError, OSError) as e:
                self._set("failed", str(e) or type(e).__name__)
                self.settled.set()
                backoff = 1.0 if await self._pause(backoff) else min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = 1.0
            self.logins += 1
            self.session = session
            try:
                if self.conf.discovery:
                    await self._discover(session)
                    return
                await self._setup_luns(session)
                self._set("logged-in")
                self.settled.set()
                await self._watch(session)
            except (ISCSIError, OSError) as e:
                self._set("failed", str(e))
                self.settled.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.close(), 5)
            await self._pause(backoff)

    async def _discover(self, session) -> None:
        """SendTargets, then a normal target (named PARENT/IQN) for each one found, as FreeBSD's iscsictl -A -d."""
        found = await session.send_targets()
        self.discovered = [{"name": t.name, "portals": [list(p) for p in t.portals]} for t in found]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.close(), 5)
        self.session = None
        for t in found:
            address, port = self._pick_portal(t.portals)
            conf = dataclasses.replace(self.conf, name=f"{self.name}/{t.name}", target_name=t.name,
                                       address=address, port=port, discovery=False, luns=())
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
        usable = []
        for host, port, _tpgt in portals:
            with contextlib.suppress(ValueError):
                if not ipaddress.ip_address(host).is_unspecified:
                    usable.append((host, port))
        for host, port in usable:
            if host == self.conf.address:
                return host, port
        return usable[0] if usable else (self.conf.address, portals[0][1] if portals else self.conf.port)

    async def _setup_luns(self, session) -> None:
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
                    lr.device = await self._attach_device(lun, lr.backend)
                    lr.link = self._make_link(lun, lr.device.path)
                lr.error = None
            except (ISCSIError, NbdError, OSError) as e:
                lr.error = str(e)
                log.error("target %s LUN %d: %s", self.name, lun, e)

    async def _attach_device(self, lun: int, backend: IscsiLun) -> NbdDevice:
        if self.attach == "nbd":
            return await NbdDevice.attach(backend)
        # netlink: a device left by an earlier uiscsid for this LUN is taken over, not duplicated
        return await KeptDevice.attach_kept(backend, f"{self.conf.target_name}-lun{lun}",
                                            dead_conn_timeout=max(1, int(self.conf.replacement_timeout)))

    async def _watch(self, session) -> None:
        while True:
            st = session_state(session)
            if st in ("failed", "closed", "down"):
                raise ISCSIError(f"the session {st}: no relogin within the replacement timeout "
                                 f"({self.conf.replacement_timeout:g} s)")
            self._set("recovering" if st == "recovering" else "logged-in")
            await asyncio.sleep(0.5)

    def _make_link(self, lun: int, device: str) -> str:
        os.makedirs(self.link_dir, exist_ok=True)
        link = os.path.join(self.link_dir, f"{self.conf.target_name}-lun{lun}")
        tmp = f"{link}.tmp{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.path.relpath(device, self.link_dir), tmp)
        os.replace(tmp, link)
        return link

    # ------------------------------------------------------------------------------------ stopping
    def busy(self) -> dict[str, list[str]]:
        """Attached devices (its own and its discovered targets') that are mounted or held, with why."""
        out = {k: v for child in self.children for k, v in child.busy().items()}
        for lr in self.luns.values():
            if lr.device is not None and lr.device.connected and (users := lr.device.users()):
                out[lr.device.path] = users
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

    async def stop(self, force: bool = False, timeout: float = 4.0, keep_busy: bool = False) -> list[str]:
        """Flush, detach the devices, log out. Busy devices: refused (NbdError) unless force or keep_busy.

        With ``keep_busy`` the busy devices stay attached and the session stays up to serve them;
        the returned list says what was kept.
        """
        busy = self.busy()
        if busy and not force and not keep_busy:
            what = "; ".join(f"{dev} {', '.join(u)}" for dev, u in busy.items())
            raise NbdError(f"target {self.name}: {what}: unmount first, or detach --force")
        if busy and keep_busy and not force:
            for lr in self.luns.values():       # detach what is not in use; keep the session for the rest
                if lr.device is not None and lr.device.connected and lr.device.path not in busy:
                    with contextlib.suppress(NbdError, TimeoutError):
                        await lr.device.disconnect(timeout=timeout / 2)
                    self._unlink(lr)
            return [f"{dev} kept: {', '.join(u)}" for dev, u in busy.items()]
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        problems = []
        for child in self.children:
            problems += await child.stop(force=force, timeout=timeout)
        self.children = []
        problems += await self.flush(timeout=timeout / 2)
        for lr in self.luns.values():
            if lr.device is not None:
                try:
                    await lr.device.disconnect(force=force, timeout=timeout / 2)
                except (NbdError, TimeoutError) as e:
                    problems.append(f"{lr.device.path}: {e}")
            self._unlink(lr)
        if self.session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.session.close(), timeout / 2)
            self.session = None
        self._set("detached")
        return problems

    def _unlink(self, lr: LunRuntime) -> None:
        if lr.link is not None:
            with contextlib.suppress(OSError):
                os.unlink(lr.link)
            lr.link = None

    async def park(self) -> None:
        """At exit in netlink mode: stop serving the devices still attached; the kernel keeps them."""
        for lr in self.luns.values():
            if isinstance(lr.device, KeptDevice) and lr.device.connected:
                await lr.device.park()

    # ------------------------------------------------------------------------------------ reports
    def summary(self) -> dict:
        c = self.conf
        return {"name": c.name, "state": self.state, "error": self.error, "address": c.address, "port": c.port,
                "target_name": c.target_name, "since": self.since, "logins": self.logins,
                "connections": getattr(self.session, "connections", 0) if self.session else 0,
                "devices": [lr.device.path for lr in self.luns.values() if lr.device and lr.device.connected],
                "lun_errors": {str(lr.lun): lr.error for lr in self.luns.values() if lr.error},
                "discovered": self.discovered}

    def session_info(self) -> dict:
        s = self.session
        neg = getattr(s, "negotiated", None)
        return {"name": self.name, "state": self.state, "session_state": session_state(s) if s else None,
                "connections": getattr(s, "connections", 0) if s else 0, "tsih": getattr(s, "tsih", None),
                "negotiated": dataclasses.asdict(neg) if dataclasses.is_dataclass(neg) else None}

    def stats(self) -> dict:
        s = self.session
        sst = getattr(s, "stats", None)
        return {"name": self.name,
                "session": dataclasses.asdict(sst) if dataclasses.is_dataclass(sst) else None,
                "luns": {str(lr.lun): dataclasses.asdict(lr.device.stats) for lr in self.luns.values()
                         if lr.device is not None}}
