"""uiscsid's service: the targets it holds and the control commands (reload, show, detach, log, discover).

One `Service` per process, driven by the asyncio loop: the control server (`control`) hands it each
request, a `runtime.TargetRuntime` runs each target, and `shutdown` is what SIGTERM does. It never reads
a config file and never resolves a name: uiscsictl pushes `wire.TargetConf`s with IP addresses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os

from ..errors import ISCSIError
from ..io.session import open_session
from ..kernel import attach as nbd_attach
from ..kernel.devnames import LINK_DIR
from ..kernel.nbd_wire import NbdError
from .runtime import StopReport, TargetRuntime
from .wire import LOG_LEVELS, SHOW_WHAT, ControlError, TargetConf, discover_from_wire, from_wire

log = logging.getLogger("uiscsid")
SHUTDOWN_BUDGET = 4.5       # SIGTERM to exit within 5 s, as OpenBSD's iscsid


def _same(a: TargetConf, b: TargetConf) -> bool:
    return dataclasses.replace(a, where="") == dataclasses.replace(b, where="")


class Service:
    """The targets and the control commands; one instance per process, driven by the asyncio loop."""

    def __init__(self, attach: str = nbd_attach.DEFAULT, link_dir: str = LINK_DIR) -> None:
        self.attach = attach
        self.link_dir = link_dir
        self.targets: dict[str, TargetRuntime] = {}
        self.stop_requests = 0
        self.wake = asyncio.Event()
        self.changing = asyncio.Lock()      # one reload/detach at a time: they replace the target set

    async def handle(self, command: str, args: dict) -> dict:
        handler = {"reload": self.reload, "show": self.show, "detach": self.detach, "log": self.set_log,
                   "discover": self.discover, "ping": self.ping}.get(command)
        if handler is None:
            raise ControlError("unknown-command", f"unknown command {command!r}")
        if self.stop_requests and command in ("reload", "detach"):
            raise ControlError("stopping", "uiscsid is shutting down")
        if command in ("reload", "detach"):
            async with self.changing:
                return await handler(args)
        return await handler(args)

    def everything(self) -> list[TargetRuntime]:
        """Configured targets, each followed by the targets its discovery found."""
        return [x for rt in self.targets.values() for x in (rt, *rt.children)]

    async def ping(self, args: dict) -> dict:
        return {"pid": os.getpid(), "attach": self.attach, "targets": len(self.targets)}

    # --------------------------------------------------------------------------------- reload
    async def reload(self, args: dict) -> dict:
        """Replace the target set: validate all, refuse if a busy device would go, then apply and wait."""
        raw = args.get("targets")
        if not isinstance(raw, list):
            raise ControlError("bad-request", "reload needs a list of 'targets'")
        confs, errors = {}, []
        for item in raw:
            try:
                conf = from_wire(item)
            except ValueError as e:
                errors.append(str(e))
                continue
            if conf.name in confs:
                errors.append(f"target {conf.name!r} appears twice")
            confs[conf.name] = conf
        if errors:
            raise ControlError("bad-config", "; ".join(errors))
        old = self.targets
        going = [n for n, rt in old.items() if n not in confs or not _same(rt.conf, confs[n])]
        busy = {n: old[n].busy() for n in going if old[n].busy()}
        if busy and not args.get("force"):
            what = "; ".join(f"{n}: {', '.join(f'{d} {u[0]}' for d, u in b.items())}" for n, b in busy.items())
            raise ControlError("busy", f"reload would detach devices in use ({what}); nothing was changed")
        for n in going:
            await old[n].stop(force=True)
        new: dict[str, TargetRuntime] = {}
        started = []
        for name, conf in confs.items():
            rt = old.get(name)
            if rt is None or name in going or rt.state == "detached":
                rt = TargetRuntime(conf, self.attach, self.link_dir)
                if conf.enabled:
                    rt.start()
                    started.append(rt)
                else:
                    rt.state = "disabled"
            elif rt.state in ("failed", "logging-in"):
                rt.kick()  # unchanged but not logged in: try now, and let --wait cover it
                started.append(rt)
            new[name] = rt
        self.targets = new
        wait = args.get("wait")
        missing: list[dict] = []
        if isinstance(wait, (int, float)) and wait > 0:
            deadline = asyncio.get_running_loop().time() + float(wait)
            if started:
                await asyncio.wait([asyncio.create_task(rt.settled.wait()) for rt in started], timeout=float(wait))
            missing = await self._wait_for_links(deadline)
        summaries = [rt.summary() for rt in self.everything()]
        return {"targets": summaries,
                "added": [n for n in confs if n not in old], "removed": [n for n in old if n not in confs],
                "restarted": [n for n in going if n in confs],
                "failed": [s["name"] for s in summaries if s["state"] == "failed" or s["lun_errors"]],
                "pending": [rt.name for rt in started if not rt.settled.is_set()],
                "missing_links": missing}

    async def _wait_for_links(self, deadline: float) -> list[dict]:
        """Wait until every attached LUN's by-iscsi link leads to its device (udev makes it a moment after
        the change event); returns the ones still missing at ``deadline``."""
        loop = asyncio.get_running_loop()
        while True:
            missing = [m for rt in self.targets.values() for m in rt.missing_links()]
            if not missing or loop.time() >= deadline:
                return missing
            await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    # --------------------------------------------------------------------------------- show & co
    async def show(self, args: dict) -> dict:
        what = args.get("what", "summary")
        if what not in SHOW_WHAT:
            raise ControlError("bad-request", f"show {what!r}: expected one of {', '.join(SHOW_WHAT)}")
        rts = self.everything()
        if what == "summary":
            return {"targets": [rt.summary() for rt in rts]}
        if what == "sessions":
            return {"sessions": [rt.session_info() for rt in rts]}
        if what == "luns":
            return {"luns": [{"target": rt.name, "target_name": rt.conf.session.target_name, **lr.info()}
                             for rt in rts for lr in rt.luns.values()]}
        return {"stats": [rt.stats() for rt in rts]}

    async def detach(self, args: dict) -> dict:
        if args.get("unused"):
            return await self.detach_unused()
        name = args.get("name")
        rt = next((x for x in self.everything() if x.name == name), None)
        if rt is None:
            raise ControlError("not-found", f"no target called {name!r} (see uiscsictl show)")
        try:
            report = await rt.stop(force=bool(args.get("force")))
        except NbdError as e:
            raise ControlError("busy", str(e)) from None
        return {"name": rt.name, "state": rt.state, "problems": report.problems}

    async def detach_unused(self) -> dict:
        """Log out of every target none of whose devices is in use; a target with a mounted or held device
        keeps its session (and detaches its other devices), so that device stays served. The shutdown's
        logout: systemd's reload unit runs it after the network filesystems are unmounted."""
        detached, kept, problems = [], {}, []
        for rt in list(self.targets.values()):
            if rt.state in ("detached", "disabled"):
                continue
            try:
                report = await rt.stop(keep_busy=True)
            except NbdError as e:
                problems.append(str(e))
                continue
            problems += report.problems
            if report.kept:
                kept.update(report.kept)
            else:
                detached.append(rt.name)
        for what, why in kept.items():
            log.info("%s stays attached: %s", what, ", ".join(why))
        return {"detached": detached, "kept": kept, "problems": problems}

    async def set_log(self, args: dict) -> dict:
        level = args.get("level")
        if level not in LOG_LEVELS:
            raise ControlError("bad-request", "log level must be 'verbose' or 'brief'")
        logging.getLogger().setLevel(logging.DEBUG if level == "verbose" else logging.INFO)
        return {"level": level}

    async def discover(self, args: dict) -> dict:
        """A one-off discovery session from the daemon (address already resolved by uiscsictl)."""
        try:
            params = discover_from_wire(args)
        except ValueError as e:
            raise ControlError("bad-request", str(e)) from None
        try:
            session = await open_session(params)
            try:
                found = await session.send_targets()
            finally:
                await asyncio.wait_for(session.close(), 5)
        except (ISCSIError, OSError) as e:
            raise ControlError("failed", f"discovery at {params.host}:{params.port} failed: {e}") from None
        return {"targets": [{"name": t.name, "portals": [list(p) for p in t.portals]} for t in found]}

    # --------------------------------------------------------------------------------- shutdown
    async def _flush_all(self) -> list[str]:
        results = await asyncio.gather(*(rt.flush() for rt in self.everything()))
        return [p for r in results for p in r]

    async def shutdown(self) -> None:
        """SIGTERM: flush, detach what is unused, log out; keep serving mounted devices until free."""
        while True:
            force = self.stop_requests > 1
            try:
                results = await asyncio.wait_for(asyncio.gather(
                    *(rt.stop(force=force, keep_busy=True, timeout=4.0)
                      for rt in self.targets.values() if rt.state != "detached"), return_exceptions=True),
                    SHUTDOWN_BUDGET)
            except TimeoutError:
                log.error("shutdown: flush/detach/logout took over %gs; exiting anyway", SHUTDOWN_BUDGET)
                return
            kept: dict[str, list[str]] = {}
            for r in results:
                if isinstance(r, StopReport):
                    kept.update(r.kept)
                    for problem in r.problems:
                        log.warning("shutdown: %s", problem)
                else:
                    log.error("shutdown: %s", r)
            if not kept:
                return
            in_use = "; ".join(f"{dev} kept: {', '.join(why)}" for dev, why in kept.items())
            kinds = {lr.device.path: nbd_attach.kind(lr.device) for rt in self.everything()
                     for lr in rt.luns.values() if lr.device is not None}
            if not force and all(kinds.get(dev) == "netlink" for dev in kept):
                for problem in await self._flush_all():
                    log.warning("shutdown: %s", problem)
                for rt in self.everything():
                    await rt.park()
                log.warning("exiting; the kernel holds these for the next uiscsid (replacement_timeout): %s",
                            in_use)
                return
            log.warning("not exiting while in use: %s (unmount, or send SIGTERM again to force)", in_use)
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), 1.0)
            except TimeoutError:
                pass
