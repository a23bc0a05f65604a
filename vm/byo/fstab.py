"""The admin's ``--fstab-line '<source> <dir> <type> <options> <freq> <passno>'``, checked before any boot.

The line goes into the guest's /etc/fstab as the admin wrote it (their type and options), so it must be
one the proof can judge: a network entry (``_netdev`` or ``net``: the rc and systemd treat it as one), a
filesystem the host knows how to check read-only (vm/fscheck), mounted at boot (not ``noauto``), and a
source that is the LUN: its stable link ``/dev/disk/by-iscsi/<iqn>-lun<N>``, or a ``UUID=`` / ``LABEL=``
tag of the filesystem on it. Errors read ``--fstab-line: message``.
"""

from __future__ import annotations

from fstab_tools.fstab import Entry, parse_line
from fstab_tools.netfs import has_net_option
from vm.byo.target import ByoError
from vm.fscheck.filesystems import FILESYSTEMS

TAGS = ("UUID", "LABEL")


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
    tag = e.tag
    if tag is None and e.source != link:
        raise ByoError(f"--fstab-line: source {e.source!r} is not the LUN: use its stable link {link} "
                       f"(or UUID=... / LABEL=... of its filesystem)")
    if tag is not None and tag[0] not in TAGS:
        raise ByoError(f"--fstab-line: source {e.source!r}: use the LUN's link {link}, UUID= or LABEL=")
    return e


def format_label(entry: Entry, default: str) -> str:
    """The label a --format gives the new filesystem: the line's LABEL= (so the line finds it), else DEFAULT.
    A UUID= line cannot name a filesystem that does not exist yet."""
    tag = entry.tag
    if tag and tag[0] == "UUID":
        raise ByoError("--fstab-line: a UUID= source cannot name a filesystem --format is about to make; "
                       "use the LUN's stable link or LABEL=")
    return tag[1] if tag and tag[0] == "LABEL" else default
