"""Which NBD interface gives a LUN to the kernel: netlink where the kernel has it, else the ioctls.

- netlink (nbd_netlink.KeptDevice): no process waits inside the kernel. The device survives signals to
  the daemon, SIGSTOP/SIGCONT included, and outlives the daemon for its dead-connection timeout, so a
  restarted uiscsid takes it over.
- ioctl (nbd_ioctl.NbdDevice): a thread waits in NBD_DO_IT for the life of the device. Any stop/continue
  of the daemon interrupts that wait and the kernel drops the device ("shutting down sockets"):
  systemd-shutdown and sysvinit's killall5 SIGSTOP and SIGCONT every process before each kill round,
  spared ones included, so a filesystem still mounted at that point loses its disk.

``auto`` (the default) asks for the generic netlink family "nbd" at each attach (it exists once the nbd
module is loaded, Linux >= 4.12) and falls back to the ioctls without it. ``nbd`` is the old name of
``ioctl`` and stays accepted.
"""

from __future__ import annotations

import errno

from .backends import BlockBackend
from .nbd_ioctl import NbdDevice
from .nbd_netlink import Genl, KeptDevice, NetlinkError

MODES = ("auto", "netlink", "ioctl", "nbd", "none")
DEFAULT = "auto"


def netlink_available() -> bool:
    """True when the kernel offers NBD's generic netlink family (the nbd module is loaded)."""
    try:
        with Genl() as g:
            g.family("nbd")
    except NetlinkError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    except OSError:  # no AF_NETLINK (not Linux, or a sandbox)
        return False
    return True


def resolve(mode: str) -> str:
    """The interface an attach in ``mode`` uses now: "netlink", "ioctl" or "none"."""
    if mode not in MODES:
        raise ValueError(f"attach mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "nbd":
        return "ioctl"
    if mode == "auto":
        return "netlink" if netlink_available() else "ioctl"
    return mode


def kind(device: NbdDevice) -> str:
    """How ``device`` was attached: "netlink" or "ioctl"."""
    return "netlink" if isinstance(device, KeptDevice) else "ioctl"


async def attach(mode: str, backend: BlockBackend, identifier: str, dead_conn_timeout: int) -> NbdDevice:
    """Attach ``backend`` as a /dev/nbdN in ``mode`` (not "none"); a netlink device left for
    ``identifier`` by an earlier uiscsid is taken over, not duplicated."""
    how = resolve(mode)
    if how == "ioctl":
        return await NbdDevice.attach(backend)
    if how == "netlink":
        return await KeptDevice.attach_kept(backend, identifier, dead_conn_timeout=dead_conn_timeout)
    raise ValueError("attach mode none attaches no device")
