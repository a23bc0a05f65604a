"""uiscsid: keep iSCSI sessions and hand each LUN to the kernel as /dev/nbdN (OpenBSD iscsid's shape).

It never reads a config file and never resolves a name: uiscsictl parses /etc/uiscsi.conf and pushes
targets with IP addresses over the root-only control socket (`control`), so reconnects need no DNS.
It flags itself no-broadcast-kill (iscsid_shim) so shutdown's kill sprees spare it, tells systemd it is
ready through NOTIFY_SOCKET, and on SIGTERM flushes, detaches what is not mounted, logs out and exits
(within 5 s). Mounted devices are never dropped by SIGTERM: a netlink-attached one (the default where
the kernel has NBD netlink) is flushed and left to the kernel, which holds it (I/O waits) for
replacement_timeout seconds until the next uiscsid takes it over (NBD netlink reconfigure): a restart
without losing the disks; an ioctl-attached one is served until it is unmounted (a second SIGTERM or a
SIGINT forces the exit). Device names: kernel/udev_info (udev's links where its rule is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import signal
import socket
import sys
from collections.abc import Sequence

from iscsid_shim import flag_self

from ..kernel import attach as nbd_attach
from ..kernel.devnames import LINK_DIR
from .control import ControlServer
from .service import Service
from .wire import DEFAULT_SOCKET, ControlError

log = logging.getLogger("uiscsid")

EPILOG = """\
examples:
  uiscsid                        # detach, flag itself, serve /run/uiscsid.sock; then: uiscsictl reload
  uiscsid -d -s /tmp/u.sock --attach none --no-flag     # foreground, sessions only (tests, no root)
  uiscsid --attach ioctl         # the old NBD ioctls (kernels without NBD netlink; see below)

attach (--attach): auto, the default, uses NBD netlink where the kernel has it (the nbd module loaded,
Linux >= 4.12), else the ioctls. A netlink device survives anything done to the daemon: signals, a
restart (the next uiscsid takes it over), even SIGKILL for replacement_timeout seconds. An ioctl device
lives in a thread waiting in NBD_DO_IT, and it cannot survive a SIGSTOP/SIGCONT of the daemon: the wait
is interrupted and the kernel drops the device. systemd-shutdown and sysvinit's killall5 SIGSTOP and
SIGCONT every process (the no-broadcast-kill ones too) around their kill rounds, so with --attach ioctl
a filesystem still mounted at the final unmount loses its disk and needs journal recovery.

names: each LUN gets /dev/disk/by-iscsi/<iqn>-lun<N>. Where udev runs and its rule 61-uiscsi.rules is
installed (`bootkit rc install`, or the Debian package), udev makes the link from the file uiscsid writes
under /run/uiscsid/udev, so systemd sees it as a device unit; elsewhere uiscsid makes the link itself.

SIGTERM: flush, detach unmounted devices, log out, exit within 5 s. Mounted devices are kept: left to the
kernel for the next uiscsid (netlink), or served until unmounted (ioctl; SIGTERM again or SIGINT forces).

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


async def serve(opts: argparse.Namespace, ready_fd: int | None = None) -> int:
    daemon = Service(opts.attach, opts.link_dir)
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
    sd_notify("STOPPING=1")
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
    p.add_argument("--attach", choices=nbd_attach.MODES, default=nbd_attach.DEFAULT,
                   help="how LUNs go to the kernel: auto (default): netlink where the kernel has it, else "
                        "ioctl; netlink: NBD netlink, devices outlive signals and restarts; ioctl (or its old "
                        "name nbd): the NBD ioctls, a device dies with a SIGSTOP of the daemon; none: "
                        "sessions only")
    p.add_argument("--no-flag", action="store_true", help="do not flag itself no-broadcast-kill")
    p.add_argument("--link-dir", default=LINK_DIR, metavar="DIR",
                   help=f"where the stable links go ({LINK_DIR}; another dir: links made by uiscsid, never udev)")
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
