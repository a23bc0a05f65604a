"""uiscsictl's daemon commands: reload, show, detach, log, daemon-discover (over the control socket).

Only this side reads /etc/uiscsi.conf and resolves names: the daemon receives IP addresses and inline
secrets over its root-only socket and never touches the file or DNS (OpenBSD iscsictl/iscsid's split).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import sys
from collections.abc import Callable

from ..daemon.wire import LOG_LEVELS, SHOW_WHAT, ControlError, to_wire
from ..kernel.udev_info import RULES_NAME
from ..protocol.addressing import valid_iscsi_name
from .client import ControlClient
from .config import DEFAULT_PATH, ConfigError, parse_file
from .output import table
from .url import parse_hostport

RELOAD_WAIT = 10.0
CONFIG_HELP = """\
config file (statements end at a newline or ';', # starts a comment):
  NAME = VALUE                 a macro, used as $NAME
  include "FILE"               relative to the including file
  initiatorname IQN
  target NAME {
    targetaddr ADDR [port P]   a name or an address; uiscsictl resolves it (the daemon never does)
    targetname IQN             (not needed for a discovery target)
    auth chap user U secret-file F [algorithms A,...]   F: mode 0600, first line is the secret;
                               A: md5, sha1, sha256, sha3-256 offered in this order (default sha3-256,sha1,md5)
    mutual user U secret-file F           the target proves itself too
    header_digest crc32c|none    data_digest crc32c|none
    connections N              MC/S, 1-16 (a target granting fewer is logged once)
    erl 0|1                    ErrorRecoveryLevel to offer (default 0; 1: digest errors recovered by SNACK)
    replacement_timeout S      default 120
    command_timeout S          default 30; 0: off   a command unanswered this long is aborted, then
    abort_timeout S            default 15           its LU reset, then the session reinstated; EIO for
    lu_reset_timeout S         default 30           it alone replacement_timeout s after that
    normal|discovery           enabled|disabled  lun N [N ...]   default: every disk LUN
  }
"""
_FMT = argparse.RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    """Add reload, show, detach, log and daemon-discover to the uiscsictl parser."""
    p = sub.add_parser("reload", formatter_class=_FMT, help="push the config file to uiscsid and wait",
                       description="Parse the config (all of it, first), resolve target names, push the "
                                   "targets to uiscsid, then wait until every session settles. Targets "
                                   "whose settings did not change keep their sessions and devices.",
                       epilog="examples:\n  uiscsictl reload\n  uiscsictl reload -f /etc/uiscsi.test.conf "
                              "--wait 30\n  uiscsictl reload --no-wait      # at boot, when a target may be "
                              "down\n\n" + CONFIG_HELP + "\nexit status: 0 when every enabled target is up and "
                              "every attached LUN's /dev/disk/by-iscsi link\nexists (made by udev where its rule "
                              "is installed, else by uiscsid), 1 when a target failed or is\nstill logging in or a "
                              "link did not appear within --wait (each is named), or on any error.")
    p.add_argument("-f", "--file", default=DEFAULT_PATH, help=f"config file (default {DEFAULT_PATH})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--wait", type=float, default=RELOAD_WAIT, metavar="SECONDS",
                   help=f"how long to wait for sessions to settle (default {RELOAD_WAIT:g})")
    g.add_argument("--no-wait", action="store_const", const=0.0, dest="wait", help="do not wait at all")
    p.add_argument("--force", action="store_true", help="detach devices in use when their target changed")
    p.set_defaults(func=_guard(cmd_reload))

    p = sub.add_parser("show", formatter_class=_FMT, help="targets, sessions, LUNs or counters of uiscsid",
                       description="Show what uiscsid holds: summary (targets and their state), sessions "
                                   "(connections and negotiated keys), luns (devices and by-iscsi links) "
                                   "or stats (commands, bytes and completions per device).",
                       epilog="examples:\n  uiscsictl show\n  uiscsictl show luns\n  uiscsictl show stats --json")
    p.add_argument("what", nargs="?", default="summary", choices=SHOW_WHAT)
    p.set_defaults(func=_guard(cmd_show))

    p = sub.add_parser("detach", formatter_class=_FMT, help="detach a target's devices and log it out",
                       description="Flush, detach the target's /dev/nbdN devices and log out. A mounted or "
                                   "held device is refused unless --force (its I/O then fails). The next "
                                   "reload attaches it again. --unused does it for every target whose "
                                   "devices are all free, and keeps the others logged in and served: the "
                                   "logout at shutdown, once the network filesystems are unmounted.",
                       epilog="examples:\n  uiscsictl detach data\n  uiscsictl detach data --force\n"
                              "  uiscsictl detach --unused       # systemd's uiscsi-reload.service stops so\n\n"
                              "exit status: 0 when done (--unused: also when devices in use were kept), 1 when a "
                              "target\nwas refused or a flush, detach or logout failed.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("name", metavar="NAME", nargs="?", help="target name from the config file")
    g.add_argument("--unused", action="store_true", help="every target none of whose devices is in use")
    p.add_argument("--force", action="store_true", help="detach even if mounted (not with --unused)")
    p.set_defaults(func=_guard(cmd_detach))

    p = sub.add_parser("log", formatter_class=_FMT, help="set uiscsid's log detail",
                       description="verbose logs protocol detail; brief logs state changes only.",
                       epilog="example:\n  uiscsictl log verbose")
    p.add_argument("level", choices=LOG_LEVELS)
    p.set_defaults(func=_guard(cmd_log))

    p = sub.add_parser("daemon-discover", formatter_class=_FMT, help="SendTargets run by uiscsid",
                       description="Ask uiscsid to open a discovery session to ADDR and list the targets. "
                                   "(`uiscsictl discover` does the same without the daemon.) CHAP comes "
                                   "from LIBISCSI_CHAP_USERNAME / LIBISCSI_CHAP_PASSWORD.",
                       epilog="example:\n  uiscsictl daemon-discover 192.0.2.10:3261")
    p.add_argument("address", metavar="ADDR[:PORT]")
    p.add_argument("-I", "--initiator-name", help="default: initiatorname from the config file")
    p.add_argument("-f", "--file", default=DEFAULT_PATH, help="config file to take initiatorname from")
    p.set_defaults(func=_guard(cmd_discover))


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Daemon and config errors become `uiscsictl: message` lines and exit status 1."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ControlError as e:
            return _fail(e.message.split("; ") if e.code == "bad-config" else [e.message])
        except ConfigError as e:
            return _fail(e.errors)
    return run


def _fail(lines: list[str]) -> int:
    for line in lines:
        sys.stderr.write(f"uiscsictl: {line}\n")
    return 1


def _client(args: argparse.Namespace, extra: float = 0.0) -> ControlClient:
    return ControlClient(args.socket, timeout=args.timeout + extra)


def resolve(host: str, port: int) -> str:
    """Name -> IP address (the first the resolver gives, IPv4 preferred); raises OSError."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    return infos[0][4][0]


def cmd_reload(args: argparse.Namespace) -> int:
    cfg = parse_file(args.file)
    wire, errors = [], []
    for t in cfg.targets:
        initiator = t.session.initiator_name or cfg.initiator_name
        if not initiator:
            errors.append(f"{t.where}: target {t.name!r} has no initiatorname (add one at the top of the file)")
            continue
        try:
            address = resolve(t.session.host, t.session.port)
        except OSError as e:
            errors.append(f"{t.where}: cannot resolve {t.session.host!r}: {e.strerror or e}")
            continue
        wire.append(to_wire(t, address, initiator))
    if errors:
        raise ConfigError(errors)
    with _client(args, extra=args.wait) as c:
        result = c.call("reload", targets=wire, wait=args.wait, force=args.force)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_summary(result["targets"])
    bad = [*result.get("failed", []), *result.get("pending", [])] if args.wait else []
    missing = result.get("missing_links", []) if args.wait else []
    if bad or missing:
        states = {t["name"]: t for t in result["targets"]}
        lines = []
        for n in bad:
            st = states[n]
            lines.append(f"target {n}: {st['state']}" + (f": {st['error']}" if st["error"] else ""))
            lines += [f"target {n} LUN {lun}: {err}" for lun, err in st.get("lun_errors", {}).items()]
        lines += [_missing_link(m, args.wait) for m in missing]
        return _fail(lines)
    return 0


def _missing_link(m: dict, wait: float) -> str:
    """Why a reload --wait still failed with the device attached: its by-iscsi link is not there."""
    why = (f"udev made no link after the change event (is {RULES_NAME} installed, e.g. by `bootkit rc "
           "install`, and udev's rules reloaded?)" if m.get("by") == "udev" else "the link is gone")
    return f"target {m['target']} LUN {m['lun']}: {m['device']} is attached but {m['link']} did not appear " \
           f"within {wait:g} s: {why}"


def cmd_show(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.call("show", what=args.what)
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.what == "summary":
        _print_summary(result["targets"])
    elif args.what == "sessions":
        for s in result["sessions"]:
            print(f"{s['name']}: {s['state']}, {s['connections']} connection(s), tsih {s['tsih']}")
            for key, value in (s["negotiated"] or {}).items():
                print(f"    {key} = {value}")
    elif args.what == "luns":
        print(table([[x["target"], x["lun"], _size(x["size"]), x["block_size"] or "-", x["device"] or "-",
                      x["link"] or x["error"] or "-"] for x in result["luns"]],
                    ["TARGET", "LUN", "SIZE", "BLOCK", "DEVICE", "LINK"]))
    else:
        for t in result["stats"]:
            s = t["session"] or {}
            print(f"{t['name']}: " + ", ".join(f"{k} {v}" for k, v in s.items()))
            for lun, st in t["luns"].items():
                cmds = " ".join(f"{k} {v}" for k, v in sorted(st["commands"].items()))
                print(f"    lun {lun}: {cmds}; read {st['bytes_read']} B, written {st['bytes_written']} B; "
                      f"ok {st['completed_ok']}, errors {st['completed_error']}; max in flight "
                      f"{st['max_in_flight']}")
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    if args.unused:
        if args.force:
            return _fail(["detach --unused keeps the devices in use: it takes no --force"])
        with _client(args, extra=10) as c:
            result = c.call("detach", unused=True)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for name in result["detached"]:
                print(f"{name}: detached")
            for dev, why in result["kept"].items():
                print(f"{dev}: kept, {', '.join(why)}")
        return _fail(result["problems"]) if result["problems"] else 0
    with _client(args) as c:
        result = c.call("detach", name=args.name, force=args.force)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['name']}: {result['state']}")
    return _fail(result["problems"]) if result["problems"] else 0


def cmd_log(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.call("log", level=args.level)
    print(json.dumps(result) if args.json else f"log level: {result['level']}")
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.address, "address")
    initiator = args.initiator_name
    if initiator is None and os.path.exists(args.file):
        initiator = parse_file(args.file).initiator_name
    if not initiator or not valid_iscsi_name(initiator):
        return _fail(["daemon-discover needs an initiator name: -I IQN or initiatorname in the config file"])
    try:
        address = resolve(host, port)
    except OSError as e:
        return _fail([f"cannot resolve {host!r}: {e.strerror or e}"])
    chap = None
    if os.environ.get("LIBISCSI_CHAP_USERNAME"):
        chap = {"user": os.environ["LIBISCSI_CHAP_USERNAME"], "secret": os.environ.get("LIBISCSI_CHAP_PASSWORD", "")}
    with _client(args, extra=5) as c:
        result = c.call("discover", address=address, port=port, initiator_name=initiator, chap=chap,
                        timeout=args.timeout)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for t in result["targets"]:
            print(t["name"])
            for host_, port_, tpgt in t["portals"]:
                print(f"    {host_}:{port_},{tpgt}")
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:g}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _print_summary(targets: list[dict]) -> None:
    print(table([[t["name"], t["state"], f"{t['address']}:{t['port']}", t["connections"],
                  ",".join(t["devices"]) or "-",
                  t["error"] or "; ".join(f"LUN {n}: {e}" for n, e in t.get("lun_errors", {}).items())
                  or (f"{len(t['discovered'])} target(s) found" if t["discovered"] else "")]
                 for t in targets], ["TARGET", "STATE", "ADDRESS", "CONN", "DEVICES", "DETAIL"]))
