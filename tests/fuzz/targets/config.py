"""uiscsi.conf: a file's bytes through `parse_file` (initiator.ctl.config), then what uiscsictl reload sends.

Input: the whole file. It is written as uiscsi.conf in a directory that also holds secret files (mode
0600, one 0644, one empty), an include with a target of its own, and an include that includes itself,
so every statement can succeed or fail. Clean error: ConfigError, whose every line must read
``file:line: message`` with a line inside the file. Oracle "config-wire": a target the parser accepts,
put on the wire as uiscsictl does (`to_wire`, address resolved, as JSON), must pass the daemon's
`from_wire` and come back as the same target; "config-error-format": a ConfigError line without a
valid file:line.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import project as p
from . import OracleFailure, Target

ADDRESS = "127.0.0.1"   # what resolve() gives uiscsictl for the target's address
_DIR = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
atexit.register(shutil.rmtree, _DIR, True)  # not reached under libFuzzer, whose runner gives a TMPDIR
_CONF = _DIR / "uiscsi.conf"
_FILES = {
    "host.secret": ("initiator-secret\n", 0o600),
    "target.secret": ("target-secret-x\n", 0o600),
    "open.secret": ("readable-by-all\n", 0o644),
    "empty.secret": ("", 0o600),
    "inc.conf": ("target inc { targetaddr 10.0.0.9; targetname iqn.2026-11.org.example:inc }\n", 0o644),
    "loop.conf": ('include "loop.conf"\n', 0o644),
}
_ERROR_LINE = re.compile(r"(?P<file>.+?):(?P<line>\d+): \S")
_VALUES = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


def _setup() -> None:
    for name, (text, mode) in _FILES.items():
        path = _DIR / name
        path.write_text(text)
        os.chmod(path, mode)


_setup()


def _check_errors(errors: list[str], text: str) -> None:
    nlines = text.count("\n") + 1
    for err in errors:
        m = _ERROR_LINE.match(err)
        if m is None:
            raise OracleFailure("config-error-format", f"no file:line in {err!r}")
        if m["file"] == str(_CONF) and not 1 <= int(m["line"]) <= nlines:
            raise OracleFailure("config-error-format", f"line {m['line']} outside the {nlines}-line file: {err!r}")


def _check_wire(cfg) -> None:
    for t in cfg.targets:
        initiator = t.session.initiator_name or cfg.initiator_name
        if not initiator:
            continue  # uiscsictl refuses it with file:line before sending anything
        wire = json.loads(json.dumps(p.to_wire(t, ADDRESS, initiator)))
        try:
            back = p.from_wire(wire)
        except ValueError as e:
            kind = _VALUES.sub("_", str(e))[:70]
            raise OracleFailure(f"config-wire:{kind}", f"the parser accepted target {t.name!r} ({t.where}) but "
                                                       f"the daemon refuses it: {e}") from None
        s = t.session
        plain = {k: (dataclasses.replace(getattr(s, k), secret_file="") if getattr(s, k) else None)
                 for k in ("chap", "mutual")}
        want = dataclasses.replace(t, session=dataclasses.replace(s, host=ADDRESS, initiator_name=initiator, **plain))
        if back != want:
            raise OracleFailure("config-wire:changed", f"{t.where}: sent {want!r}, the daemon got {back!r}")


def one_input(data: bytes) -> None:
    _CONF.write_bytes(data)
    try:
        cfg = p.parse_file(_CONF)
    except p.ConfigError as e:
        _check_errors(e.errors, data.decode("utf-8", "replace"))
        raise
    _check_wire(cfg)


IQN = "iqn.2026-11.org.example"


def seeds() -> Iterator[tuple[str, bytes]]:
    yield "full", f"""# /etc/uiscsi.conf
disk_host = "10.0.0.7"
include "inc.conf"
initiatorname {IQN}:host1

target data {{
    targetaddr $disk_host port 3261
    targetname {IQN}:data
    auth chap user host1 secret-file "host.secret" algorithms sha3-256,sha256 md5
    mutual user data secret-file target.secret
    header_digest crc32c; data_digest none
    connections 2
    erl 1
    replacement_timeout 120
    command_timeout 30; abort_timeout 15.5; lu_reset_timeout 0.1
    lun 1 2
    lun 300
}}
""".encode()
    yield "one-line", f"target a {{ targetaddr 127.0.0.1; targetname {IQN}:a; disabled }}\n".encode()
    yield "discovery", b"initiatorname eui.0123456789ABCDEF\ntarget d {\n targetaddr ::1\n discovery\n}\n"
    yield "names", (f"initiatorname naa.0123456789abcdef0123456789abcdef\ntarget n {{ targetaddr host.example "
                    f"port 65535; targetname {IQN}:n; initiatorname {IQN}:own; normal; enabled; "
                    f"replacement_timeout 0; data_digest crc32c; command_timeout 0; erl 0 }}\n").encode()
    yield "errors", f"""x = 1
include "loop.conf"
include "missing.conf"
target bad {{
    targetaddr
    targetname not-an-iqn
    auth chap user u secret-file open.secret
    mutual user t secret-file empty.secret
    connections 17
    lun 16384
    bogus option
    header_digest maybe
    erl 2
    command_timeout -1; abort_timeout 0; lu_reset_timeout 1e3
    auth chap user u secret-file host.secret algorithms md4
}}
target bad {{ targetaddr 1.2.3.4; targetname {IQN}:b }}
target unclosed {{ targetaddr $undefined
"unterminated
""".encode()
    yield "not-utf8", b"initiatorname iqn.2026-11.org.example:\xff\xfe\n"
    yield "escapes", b'h = "a \\"quoted\\" \\\\ value"\ntarget q { targetaddr $h; discovery }\n'


DICTIONARY = tuple(w.encode() for w in (
    "include", "initiatorname", "target", "targetaddr", "port", "targetname", "auth", "chap", "user", "secret-file",
    "mutual", "header_digest", "data_digest", "connections", "discovery", "normal", "enabled", "disabled",
    "replacement_timeout", "lun", "none", "crc32c", "algorithms", "md5", "sha1", "sha256", "sha3-256", "erl",
    "command_timeout", "abort_timeout", "lu_reset_timeout", "86400", "0.1", "{", "}", ";", "=", "$", '"', "\\", "#", "\n",
    f"{IQN}:", "eui.0123456789ABCDEF", "naa.", *_FILES)) + (b"\0", b"\xff")

TARGET = Target(name="config", doc="uiscsi.conf parser, and the daemon's check of what it sends",
                clean=(p.ConfigError,), one_input=one_input, seeds=seeds, max_len=8192, dictionary=DICTIONARY)
