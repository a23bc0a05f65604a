"""Boot and shutdown ordering fragments for systemd, sysvinit, busybox rc and OpenBSD, rendered from jinja2."""
