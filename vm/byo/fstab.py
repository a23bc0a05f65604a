"""The admin's ``--fstab-line '<source> <dir> <type> <options> <freq> <passno>'``, checked before any boot.

The line goes into the guest's /etc/fstab as the admin wrote it (their type and options), so it must be
one the proof can judge: a network entry (``_netdev`` or ``net``: the rc and systemd treat it as one), a
filesystem the host knows how to check read-only (vm/fscheck), mounted at boot (not ``noauto``), and the
LUN's stable link ``/dev/disk/by-iscsi/<iqn>-lun<N>`` as its source (the name the daemon and udev give
it, which the proof compares with what the init mounted). Errors read ``--fstab-line: message``.
"""

from __future__ import annotations

from fstab_tools.fstab import Entry, parse_line
from fstab_tools.netfs import has_net_option
from vm.byo.target import ByoError
from vm.fscheck.filesystems import FILESYSTEMS


def parse_fstab_line(text: str, link: str) -> Entry:
    """The entry of TEXT, or ByoError saying why the proof cannot use it; LINK is the LUN's stable link."""
    line = parse_line(text.strip(), 1)
    if line.error:
        raise ByoError(f"--fstab-line: {line.error}")
    e = line.entry
    if e is None:
        raise ByoError("--fstab-line: empty or a comment; give '<source> <dir> <type> <options> <freq> <passno>'")
    if e.fstype not in FILESYSTEMS:
        raise ByoError(f"--fstab-line: type {e.fstype!r}: the proof checks {', '.join(FILESYSTEMS)} from the host")
    if not has_net_option(e):
        raise ByoError("--fstab-line: no _netdev (or net) option: without it the boot treats the LUN as a "
                       "local disk, which is not what this proves")
    if e.noauto:
        raise ByoError("--fstab-line: noauto: the proof needs the filesystem mounted at boot")
    if not e.target.startswith("/") or e.target == "/":
        raise ByoError(f"--fstab-line: mount point {e.target!r}: give an absolute directory other than /")
    if e.source != link:
        raise ByoError(f"--fstab-line: source {e.source!r} is not the LUN: use its stable link {link} (the "
                       "proof compares what the init mounted with it)")
    return e
