"""A LUN's filesystem judged without mounting it: ext4, xfs and btrfs, each with its own read-only check.

Everything here reads an image file (or, in a guest, a block device) with the filesystem's own tools, and
never mounts anything: ``e2fsck -fn`` and ``dumpe2fs -h`` for ext4, ``xfs_repair -n -f`` and
``xfs_logprint -t`` for xfs, ``btrfs check --readonly`` and ``btrfs inspect-internal dump-super`` for btrfs.
Each answers the same questions as an `FsVerdict`: does the next mount have a journal (log) to replay,
does the checker find the filesystem consistent, and is the proof's payload there with its recorded hash
(read without replaying anything, as the next boot's fsck will first see it).

- `verdict`: the `FsVerdict` every check returns, and what "clean" and "damaged" mean.
- `filesystems`: one `Filesystem` per type (the tools, their output read as evidence, mkfs with a seed).
- `host`: check, create and seed an image file; `probe`: what an image or a LUN holds (blkid -p) and
  whether the test may format it; `remote`: the first and last MiB of a user's LUN through the target.
- ``python -m vm.fscheck``: the same checks from a shell (the guest-side check runs it on /dev/nbdN).
"""

from vm.fscheck.verdict import FsCheckError, FsVerdict

__all__ = ["FsCheckError", "FsVerdict"]
