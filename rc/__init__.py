"""Boot and shutdown ordering for systemd, sysvinit, busybox rc and OpenBSD, rendered from jinja2."""
