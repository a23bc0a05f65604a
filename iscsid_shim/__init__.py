"""OpenBSD's no-broadcast-kill flag, emulated on Linux for the storage daemon."""
