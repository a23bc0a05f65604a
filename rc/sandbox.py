"""The paths of uiscsid.service's sandbox, worked out from the render settings (the unit's [Service] part).

The unit runs the daemon with a read-only file system (ProtectSystem=strict) and writable paths only
where it writes. Those are:
- /run: the control socket (/run/uiscsid.sock by default: a new file in /run itself), the udev info files
  (/run/uiscsid/udev), the no-broadcast-kill registry (/run/bootkit) and Debian's /run/sendsigs.omit.d;
- the socket's directory, when --set socket= puts it elsewhere;
- /sys/devices/virtual/block: the daemon writes `change` to /sys/block/nbdN/uevent (a link into that
  directory) so that udev names the device; ProtectKernelTunables= leaves the rest of /sys read-only.
Two protections give way to the installation: a program (or its interpreter, such as a pyenv Python a
venv links to) or the socket under /home, /root or /run/user gets ProtectHome=read-only instead of yes
(the socket's directory then writable on top), and a socket under /tmp or /var/tmp gets no PrivateTmp=
(a private /tmp would hide it from uiscsictl).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from initiator.kernel.udev_info import INFO_DIR
from iscsid_shim.launch import read_shebang

RUN = os.path.dirname(os.path.dirname(INFO_DIR))   # /run
SYS_BLOCK_DEVICES = "/sys/devices/virtual/block"    # where /sys/block/nbdN leads
HOMES = ("/home", "/root", "/run/user")
TMPS = ("/tmp", "/var/tmp")


@dataclass(frozen=True)
class Sandbox:
    """What the template puts in uiscsid.service's sandbox lines."""

    writable: tuple[str, ...]
    protect_home: str       # "yes" or "read-only"
    private_tmp: bool


def under(path: str, roots: tuple[str, ...]) -> bool:
    path = os.path.normpath(path)
    return any(path == r or path.startswith(r + "/") for r in roots)


def program_files(programs: tuple[str, ...]) -> list[str]:
    """Each program, where it really is (links followed), and the same for its interpreter."""
    out = []
    for p in programs:
        out += [p, os.path.realpath(p)]
        if (shebang := read_shebang(p)) is not None:
            out += [shebang[0], os.path.realpath(shebang[0])]
    return out


def sandbox(socket: str, programs: tuple[str, ...]) -> Sandbox:
    socket_dir = os.path.dirname(os.path.normpath(socket)) or "/"
    home_socket = under(socket_dir, HOMES)
    writable = [RUN] if under(socket_dir, (RUN,)) and not home_socket else [RUN, socket_dir]
    home = home_socket or any(under(p, HOMES) for p in program_files(programs))
    return Sandbox(writable=(*writable, SYS_BLOCK_DEVICES), protect_home="read-only" if home else "yes",
                   private_tmp=not under(socket_dir, TMPS))
