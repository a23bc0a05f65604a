"""/etc/uiscsi.conf: the uiscsictl configuration language (reads files; no network, no daemon).

In the spirit of OpenBSD's iscsi.conf(5)::

    # comments run to the end of the line; statements end at a newline or ';'
    disk_host = "10.0.0.7"                  # a macro, used below as $disk_host
    include "/etc/uiscsi.d/secrets.conf"    # relative paths are relative to the including file
    initiatorname iqn.2026-11.org.example:host1

    target data {
        targetaddr $disk_host port 3260
        targetname iqn.2026-11.org.example:data
        auth chap user host1 secret-file "/etc/uiscsi/data.secret" algorithms sha3-256,sha256
        mutual user data secret-file "/etc/uiscsi/data.target-secret"
        header_digest crc32c; data_digest none
        connections 2
        erl 1                               # ErrorRecoveryLevel 1: digest errors recovered by SNACK
        replacement_timeout 120
        command_timeout 30; abort_timeout 15; lu_reset_timeout 30
        lun 1 2
    }

The whole input is parsed before anything is returned: every problem is collected as
``file:line: message`` and raised together in one `ConfigError`, so a bad file never half-applies.
Secrets live in files that group and others must not be able to read or write. Each target block becomes a
`daemon.wire.TargetConf` whose ``session`` is the `io.params.SessionParams` it logs in with (``targetaddr``
may still be a name there: `daemon_commands` resolves it before sending).

The module is long on purpose: it is one recursive-descent parser (lexer, statements, values, error
recovery) around one cursor; its pieces make no sense apart.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..daemon.wire import COMMAND_TIMEOUTS, TargetConf
from ..io.params import MAX_CONNECTIONS, MAX_ERL, Chap, SessionParams
from ..protocol.addressing import valid_iscsi_name
from ..protocol.chap import parse_algorithms
from ..scsi.lun import MAX_LUN

DEFAULT_PATH = "/etc/uiscsi.conf"
MAX_FILE_BYTES = 1 << 20
MAX_INCLUDE_DEPTH = 8
MAX_ERRORS = 50
MAX_SECRET_BYTES = 255
_MACRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN = re.compile(r'\s*(?:(#.*)|"((?:[^"\\\n]|\\.)*)"|([{};=])|([^\s{};="#]+)|(")|$)')
_KEYWORDS = frozenset((
    "include", "initiatorname", "target", "targetaddr", "port", "targetname", "auth", "chap", "user",
    "secret-file", "mutual", "header_digest", "data_digest", "connections", "discovery", "normal", "enabled",
    "disabled", "replacement_timeout", "lun", "none", "crc32c", "algorithms", "erl", *COMMAND_TIMEOUTS))
_TARGET_KEYS = ("discovery", "enabled", "luns")  # statements about the target; the others go to SessionParams


class ConfigError(Exception):
    """One or more ``file:line: message`` problems; nothing from the input may be applied."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Config:
    initiator_name: str | None
    targets: tuple[TargetConf, ...] = field(default=())
    files: tuple[str, ...] = field(default=())

    def target(self, name: str) -> TargetConf:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)


@dataclass
class _Tok:
    kind: str        # word | string | punct | nl | eof
    value: str
    line: int


def _lex(text: str, errors: _Errors, file: str) -> list[_Tok]:
    toks: list[_Tok] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        pos = 0
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            if m is None or m.end() == pos and not m.group(0):
                break
            pos = m.end()
            comment, string, punct, word, badquote = m.groups()
            if comment is not None:
                break
            if string is not None:
                toks.append(_Tok("string", re.sub(r"\\(.)", r"\1", string), lineno))
            elif punct is not None:
                toks.append(_Tok("punct", punct, lineno))
            elif word is not None:
                toks.append(_Tok("word", word, lineno))
            elif badquote is not None:
                errors.add(file, lineno, "unterminated quoted string")
                break
        toks.append(_Tok("nl", "\n", lineno))
    toks.append(_Tok("eof", "", len(text.split("\n"))))
    return toks


class _Errors:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, file: str, line: int, message: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append(f"{file}:{line}: {message}")
        elif len(self.items) == MAX_ERRORS:
            self.items.append(f"{file}:{line}: too many errors, giving up")


class _Skip(Exception):
    """Abandon the current statement (its error is already recorded)."""


class _Parser:
    def __init__(self, check_secret_perms: bool) -> None:
        self.errors = _Errors()
        self.macros: dict[str, str] = {}
        self.initiator_name: str | None = None
        self.targets: list[TargetConf] = []
        self.files: list[str] = []
        self.check_secret_perms = check_secret_perms
        self._stack: list[str] = []

    # -- files ---------------------------------------------------------------------------------
    def parse_file(self, path: Path, where: tuple[str, int] | None) -> None:
        shown = str(path)
        real = os.path.realpath(path)
        if real in self._stack:
            self._fail(where, f"include loop: {shown} includes itself")
            return
        if len(self._stack) >= MAX_INCLUDE_DEPTH:
            self._fail(where, f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
            return
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            self._fail(where, f"cannot read {shown}: {e.strerror}")
            return
        if len(raw) > MAX_FILE_BYTES:
            self._fail(where, f"{shown} is larger than {MAX_FILE_BYTES} bytes")
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            self.errors.add(shown, line, "not valid UTF-8")
            return
        self.files.append(shown)
        self._stack.append(real)
        try:
            self._parse_tokens(_lex(text, self.errors, shown), shown, path.parent)
        finally:
            self._stack.pop()

    def _fail(self, where: tuple[str, int] | None, message: str) -> None:
        if where is None:               # the top-level file itself: no line to point at
            self.errors.items.append(message)
        else:
            self.errors.add(*where, message)

    # -- statements ----------------------------------------------------------------------------
    def _parse_tokens(self, toks: list[_Tok], file: str, base: Path) -> None:
        self.toks, self.i, self.file, self.base = toks, 0, file, base
        while self.peek().kind != "eof":
            tok = self.peek()
            if tok.kind == "nl" or tok.value == ";":
                self.i += 1
                continue
            try:
                self._top_statement()
            except _Skip:
                self._skip_statement(allow_block=True)

    def _top_statement(self) -> None:
        tok = self.next()
        nxt = self.peek()
        if tok.kind == "word" and nxt.value == "=" and nxt.kind == "punct":
            self.next()
            value = self.value("a macro value")
            if not _MACRO_NAME.match(tok.value) or tok.value in _KEYWORDS:
                self.error(tok, f"bad macro name {tok.value!r}: use letters, digits and _; not a keyword")
            self.macros[tok.value] = value
        elif tok.value == "include" and tok.kind == "word":
            path = self.file_name("a file name")
            self.end()
            toks, i, file, base = self.toks, self.i, self.file, self.base
            self.parse_file(path, (file, tok.line))
            self.toks, self.i, self.file, self.base = toks, i, file, base
        elif tok.value == "initiatorname" and tok.kind == "word":
            self.initiator_name = self.iscsi_name()
            self.end()
        elif tok.value == "target" and tok.kind == "word":
            self._target(tok)
        else:
            self.error(tok, f"unexpected {self.show(tok)}: expected a macro, include, initiatorname or target")

    def _target(self, start: _Tok) -> None:
        name = self.value("a target name")
        brace = self.next()
        if brace.value != "{":
            self.error(brace, f"expected '{{' after target {name!r}, got {self.show(brace)}")
            raise _Skip
        dup = any(t.name == name for t in self.targets)
        if dup:
            self.error(start, f"target {name!r} is defined twice")
        opts: dict = {}
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                self.error(start, f"target {name!r}: missing '}}'")
                raise _Skip
            if tok.kind == "nl" or tok.value == ";":
                self.i += 1
                continue
            if tok.value == "}" and tok.kind == "punct":
                self.i += 1
                break
            try:
                self._target_statement(opts)
            except _Skip:
                self._skip_statement(allow_block=False)
        if not dup:
            self._finish_target(name, start, opts)

    def _target_statement(self, o: dict) -> None:
        tok = self.next()
        kw = tok.value if tok.kind == "word" else ""
        if kw == "targetaddr":
            o["host"] = self.value("an address")
            if self.peek().value == "port" and self.peek().kind == "word":
                self.next()
                o["port"] = self.number("a port", 1, 65535)
        elif kw == "targetname":
            o["target_name"] = self.iscsi_name()
        elif kw == "initiatorname":
            o["initiator_name"] = self.iscsi_name()
        elif kw == "auth":
            self.keyword("chap")
            o["chap"] = self.credentials(tok)
            if self.peek().value == "algorithms" and self.peek().kind == "word":
                o["chap_algorithms"] = self.algorithms()
        elif kw == "mutual":
            o["mutual"] = self.credentials(tok)
            o["mutual_line"] = tok.line
        elif kw in ("header_digest", "data_digest"):
            word = self.value("crc32c or none")
            if word not in ("crc32c", "none"):
                self.error(tok, f"{kw}: expected crc32c or none, got {word!r}")
            o[kw] = word == "crc32c"
        elif kw == "connections":
            o["max_connections"] = self.number("a connection count", 1, MAX_CONNECTIONS)
        elif kw == "erl":
            o["erl"] = self.number("an ErrorRecoveryLevel", 0, MAX_ERL)
        elif kw in ("discovery", "normal"):
            o["discovery"] = kw == "discovery"
        elif kw in ("enabled", "disabled"):
            o["enabled"] = kw == "enabled"
        elif kw == "replacement_timeout":
            o["replacement_timeout"] = float(self.number("seconds", 0, 86400))
        elif kw in COMMAND_TIMEOUTS:
            o[kw] = self.seconds(kw, *COMMAND_TIMEOUTS[kw])
        elif kw == "lun":
            luns = [self.number("a LUN", 0, MAX_LUN)]
            while self.peek().kind in ("word", "string"):
                luns.append(self.number("a LUN", 0, MAX_LUN))
            o["luns"] = tuple(sorted(set(o.get("luns", ())) | set(luns)))
        else:
            self.error(tok, f"unknown target option {self.show(tok)}")
        self.end()

    def _finish_target(self, name: str, start: _Tok, o: dict) -> None:
        bad = False
        where = f"{self.file}:{start.line}"
        if "host" not in o:
            self.error(start, f"target {name!r}: missing targetaddr")
            bad = True
        discovery = o.get("discovery", False)
        if not discovery and "target_name" not in o:
            self.error(start, f"target {name!r}: missing targetname (or mark it discovery)")
            bad = True
        if discovery and o.get("luns"):
            self.error(start, f"target {name!r}: a discovery target has no LUNs")
            bad = True
        if o.get("mutual") and not o.get("chap"):
            self.errors.add(self.file, o["mutual_line"], f"target {name!r}: mutual needs an 'auth chap' line")
            bad = True
        o.pop("mutual_line", None)
        if not bad:
            own = {k: o.pop(k) for k in _TARGET_KEYS if k in o}  # the rest says how to log in
            self.targets.append(TargetConf(name=name, session=SessionParams(**o), where=where, **own))

    # -- values --------------------------------------------------------------------------------
    def credentials(self, start: _Tok) -> Chap:
        self.keyword("user")
        user = self.value("a CHAP user name")
        self.keyword("secret-file")
        ftok = self.peek()
        path = self.file_name("a secret file")
        return Chap(user=user, secret=self.read_secret(path, ftok), secret_file=str(path))

    def algorithms(self) -> tuple[int, ...]:
        """``algorithms md5,sha256 ...`` after ``auth chap``: the CHAP algorithms to offer, in order."""
        start = self.next()
        words = []
        while self.peek().kind in ("word", "string"):
            words.append(self.value("a CHAP algorithm"))
        try:
            return parse_algorithms(" ".join(words))
        except ValueError as e:
            self.error(start, f"algorithms: {e}")
            raise _Skip from None

    def read_secret(self, path: Path, tok: _Tok) -> str:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY)
        except OSError as e:
            self.error(tok, f"cannot read secret file {path}: {e.strerror}")
            raise _Skip from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.error(tok, f"secret file {path} is not a regular file")
                raise _Skip
            if self.check_secret_perms and st.st_mode & 0o077:
                self.error(tok, f"secret file {path} is accessible by group or others "
                                f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")
                raise _Skip
            raw = os.read(fd, MAX_SECRET_BYTES + 2)
        finally:
            os.close(fd)
        secret = raw.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
        if not secret:
            self.error(tok, f"secret file {path} is empty")
            raise _Skip
        if len(secret.encode()) > MAX_SECRET_BYTES:
            self.error(tok, f"secret in {path} is longer than {MAX_SECRET_BYTES} bytes")
            raise _Skip
        return secret

    def value(self, what: str) -> str:
        tok = self.next()
        if tok.kind == "string":
            return tok.value
        if tok.kind != "word":
            self.error(tok, f"expected {what}, got {self.show(tok)}")
            raise _Skip
        if tok.value.startswith("$"):
            name = tok.value[1:]
            if name not in self.macros:
                self.error(tok, f"undefined macro ${name}")
                raise _Skip
            return self.macros[name]
        return tok.value

    def file_name(self, what: str) -> Path:
        """A file name, relative to the including file's directory. No file name holds a NUL byte."""
        tok = self.peek()
        name = self.value(what)
        if "\0" in name:
            self.error(tok, f"{what} {name!r} contains a NUL byte")
            raise _Skip
        return self.base / name

    def number(self, what: str, lo: int, hi: int) -> int:
        tok = self.peek()
        text = self.value(what)
        if not text.isdigit() or not lo <= int(text) <= hi:
            self.error(tok, f"expected {what} from {lo} to {hi}, got {text!r}")
            raise _Skip
        return int(text)

    def seconds(self, what: str, lo: float, hi: float) -> float:
        """A duration: digits with an optional decimal part, within lo..hi."""
        tok = self.peek()
        text = self.value("seconds")
        if not re.fullmatch(r"\d+(\.\d+)?", text) or not lo <= float(text) <= hi:
            self.error(tok, f"{what}: expected seconds from {lo:g} to {hi:g}, got {text!r}")
            raise _Skip
        return float(text)

    def iscsi_name(self) -> str:
        tok = self.peek()
        name = self.value("an iSCSI name")
        if not valid_iscsi_name(name):
            self.error(tok, f"{name!r} is not an iSCSI name (iqn.YYYY-MM.reversed.domain[:id], eui. or naa.)")
            raise _Skip
        return name

    def keyword(self, word: str) -> None:
        tok = self.next()
        if tok.kind != "word" or tok.value != word:
            self.error(tok, f"expected '{word}', got {self.show(tok)}")
            raise _Skip

    def end(self) -> None:
        tok = self.peek()
        if tok.kind in ("nl", "eof") or tok.value in (";", "}") and tok.kind == "punct":
            return
        self.error(tok, f"unexpected {self.show(tok)} at the end of a statement")
        raise _Skip

    # -- cursor --------------------------------------------------------------------------------
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def error(self, tok: _Tok, message: str) -> None:
        self.errors.add(self.file, tok.line, message)

    @staticmethod
    def show(tok: _Tok) -> str:
        return {"nl": "end of line", "eof": "end of file"}.get(tok.kind, repr(tok.value))

    def _skip_statement(self, allow_block: bool) -> None:
        """Skip to the end of the bad statement; a bad top-level target skips its whole block."""
        depth = 0
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                return
            if tok.kind == "punct" and tok.value == "{" and allow_block:
                depth += 1
            elif tok.kind == "punct" and tok.value == "}":
                if depth == 0 and not allow_block:
                    return
                depth -= 1
                if depth <= 0:
                    self.i += 1
                    return
            elif depth == 0 and (tok.kind == "nl" or tok.value == ";"):
                return
            self.i += 1


def parse_file(path: str | os.PathLike = DEFAULT_PATH, *, check_secret_perms: bool = True) -> Config:
    """Parse a config file and everything it includes; raise `ConfigError` listing every problem."""
    p = _Parser(check_secret_perms)
    p.parse_file(Path(path), None)
    if p.errors.items:
        raise ConfigError(p.errors.items)
    return Config(initiator_name=p.initiator_name, targets=tuple(p.targets), files=tuple(p.files))
