"""fstab parsing with OpenBSD's `net` option and Linux `_netdev`: -N selection for fsck, mount and umount."""
