"""Render the boot and shutdown ordering for one init system from the jinja2 templates in rc/templates/.

The model is one `Settings` (every path and command the scripts use, so the same templates serve a real
host and the QEMU guest, which runs the project's venv binaries at host paths) plus the network entries
of an fstab. The program paths default to the installation that runs the renderer (rc/programs.py).
`render()` is pure: it returns the files as {relative path: RenderedFile}; `write()` puts them under a
directory (-o DIR, or DESTDIR-style under --root with systemd's enable symlinks) and `remove()` takes
them away again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from fstab_tools.fstab import Entry, Fstab, FstabError, mangle
from fstab_tools.netfs import is_network, is_network_fstype
from initiator.daemon.wire import DEFAULT_SOCKET
from initiator.kernel.attach import MODES as ATTACH_MODES
from rc import programs, udev
from rc.sandbox import sandbox

INIT_SYSTEMS = ("systemd", "sysvinit", "busybox", "openbsd")
TEMPLATES = Path(__file__).parent / "templates"
SYSTEMD_DIR = "etc/systemd/system"
UDEV_RULES = f"etc/udev/rules.d/{udev.RULES_NAME}"
RENDERED_MARK = "Rendered by `bootkit rc render"  # in every file we write; remove() deletes only those
BSD_TYPES = ("rw", "ro", "rq")
# Linux-only options an OpenBSD mount(8) does not know; `_netdev` becomes `net`.
LINUX_ONLY = re.compile(r"^(defaults|auto|nofail|_netdev|x-[^=]*(=.*)?|comment=.*|users?|owner|errors=.*)$")


@dataclass(frozen=True)
class Settings:
    """Everything a rendered script names. Shell-valued fields are shell code, put in as they are."""

    bootkit: str = field(default_factory=lambda: programs.program("bootkit"))
    uiscsid: str = field(default_factory=lambda: programs.program("uiscsid"))
    uiscsictl: str = field(default_factory=lambda: programs.program("uiscsictl"))
    fstab: str = "/etc/fstab"
    config: str = "/etc/uiscsi.conf"
    socket: str = DEFAULT_SOCKET
    pidfile: str = "/run/uiscsid.pid"
    log: str = "/run/bootkit-rc.log"
    daemon_log: str = "/run/uiscsid.log"
    reload_wait: float = 10.0
    ctl_timeout: float = 20.0
    stop_timeout: float = 15.0
    start_timeout: float = 180.0
    shim: bool = True
    sandbox: bool = True
    attach: str = ""
    network: str = "ifup -a"
    services_start: str = ":"
    services_stop: str = ":"
    local_fsck: str = ""
    local_mount: str = ""
    local_umount: str = ""
    shutdown_kill_args: str = ""
    poweroff: str = "poweroff -f"
    openbsd_config: str = "/etc/iscsi.conf"

    def resolved(self) -> Settings:
        """Fill the local fsck/mount/umount defaults: bootkit's own, without -N (local entries only)."""
        bk, fs = shlex.quote(self.bootkit), shlex.quote(self.fstab)
        return dataclasses.replace(
            self,
            network=self.network or ":",
            services_start=self.services_start or ":",
            services_stop=self.services_stop or ":",
            local_fsck=self.local_fsck or f"{bk} fsck -p --fstab {fs}",
            local_mount=self.local_mount or f"{bk} mount -a --fstab {fs}",
            local_umount=self.local_umount or f"{bk} umount -a --fstab {fs}",
        )


HELP = {
    "bootkit": "path of the bootkit program (default: this installation's)",
    "uiscsid": "path of the daemon (default: this installation's)",
    "uiscsictl": "path of the control program (default: this installation's)", "fstab": "fstab the scripts use (and the renderer reads)",
    "config": "uiscsi.conf handed to `uiscsictl reload -f`", "socket": "control socket (-s on both)",
    "pidfile": "where rc keeps the daemon's PID", "log": "rc step log with timestamps (busybox, sysvinit)",
    "daemon_log": "daemon stdout/stderr (busybox, sysvinit)", "reload_wait": "reload --wait seconds",
    "ctl_timeout": "uiscsictl --timeout",
    "stop_timeout": "seconds to wait for the daemon to log out and exit",
    "start_timeout": "seconds a slow Python start may take: the daemon's, until its control socket exists "
                     "(every init); under systemd also reload's, on top of its waits",
    "shim": "run the daemon under `bootkit shim run` (false: `uiscsid --no-flag`, the negative control)",
    "sandbox": "systemd: run the daemon sandboxed (read-only system, CAP_SYS_ADMIN only; rc/sandbox.py)",
    "attach": "uiscsid --attach (auto, netlink, ioctl, none); empty: the daemon's default, auto",
    "network": "shell code bringing the network up (busybox)",
    "services_start": "shell code starting the services (busybox)",
    "services_stop": "shell code stopping the services (busybox)",
    "local_fsck": "shell code checking the local filesystems (busybox)",
    "local_mount": "shell code mounting the local filesystems (busybox)",
    "local_umount": "shell code unmounting the local filesystems (busybox)",
    "shutdown_kill_args": "extra arguments of `bootkit shutdown-kill` (busybox), e.g. --term-wait 1",
    "poweroff": "shell code for the last step of rc.shutdown (busybox); empty: leave it to the caller",
    "openbsd_config": "iscsi.conf of OpenBSD's own iscsictl",
}


@dataclass(frozen=True)
class RenderedFile:
    text: str
    mode: int = 0o644


@dataclass(frozen=True)
class Rendered:
    """The files of one init system, and the enable symlinks `install` adds (link -> target)."""

    files: dict[str, RenderedFile]
    links: dict[str, str] = field(default_factory=dict)


class RenderError(Exception):
    """Bad settings or an unusable fstab; the message is for the user."""


def parse_setting(settings: Settings, assignment: str) -> Settings:
    """Apply one `KEY=VALUE` (from `--set`), converting VALUE to the field's type."""
    key, sep, value = assignment.partition("=")
    key = key.strip().replace("-", "_")
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if not sep or key not in fields:
        raise RenderError(f"--set {assignment!r}: use KEY=VALUE with KEY one of {', '.join(fields)}")
    kind = type(getattr(Settings(), key))
    converted: object = value
    if kind is bool:
        if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise RenderError(f"--set {key}: {value!r} is not a boolean (true/false)")
        converted = value.lower() in ("1", "true", "yes", "on")
    elif kind is float:
        try:
            converted = float(value)
        except ValueError:
            raise RenderError(f"--set {key}: {value!r} is not a number") from None
        if converted < 0:
            raise RenderError(f"--set {key}: must be >= 0")
    return dataclasses.replace(settings, **{key: converted})


def systemd_escape_path(path: str) -> str:
    """systemd-escape --path: the unit name stem of a mount point (/srv/my disk -> srv-my\\x20disk)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "-"
    out = []
    for i, ch in enumerate("/".join(parts)):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_") or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def systemd_quote(word: str) -> str:
    """One argument of an Exec= line: specifiers (%) and variables ($) escaped, quoted when needed."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not re.search(r"[\s\"'\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def shell_number(value: float) -> str:
    """A number for sleep(1) and --wait: no trailing .0 on integers."""
    return f"{value:g}"


def openbsd_entry(e: Entry) -> str:
    """The fstab line an OpenBSD host needs: its fs_type first, `net`, Linux-only options dropped."""
    opts = [o for o in e.options if not LINUX_ONLY.match(o) and o != "net"]
    bsd = next((o for o in opts if o in BSD_TYPES), "rw")
    opts = [bsd, "net", *[o for o in opts if o not in BSD_TYPES and o != "rw"]]
    fields = [mangle(e.source, first_field=True), mangle(e.target), mangle(e.fstype), mangle(",".join(opts))]
    return " ".join([*fields, str(e.freq), str(e.passno)])


def load_net_entries(fstab_path: str, init: str) -> tuple[list[Entry], list[str]]:
    """The network entries of an fstab, and its problems for init as `file:line: message`."""
    try:
        fstab = Fstab.load(fstab_path)
    except FstabError as exc:  # missing, unreadable, too big
        raise RenderError(str(exc)) from None
    problems = [str(err) for err in fstab.errors]
    entries = []
    for line, e in fstab.entries:
        if e.ignored or not is_network(e):
            continue
        entries.append(e)
        net_only = "net" in e.options and "_netdev" not in e.options and not is_network_fstype(e.fstype)
        if init == "systemd" and net_only:
            problems.append(f"{fstab.filename}:{line.lineno}: {e.target}: `net` without `_netdev`: "
                            "systemd mounts it as a local filesystem, before the network; "
                            "add _netdev for systemd hosts")
    return entries, problems


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["sh"] = shlex.quote
    env.filters["sd"] = systemd_quote
    env.filters["num"] = shell_number
    return env


def render(init: str, settings: Settings, net_entries: list[Entry] | None = None) -> Rendered:
    """The files for init (one of INIT_SYSTEMS); net_entries are the fstab's network entries."""
    if init not in INIT_SYSTEMS:
        raise RenderError(f"unknown init system {init!r}: choose one of {', '.join(INIT_SYSTEMS)}")
    s = settings.resolved()
    if s.attach and s.attach not in ATTACH_MODES:
        raise RenderError(f"--set attach={s.attach}: choose one of {', '.join(ATTACH_MODES)}")
    env = _env()
    ctx = {"s": s, "init": init, "net_entries": net_entries or [], "udev_dir": udev.INFO_DIR,
           "link_dir": udev.LINK_SUBDIR,
           "attach_sh": f" --attach {shlex.quote(s.attach)}" if s.attach else "",
           "attach_sd": f" --attach {systemd_quote(s.attach)}" if s.attach else ""}

    def t(name: str, **extra: object) -> str:
        return env.get_template(name).render(**ctx, **extra)

    if init == "systemd":
        ctx["sb"] = sandbox(s.socket, (s.bootkit, s.uiscsid))
        files = {
            f"{SYSTEMD_DIR}/uiscsid.service": RenderedFile(t("systemd/uiscsid.service.j2")),
            f"{SYSTEMD_DIR}/uiscsi-reload.service": RenderedFile(t("systemd/uiscsi-reload.service.j2")),
            f"{SYSTEMD_DIR}/uiscsi-logout.service": RenderedFile(t("systemd/uiscsi-logout.service.j2")),
            UDEV_RULES: RenderedFile(t("udev/uiscsi.rules.j2")),
        }
        for e in net_entries or []:
            if is_network_fstype(e.fstype):
                continue  # NFS, CIFS...: no iSCSI disk under it, nothing to wait for
            unit = systemd_escape_path(e.target) + ".mount"
            files[f"{SYSTEMD_DIR}/{unit}.d/50-uiscsi.conf"] = RenderedFile(t("systemd/netmount.conf.j2", e=e))
        wants = f"{SYSTEMD_DIR}/remote-fs.target.wants"
        links = {f"{wants}/uiscsid.service": "../uiscsid.service",
                 f"{wants}/uiscsi-reload.service": "../uiscsi-reload.service",
                 f"{wants}/uiscsi-logout.service": "../uiscsi-logout.service"}
        return Rendered(files, links)
    if init == "sysvinit":  # Debian's sysvinit runs udev too
        return Rendered({"etc/init.d/uiscsid": RenderedFile(t("sysvinit/uiscsid.j2"), 0o755),
                         UDEV_RULES: RenderedFile(t("udev/uiscsi.rules.j2"))})
    if init == "busybox":
        return Rendered({
            "etc/rc": RenderedFile(t("busybox/rc.j2"), 0o755),
            "etc/rc.shutdown": RenderedFile(t("busybox/rc.shutdown.j2"), 0o755),
            "etc/inittab": RenderedFile(t("busybox/inittab.j2")),
        })
    lines = [openbsd_entry(e) for e in net_entries or []]
    return Rendered({
        "etc/rc.d/iscsid": RenderedFile(t("openbsd/iscsid.j2"), 0o555),
        "etc/fstab.net": RenderedFile(t("openbsd/fstab.net.j2", lines=lines)),
        "etc/rc.conf.local.iscsid": RenderedFile(t("openbsd/rc.conf.local.j2")),
        "usr/local/share/doc/bootkit/openbsd-rc.txt": RenderedFile(t("openbsd/notes.txt.j2")),
    })


def write(rendered: Rendered, root: str | Path, links: bool = False) -> list[Path]:
    """Write the files under root (mode kept); with links, add the enable symlinks. Returns the paths."""
    root = Path(root)
    written = []
    for rel, f in sorted(rendered.files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(f.text)
        tmp.chmod(f.mode)
        os.replace(tmp, path)
        written.append(path)
    if links:
        for rel, target in sorted(rendered.links.items()):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()
            path.symlink_to(target)
            written.append(path)
    return written


def remove(rendered: Rendered, root: str | Path, keep: Callable[[Path], str | None] = lambda _: None,
           ) -> tuple[list[Path], list[str]]:
    """Undo `write(rendered, root, links=True)`: delete the enable symlinks and the files we rendered.

    A file is deleted only when it carries RENDERED_MARK (an admin's own file of the same name stays),
    and when ``keep(path)`` gives no reason to keep it (the caller's check, e.g. "owned by a package").
    The unit directories install made (.wants, .mount.d) go when empty. Returns (removed, kept: why).
    """
    root = Path(root)
    removed: list[Path] = []
    kept: list[str] = []
    for rel, target in sorted(rendered.links.items()):
        path = root / rel
        if path.is_symlink() and os.readlink(path) == target:
            path.unlink()
            removed.append(path)
    for rel in sorted(rendered.files):
        path = root / rel
        if not path.is_file():
            continue
        try:
            ours = RENDERED_MARK in path.read_text(errors="replace")[:4096]
        except OSError as exc:
            kept.append(f"{path}: {exc.strerror}")
            continue
        why = keep(path) if ours else "not written by bootkit rc"
        if why:
            kept.append(f"{path}: kept, {why}")
            continue
        path.unlink()
        removed.append(path)
    # The .wants and .mount.d directories are install's own; etc/udev/rules.d, etc/init.d... are not.
    units = root / SYSTEMD_DIR
    for path in sorted({p.parent for p in removed}, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty, or already gone
            if path.parent == units and not any(path.iterdir()):
                path.rmdir()
    return removed, kept
