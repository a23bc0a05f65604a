"""`bootkit`: dispatch the first word to the subsystem that owns it.

Each subsystem module exposes ``main(argv: list[str]) -> int`` where ``argv[0]`` is the subcommand
word (for example ``["fsck", "-N", "-p"]``). Modules are imported lazily so that a boot-time
``bootkit fsck`` does not pay for jinja2 or the VM harness.
"""

from __future__ import annotations

import importlib
import sys

# word -> (module, one-line summary shown by `bootkit --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "fstab": ("fstab_tools.cli", "list and verify fstab entries; -N selects network (net/_netdev) ones"),
    "fsck": ("fstab_tools.cli", "check filesystems from fstab as fsck(8) does; -N for network ones only"),
    "mount": ("fstab_tools.cli", "mount -a from fstab; -N mounts network filesystems only"),
    "umount": ("fstab_tools.cli", "umount -a in reverse order; -N for network filesystems only"),
    "shim": ("iscsid_shim.cli", "run a daemon flagged no-broadcast-kill; list or clear the registry"),
    "killall5": ("iscsid_shim.cli", "killall5(8) that spares flagged processes"),
    "shutdown-kill": ("iscsid_shim.cli", "OpenBSD reboot(8)'s TERM, sync, KILL sequence, sparing flagged"),
    "rc": ("rc.cli", "render or install boot/shutdown ordering for systemd, sysvinit, busybox, OpenBSD"),
    "vm": ("vm.cli", "the QEMU guest harness: doctor, fetch, run and the boot-proof scenarios"),
}

USAGE = """usage: bootkit COMMAND [ARGS...]

Bring iSCSI storage up at boot and down at shutdown cleanly.

commands:
{commands}

Run `bootkit COMMAND --help` for the options of one command.
"""


def usage() -> str:
    width = max(len(w) for w in COMMANDS)
    lines = [f"  {word.ljust(width)}  {summary}" for word, (_, summary) in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    word = argv[0]
    if word not in COMMANDS:
        sys.stderr.write(f"bootkit: unknown command {word!r}\n\n{usage()}")
        return 2
    module = importlib.import_module(COMMANDS[word][0])
    return int(module.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
