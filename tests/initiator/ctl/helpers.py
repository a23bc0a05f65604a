"""Helpers of the uiscsictl tests: uiscsictl run as a user would (a subprocess, its JSON, its one-line errors),
or in-process, and config files with their secret files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from initiator.ctl import uiscsictl as ctl


def uiscsictl(*args, env=None, timeout=90):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIBISCSI_CHAP")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "initiator.ctl", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, check=False)


def ok_json(*args, **kw):
    r = uiscsictl(*args, "--json", **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def one_line_error(r):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def sha256(path, size=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(size) if size is not None else f.read())
    return h.hexdigest()


def run(capsys, *argv):
    code = ctl.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def secret(tmp_path: Path, name: str, text: str = "s3cret-s3cret", mode: int = 0o600) -> Path:
    p = tmp_path / name
    p.write_text(text + "\n")
    os.chmod(p, mode)
    return p


def conf(tmp_path: Path, text: str, name: str = "uiscsi.conf") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p
