"""OpenBSD's no-broadcast-kill flag, emulated on Linux for the storage daemon.

The daemon calls ``flag_self("uiscsid")`` once at start-up; ``bootkit killall5`` and
``bootkit shutdown-kill`` then spare it, Debian's sendsigs finds it in sendsigs.omit.d, and systemd's final
kill spree sees an argv[0] starting with '@'.
"""

from iscsid_shim.registry import Flag, flag, flag_self, flagged, is_flagged, unflag

__all__ = ["Flag", "flag", "flag_self", "flagged", "is_flagged", "unflag"]
