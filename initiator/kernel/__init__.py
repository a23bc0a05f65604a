"""The kernel bridge (our vscsi(4)): LUNs served as /dev/nbdN over the NBD ioctls or netlink, stable names."""
