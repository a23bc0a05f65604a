"""How `bootkit shim run` turns CMD into an exec that keeps an '@' argv[0] in /proc/PID/cmdline.

A script's shebang makes the kernel exec its interpreter and drop our argv[0]. So:
- a binary is exec'd with argv[0] = '@NAME';
- a script with a non-Python interpreter: we exec the interpreter ourselves, argv[0] = '@NAME';
- a Python script: Python finds its venv from argv[0], so '@NAME' there would lose the venv (verified:
  sys.prefix falls back to the base install and sys.executable is empty). Instead we exec the same
  interpreter on ``-m iscsid_shim.launch``, which rewrites argv in place (setproctitle), puts comm back
  to the script's name, arms the flag's removal at exit, and runs the script as __main__.
This module is also that ``-m`` entry point.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import sys
from dataclasses import dataclass

from iscsid_shim import registry, title

PYTHON_RE = re.compile(r"^python[0-9.]*$")


@dataclass(frozen=True)
class ExecPlan:
    """The execv() that starts CMD: path, full argv, and a warning when '@' cannot be kept."""

    path: str
    argv: list[str]
    warning: str | None = None


def read_shebang(path: str) -> list[str] | None:
    """[interpreter] or [interpreter, arg] as Linux splits '#!' lines (one optional argument), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
    parts = line.split(None, 1)
    return parts or None


def resolve(word: str) -> str:
    """CMD[0] as execvp() would find it; FileNotFoundError when it is not an executable."""
    found = word if "/" in word else shutil.which(word)
    if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise FileNotFoundError(f"{word}: command not found or not executable")
    return os.path.abspath(found)


def same_python(interp: str) -> bool:
    """True when interp is a Python of our own environment, so it can import iscsid_shim."""
    return os.path.dirname(os.path.dirname(os.path.abspath(interp))) == os.path.abspath(sys.prefix)


def plan(name: str, cmd: list[str]) -> ExecPlan:
    """Work out the exec for `shim run --name NAME -- CMD...` (see the module docstring)."""
    path = resolve(cmd[0])
    at, args = f"@{name}", cmd[1:]
    shebang = read_shebang(path)
    if shebang is None:
        if PYTHON_RE.match(os.path.basename(path)):  # the interpreter itself: `python3 -m x`, `python3 f.py`
            return _python_plan(name, path, [], args, [path, *args])
        return ExecPlan(path, [at, *args])
    interp, opts = shebang[0], shebang[1:]
    if os.path.basename(interp) == "env" and opts and not opts[0].startswith("-"):
        interp, opts = resolve(opts[0]), []
    if PYTHON_RE.match(os.path.basename(interp)):
        return _python_plan(name, interp, opts, [path, *args], [path, *args])
    return ExecPlan(interp, [at, *opts, path, *args])


def _python_plan(name: str, interp: str, opts: list[str], pyargs: list[str], plain: list[str]) -> ExecPlan:
    """Exec interp on our launcher when we can; else run plainly and say that '@' is lost."""
    if same_python(interp) and pyargs and (pyargs[0] in ("-m", "-c") or not pyargs[0].startswith("-")):
        return ExecPlan(interp, [interp, *opts, "-m", "iscsid_shim.launch", name, *pyargs])
    why = "runs under another Python" if not same_python(interp) else "has interpreter options"
    return ExecPlan(
        plain[0],
        plain,
        warning=f"{' '.join(plain)} {why} ({interp}): its argv[0] cannot start with '@' "
        "(a Python finds its venv from argv[0]); call iscsid_shim.flag_self() in it, or run it as "
        "a script of bootkit's environment",
    )


def main(argv: list[str]) -> None:
    """``python -m iscsid_shim.launch NAME (SCRIPT | -m MODULE | -c CODE) ARGS...``.

    Keep the flag (and arm its removal at exit), rewrite argv to '@NAME ARGS', then run the program as
    the interpreter would have.
    """
    name, what, *args = argv
    registry.flag_self(name, at_argv0=False)
    if what == "-m":
        title.set_at_argv0(name, args[1:])
        sys.argv = [what, *args[1:]]
        runpy.run_module(args[0], run_name="__main__", alter_sys=True)
    elif what == "-c":
        title.set_at_argv0(name, args[1:])
        sys.argv = ["-c", *args[1:]]
        code = compile(args[0], "<string>", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})  # noqa: S102 -- that is what -c asks
    else:
        title.set_at_argv0(name, args, comm=os.path.basename(what))
        sys.argv = [what, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(what))
        runpy.run_path(what, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
