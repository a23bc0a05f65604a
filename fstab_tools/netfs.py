"""Which fstab entries are network entries, and the `-N` selection built on that.

An entry is a network entry when it has the whole option `net` (OpenBSD) or `_netdev` (Linux), or
when its fstype is a network filesystem from `NETWORK_FSTYPES`. Options match whole, never by
prefix: `netdev`, `_netdevice` or `network` do not count. A `fuse.X` or `fuseblk.X` type counts when
X is in the list (`fuse.sshfs`).

`-N` selects the network entries only; without it, only the local ones (OpenBSD mount(8)/fsck(8)).
"""

from __future__ import annotations

from collections.abc import Iterable

from fstab_tools.fstab import Entry

NET_OPTIONS = frozenset({"net", "_netdev"})

# Filesystems that reach their data over the network, so they can only be checked or mounted once
# the network (and for block devices, the iSCSI session) is up. The documented list.
NETWORK_FSTYPES = frozenset(
    {
        "nfs", "nfs4",                          # NFS
        "cifs", "smb3", "smbfs",                # SMB
        "ncpfs", "ncp",                         # NetWare
        "afs", "davfs", "sshfs",                # AFS, WebDAV, SSH
        "ceph", "glusterfs", "lustre",          # cluster filesystems
        "gfs", "gfs2", "ocfs2", "pvfs2",        # shared-disk and parallel filesystems
        "s3fs", "rclone",                       # object stores through FUSE
    }
)  # fmt: skip


def is_network_fstype(fstype: str) -> bool:
    """True for a type in NETWORK_FSTYPES, or `fuse.X` / `fuseblk.X` with X in it."""
    base = fstype
    for prefix in ("fuse.", "fuseblk."):
        if fstype.startswith(prefix):
            base = fstype[len(prefix) :]
    return base in NETWORK_FSTYPES


def has_net_option(entry: Entry) -> bool:
    return any(o in NET_OPTIONS for o in entry.options)


def is_network(entry: Entry) -> bool:
    """The `-N` rule: whole option `net` or `_netdev`, or a network fstype."""
    return has_net_option(entry) or is_network_fstype(entry.fstype)


def select(entries: Iterable[Entry], net: bool) -> list[Entry]:
    """Entries on the chosen side of the `-N` filter; OpenBSD `xx` lines are never selected."""
    return [e for e in entries if not e.ignored and is_network(e) == net]


def mount_options(entry: Entry) -> list[str]:
    """Options to hand to mount(8): the private `net` dropped, OpenBSD `rq` as `rw`."""
    out = []
    for o in entry.options:
        if o == "net":
            continue
        out.append("rw" if o == "rq" else o)
    return out
