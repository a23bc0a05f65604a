"""uiscsid: keep iSCSI sessions and hand each LUN to the kernel as /dev/nbdN (OpenBSD iscsid's shape).

It never reads a config file and never resolves a name: uiscsictl parses /etc/uiscsi.conf and pushes
targets with IP addresses over the root-only control socket (control.py), so reconnects need no DNS.
It flags itself no-broadcast-kill (iscsid_shim) so shutdown's kill sprees spare it, tells systemd it is
ready through NOTIFY_SOCKET, and on SIGTERM flushes, detaches what is not mounted, logs out and exits
(within 5 s). Mounted devices are never dropped by SIGTERM: with the ioctl bridge it keeps serving them
until they are unmounted (a second SIGTERM or a SIGINT forces the exit); with ``--attach netlink`` it
flushes and exits, and the kernel holds them (I/O waits) for replacement_timeout seconds until the next
uiscsid takes them over (NBD netlink reconfigure): a restart without losing the disks.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import logging.handlers
import os
import signal
import socket
import sys
from collections.abc import Sequence

from iscsid_shim import flag_self

from ..ctl.config import TargetConf, valid_iscsi_name
from ..errors import ISCSIError
from ..io.session import SessionConfig, open_session
from ..kernel.nbd_ioctl import NbdError
from .control import DEFAULT_SOCKET, ControlError, ControlServer
from .runtime import TargetRuntime
from .wire import from_wire

log = logging.getLogger("uiscsid")
LINK_DIR = "/dev/disk/by-iscsi"
SHOW_WHAT = ("summary", "sessions", "luns", "stats")
SHUTDOWN_BUDGET = 4.5       # SIGTERM to exit within 5 s, as OpenBSD's iscsid

EPILOG = """\
examples:
  uiscsid                        # detach, flag itself, serve /run/uiscsid.sock; then: uiscsictl reload
  uiscsid -d -s /tmp/u.sock --attach none --no-flag     # foreground, sessions only (tests, no root)
  uiscsid --attach netlink       # devices survive a restart: the next uiscsid takes them over

SIGTERM: flush, detach unmounted devices, log out, exit within 5 s. Mounted devices are kept: served until
unmounted (nbd; SIGTERM again or SIGINT forces), or left to the kernel for the next uiscsid (netlink).

needs root for: the NBD ioctls/netlink (CAP_SYS_ADMIN), creating /dev/disk/by-iscsi links, the control socket
in /run, and the no-broadcast-kill flag. With --attach none --no-flag -s PATH it runs unprivileged.
exit status: 0 after a clean shutdown, 1 on a start-up error."""


def sd_notify(message: str) -> bool:
    """Send ``message`` (e.g. "READY=1") to systemd's NOTIFY_SOCKET, if there is one. No library."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall(message.encode())
        return True
    except OSError as e:
        log.warning("sd_notify %s: %s", message, e)
        return False


def _same(a: TargetConf, b: TargetConf) -> bool:
    return dataclasses.replace(a, where="") == dataclasses.replace(b, where="")


class Daemon:
    """The targets and the control commands; one instance per process, driven by the asyncio loop."""

    def __init__(self, attach: str = "nbd", link_dir: str = LINK_DIR) -> None:
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
        if isinstance(wait, (int, float)) and wait > 0 and started:
            await asyncio.wait([asyncio.create_task(rt.settled.wait()) for rt in started], timeout=float(wait))
        summaries = [rt.summary() for rt in self.everything()]
        return {"targets": summaries,
                "added": [n for n in confs if n not in old], "removed": [n for n in old if n not in confs],
                "restarted": [n for n in going if n in confs],
                "failed": [s["name"] for s in summaries if s["state"] == "failed" or s["lun_errors"]],
                "pending": [rt.name for rt in started if not rt.settled.is_set()]}

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
            return {"luns": [{"target": rt.name, "target_name": rt.conf.target_name, **lr.info()}
                             for rt in rts for lr in rt.luns.values()]}
        return {"stats": [rt.stats() for rt in rts]}

    async def detach(self, args: dict) -> dict:
        name = args.get("name")
        rt = next((x for x in self.everything() if x.name == name), None)
        if rt is None:
            raise ControlError("not-found", f"no target called {name!r} (see uiscsictl show)")
        try:
            problems = await rt.stop(force=bool(args.get("force")))
        except NbdError as e:
            raise ControlError("busy", str(e)) from None
        return {"name": rt.name, "state": rt.state, "problems": problems}

    async def set_log(self, args: dict) -> dict:
        level = args.get("level")
        if level not in ("verbose", "brief"):
            raise ControlError("bad-request", "log level must be 'verbose' or 'brief'")
        logging.getLogger().setLevel(logging.DEBUG if level == "verbose" else logging.INFO)
        return {"level": level}

    async def discover(self, args: dict) -> dict:
        """A one-off discovery session from the daemon (address already resolved by uiscsictl)."""
        item = {**args, "name": "discover", "discovery": True, "target_name": None}
        try:
            conf = from_wire(item)
        except ValueError as e:
            raise ControlError("bad-request", str(e)) from None
        if not valid_iscsi_name(conf.initiator_name or ""):
            raise ControlError("bad-request", "discover needs an initiator_name")
        rt = TargetRuntime(conf, "none", self.link_dir)
        cfg: SessionConfig = rt.session_config()
        cfg.login_timeout = float(args.get("timeout", 20.0))
        try:
            session = await open_session(cfg)
            try:
                found = await session.send_targets()
            finally:
                await asyncio.wait_for(session.close(), 5)
        except (ISCSIError, OSError) as e:
            raise ControlError("failed", f"discovery at {conf.address}:{conf.port} failed: {e}") from None
        return {"targets": [{"name": t.name, "portals": [list(p) for p in t.portals]} for t in found]}

    # --------------------------------------------------------------------------------- shutdown
    async def _flush_all(self) -> list[str]:
        results = await asyncio.gather(*(rt.flush() for rt in self.everything()))
        return [p for r in results for p in r]

    async def shutdown(self) -> None:
        """SIGTERM: flush, detach what is unused, log out; keep serving mounted devices until free."""
        sd_notify("STOPPING=1")
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
            kept = [k for r in results if isinstance(r, list) for k in r if " kept: " in k]
            for r in results:
                if isinstance(r, BaseException):
                    log.error("shutdown: %s", r)
                else:
                    for problem in r:
                        if " kept: " not in problem:
                            log.warning("shutdown: %s", problem)
            if not kept:
                return
            if self.attach == "netlink" and not force:
                for problem in await self._flush_all():
                    log.warning("shutdown: %s", problem)
                for rt in self.everything():
                    await rt.park()
                log.warning("exiting; the kernel holds these for the next uiscsid (replacement_timeout): %s",
                            "; ".join(kept))
                return
            log.warning("not exiting while in use: %s (unmount, or send SIGTERM again to force)", "; ".join(kept))
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), 1.0)
            except TimeoutError:
                pass


async def serve(opts: argparse.Namespace, ready_fd: int | None = None) -> int:
    daemon = Daemon(opts.attach, opts.link_dir)
    server = ControlServer(opts.socket, daemon.handle)
    try:
        await server.start()
    except ControlError as e:
        log.error("%s", e.message)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop(signum: int) -> None:
        daemon.stop_requests += 1 if signum == signal.SIGTERM else 2
        log.info("%s: shutting down%s", signal.Signals(signum).name, " (forced)" if daemon.stop_requests > 1 else "")
        stop.set()
        daemon.wake.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP ignored: run uiscsictl reload"))
    sd_notify(f"READY=1\nMAINPID={os.getpid()}")
    if ready_fd is not None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
    log.info("ready on %s (attach: %s)", opts.socket, opts.attach)
    await stop.wait()
    try:
        await daemon.shutdown()
    finally:
        await server.close()
    log.info("exiting")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uiscsid", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="The userland iSCSI daemon: sessions to the targets uiscsictl "
                                            "pushes, each LUN attached as /dev/nbdN with a stable "
                                            "/dev/disk/by-iscsi/<iqn>-lun<N> link.", epilog=EPILOG)
    p.add_argument("-d", action="store_true", dest="foreground", help="stay in the foreground, log to stderr")
    p.add_argument("-s", dest="socket", metavar="SOCKET", default=DEFAULT_SOCKET,
                   help=f"control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--attach", choices=("nbd", "netlink", "none"), default="nbd",
                   help="nbd: give LUNs to the kernel through the NBD ioctls (default); netlink: through NBD "
                        "netlink, so that a restarted uiscsid takes over the live devices; none: sessions only")
    p.add_argument("--no-flag", action="store_true", help="do not flag itself no-broadcast-kill")
    p.add_argument("--link-dir", default=LINK_DIR, metavar="DIR", help=f"where the stable links go ({LINK_DIR})")
    p.add_argument("-v", "--verbose", action="store_true", help="log protocol detail")
    return p


def _daemonize() -> int:
    """Fork; the parent exits 0 once the child says it is ready (so `uiscsid && uiscsictl reload` works)."""
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        with os.fdopen(r, "rb") as f:
            ok = f.read(2) == b"ok"
        os._exit(0 if ok else 1)
    os.close(r)
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return w


def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if opts.attach != "none" and os.geteuid() != 0:
        sys.stderr.write(f"uiscsid: --attach {opts.attach} needs root (NBD setup); use --attach none\n")
        return 1
    ready_fd = None if opts.foreground else _daemonize()
    level = logging.DEBUG if opts.verbose else logging.INFO
    if opts.foreground:
        logging.basicConfig(level=level, format="uiscsid: %(message)s")
    else:
        root = logging.getLogger()
        root.setLevel(level)
        if os.path.exists("/dev/log"):
            handler = logging.handlers.SysLogHandler("/dev/log", logging.handlers.SysLogHandler.LOG_DAEMON)
            handler.setFormatter(logging.Formatter("uiscsid[%(process)d]: %(message)s"))
            root.addHandler(handler)
    if not opts.no_flag:
        try:
            flag_self("uiscsid")
        except Exception as e:  # noqa: BLE001 - as OpenBSD's iscsid: running unflagged would lose data
            log.error("cannot flag myself no-broadcast-kill: %s (use --no-flag to run anyway)", e)
            return 1
    return asyncio.run(serve(opts, ready_fd))


if __name__ == "__main__":
    sys.exit(main())
