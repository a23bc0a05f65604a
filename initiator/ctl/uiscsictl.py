"""`uiscsictl`: the command-line front of the userland initiator.

This file only builds the parser and runs what a subcommand module chose. Each module in
`SUBCOMMAND_MODULES` exposes ``register(subparsers)``, which adds its parsers and sets ``func`` (a
callable taking the parsed namespace and returning an exit code, or a coroutine that returns one).
Only the module that owns the chosen word is imported (`COMMAND_MODULE`): under a TCG guest at boot every
module costs seconds, and `uiscsictl reload` needs neither asyncio nor the one-shot tools.
The global options (-s, --timeout, --json, --debug) are accepted before or after the subcommand word.
Every error becomes one line ``uiscsictl: message`` and exit status 1; --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
import traceback
from collections.abc import Sequence

from ..daemon.wire import DEFAULT_SOCKET
from ..errors import ISCSIError
from .url import URLError

PROG = "uiscsictl"
DEFAULT_TIMEOUT = 20.0
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

SUBCOMMAND_MODULES = ["initiator.ctl.query", "initiator.ctl.daemon_commands"]
# word -> the module whose register() adds it; a word missing here loads every module (help, typos)
COMMAND_MODULE = {
    **dict.fromkeys(("discover", "inquiry", "capacity", "luns", "cp", "perf"), "initiator.ctl.query"),
    **dict.fromkeys(("reload", "show", "detach", "log", "daemon-discover"), "initiator.ctl.daemon_commands"),
}
_OPTIONS_WITH_VALUE = ("-s", "--socket", "--timeout")

DESCRIPTION = """\
Talk to iSCSI targets directly (one-shot tools) or to the uiscsid daemon.

One-shot tools log in, do their work and log out: discover, inquiry, capacity, luns, cp, perf.
Targets are named by libiscsi-style URLs, iscsi://[user[%secret]@]host[:port]/IQN/LUN, so the same
URL works with qemu-img and libiscsi's tools. URL arguments, joined with '&' after a '?':
  header_digest=crc32c|none, data_digest=crc32c|none
  target_user=U&target_password=P   mutual CHAP: the target proves itself too
  chap_algorithms=A[,A...]          CHAP algorithms to offer, in this order, from md5, sha1, sha256,
                                    sha3-256 (default sha3-256,sha1,md5; the target picks the first it knows)
  max_connections=N                 MC/S, 1-16; a target that grants fewer gets a one-line notice
  erl=0|1                           ErrorRecoveryLevel to offer (default 0); at 1 a digest error is
                                    recovered by SNACK, without logging in again, where the target agrees
Put CHAP secrets in LIBISCSI_CHAP_USERNAME, LIBISCSI_CHAP_PASSWORD (and ..._TARGET_USERNAME/
_TARGET_PASSWORD for mutual CHAP) to keep them off the process list."""

EPILOG = """\
examples:
  uiscsictl discover 192.0.2.10
  uiscsictl inquiry iscsi://192.0.2.10/iqn.2026-11.org.example:disk/1
  uiscsictl capacity --json iscsi://192.0.2.10:3261/iqn.2026-11.org.example:disk/1
  uiscsictl capacity 'iscsi://u%s@192.0.2.10/iqn.2026-11.org.example:disk/1?chap_algorithms=sha256,md5'
  uiscsictl inquiry 'iscsi://192.0.2.10/iqn.2026-11.org.example:disk/1?data_digest=crc32c&erl=1'
  uiscsictl cp disk.img iscsi://192.0.2.10/iqn.2026-11.org.example:disk/1
  uiscsictl perf iscsi://192.0.2.10/iqn.2026-11.org.example:disk/1 --block-size 4k --queue-depth 32 \\
      --seconds 5 --random --json

environment:
  LIBISCSI_CHAP_USERNAME, LIBISCSI_CHAP_PASSWORD          CHAP towards the target
  LIBISCSI_CHAP_TARGET_USERNAME, ..._TARGET_PASSWORD      mutual CHAP (the target proves itself)
  UISCSI_EVENT_LOOP=auto|uvloop|asyncio   event loop (default auto: uvloop when installed)

uiscsid's command timeouts (per target in uiscsi.conf, see `uiscsictl reload --help`): a command the
target leaves unanswered for command_timeout (30 s) gets an ABORT TASK (abort_timeout 15 s), then a
LOGICAL UNIT RESET (lu_reset_timeout 30 s), then the session is reinstated; replacement_timeout (120 s)
later that one request fails with EIO and the rest goes on. `uiscsictl show --json` counts each step.

exit status: 0 on success, 1 on any error (one line on stderr), 2 on a usage error. A one-shot
tool whose target stalls (a command or a logout never answered, a half-open connection) exits with 1 within
--timeout + 1 s."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as ``uiscsictl: message`` with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{PROG}: {message}\n")


def _add_global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    """The global options; on subparsers they default to SUPPRESS so they do not reset the main ones."""
    def d(value):
        return argparse.SUPPRESS if suppress else value

    taken = p._option_string_actions  # skip options a module already defines
    if "-s" not in taken and "--socket" not in taken:
        p.add_argument("-s", "--socket", metavar="SOCKET", default=d(DEFAULT_SOCKET),
                       help=f"uiscsid control socket (default {DEFAULT_SOCKET})")
    if "--timeout" not in taken:
        p.add_argument("--timeout", type=_positive_float, metavar="SECONDS", default=d(DEFAULT_TIMEOUT),
                       help=f"bound in seconds (default {DEFAULT_TIMEOUT:g}): discover, inquiry, capacity and "
                            "luns end within it (+1 s) from start to exit, cleanup included; cp and perf "
                            "within it of the target's last answer; daemon commands wait that long for uiscsid")
    if "--json" not in taken:
        p.add_argument("--json", action="store_true", default=d(False), help="machine-readable output")
    if "--debug" not in taken:
        p.add_argument("--debug", action="store_true", default=d(False),
                       help="show tracebacks and protocol detail on errors")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def command_word(argv: Sequence[str]) -> str | None:
    """The subcommand word of ``argv``, skipping the global options that come before it."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser: global options plus the subcommands of the module that owns ``argv``'s word
    (of every module when there is no word, or an unknown one, so help and errors list them all)."""
    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    owner = COMMAND_MODULE.get(command_word(argv or ()) or "")
    for name in [owner] if owner else SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():
        _add_global_options(p, suppress=True)
    return parser


def error_message(exc: BaseException) -> str:
    """One line for a user: our own errors speak for themselves; OS errors get their context."""
    if isinstance(exc, (ISCSIError, URLError)):
        return str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is this class since 3.11
        return str(exc) or "timed out"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"


def run_coroutine(coro):
    """Run a tool's coroutine on the loop `io.eventloop` picks: uvloop when installed (a fifth
    less CPU per command at queue depth 1), asyncio with ``UISCSI_EVENT_LOOP=asyncio``."""
    from ..io import eventloop  # here, not at the top: the daemon-side commands never need asyncio

    return eventloop.run(coro)


def _setup_logging(debug: bool) -> None:
    """--debug: protocol logs to stderr. Otherwise silent: the final error line says what matters."""
    root = logging.getLogger()
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)8.1f ms %(name)s: %(message)s")
    elif not root.handlers:
        root.addHandler(logging.NullHandler())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``uiscsictl`` console script (``argv`` None: this process is uiscsictl's own)."""
    own_process = argv is None      # the console script: a one-shot tool may arm its exit watchdog
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.own_process = own_process
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args.debug)
    try:
        result = args.func(args)
        if inspect.iscoroutine(result):
            result = run_coroutine(result)
        return int(result or 0)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes one line
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"{PROG}: {error_message(exc)}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
