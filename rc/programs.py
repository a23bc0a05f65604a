"""Where the programs of the running installation are, so rendered files name them by default.

A unit that names `/usr/local/bin/uiscsid` when the project lives in a venv (or in /usr/bin, from the
Debian package) fails `systemd-analyze verify` and fails to boot. The renderer therefore defaults every
program path to the installation that runs it: the first directory that holds all three console scripts,
looked for next to the running program, next to the running interpreter (a venv's bin, or /usr/bin for
Debian's python3), then in the interpreter's scripts directory. `/usr/local/bin` is only the last resort,
when no installed copy is found (the package imported from a source tree).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from functools import lru_cache

PROGRAMS = ("bootkit", "uiscsid", "uiscsictl")
FALLBACK_DIR = "/usr/local/bin"


def _candidates() -> list[str]:
    dirs = []
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) in PROGRAMS:
        dirs.append(os.path.dirname(os.path.abspath(argv0)))
    # Not resolved: a venv's bin/python is a symlink to the system interpreter.
    dirs.append(os.path.dirname(os.path.abspath(sys.executable)))
    scripts = sysconfig.get_path("scripts")
    if scripts:
        dirs.append(scripts)
    return dirs


def _complete(directory: str) -> bool:
    return all(os.access(os.path.join(directory, p), os.X_OK) for p in PROGRAMS)


@lru_cache(maxsize=1)
def program_dir() -> str:
    """The bin directory of the installation that runs this code (see the module docstring)."""
    return next((d for d in _candidates() if _complete(d)), FALLBACK_DIR)


def program(name: str) -> str:
    """The absolute path of one of PROGRAMS in the running installation."""
    if name not in PROGRAMS:
        raise ValueError(f"{name!r} is not one of {PROGRAMS}")
    return os.path.join(program_dir(), name)
