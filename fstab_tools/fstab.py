"""The fstab model: parse with libmount's rules, keep every byte of layout, write back.

A file is a list of `Line`s. Comments, blank lines and malformed lines keep their raw text; entry
lines keep their raw fields and the whitespace between them, so `Fstab.render()` returns the input
unchanged, and an edited entry changes only the fields that were edited.

Rules (util-linux libmount, tab_parse.c): fields split on spaces and tabs; a line whose first
non-blank character is `#` is a comment; a trailing CR is dropped; source, target and fstype are
required; options, freq and passno are optional (freq and passno default to 0); anything after
passno is ignored (kept, and `verify` warns); `\\ooo` octal escapes decode to the byte they name.
OpenBSD's variant parses the same way: a DUID spec (`3eb7f9da875cb9ee.a`) and a first option of
rw/ro/rq/sw/xx, the OpenBSD fs_type (see `Entry.bsd_type`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_FSTAB_BYTES = 4 * 1024 * 1024  # an fstab bigger than this is not an fstab: refuse, bounded memory
BLANKS = " \t"
TAGS = ("UUID", "LABEL", "PARTUUID", "PARTLABEL", "ID")
BSD_TYPES = ("rw", "ro", "rq", "sw", "xx")
DUID_RE = re.compile(r"^[0-9a-fA-F]{16}\.[a-p]$")
_NUM_RE = re.compile(r"^[+-]?[0-9]+$")
_OCTAL_RE = re.compile(rb"\\([0-3][0-7]{2})")
_MANGLE_BYTES = {b" ": b"\\040", b"\t": b"\\011", b"\n": b"\\012", b"\\": b"\\134"}


class FstabError(Exception):
    """The fstab file as a whole cannot be used (missing, unreadable, too big)."""


@dataclass(frozen=True)
class ParseError:
    """One malformed line; reported as `FILE:LINE: message` and skipped."""

    filename: str
    lineno: int
    message: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}: {self.message}"


def unmangle(text: str) -> str:
    """Decode libmount's `\\ooo` octal escapes; any other backslash stays literal."""
    raw = text.encode("utf-8", "surrogateescape")
    out = _OCTAL_RE.sub(lambda m: bytes([int(m.group(1), 8)]), raw)
    return out.decode("utf-8", "surrogateescape")


def mangle(value: str, first_field: bool = False) -> str:
    """Encode a field so it survives whitespace splitting: space, tab, newline and backslash.

    A `#` at the start of the first field would turn the line into a comment, so it is escaped too.
    """
    raw = value.encode("utf-8", "surrogateescape")
    out = b"".join(_MANGLE_BYTES.get(raw[i : i + 1], raw[i : i + 1]) for i in range(len(raw)))
    if first_field and out.startswith(b"#"):
        out = b"\\043" + out[1:]
    return out.decode("utf-8", "surrogateescape")


def split_options(optstr: str) -> list[str]:
    """Split a mount option string on commas outside double quotes (SELinux contexts hold commas)."""
    if optstr == "":
        return []
    opts, cur, quoted = [], [], False
    for ch in optstr:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            opts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    opts.append("".join(cur))
    return opts


def join_options(options: list[str]) -> str:
    return ",".join(options)


def parse_tag(source: str) -> tuple[str, str] | None:
    """`UUID=abc` -> ("UUID", "abc"); quotes around the value are dropped as blkid does. Else None."""
    name, sep, value = source.partition("=")
    if not sep or name not in TAGS or not value:
        return None
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return name, value


@dataclass(frozen=True)
class Entry:
    """One fstab entry, fields decoded. Options are whole words: `netdev` is not `_netdev`."""

    source: str
    target: str
    fstype: str
    options: tuple[str, ...] = ()
    freq: int = 0
    passno: int = 0

    def has_option(self, name: str) -> bool:
        """True if an option equals `name` or is `name=VALUE`; never a prefix match."""
        return any(o == name or o.startswith(name + "=") for o in self.options)

    def option_value(self, name: str) -> str | None:
        for o in self.options:
            if o.startswith(name + "="):
                return o[len(name) + 1 :]
        return None

    @property
    def bsd_type(self) -> str | None:
        """OpenBSD's fs_type: the first option when it is rw, ro, rq, sw or xx."""
        if self.options and self.options[0] in BSD_TYPES:
            return self.options[0]
        return None

    @property
    def noauto(self) -> bool:
        return "noauto" in self.options

    @property
    def ignored(self) -> bool:
        """OpenBSD `xx`: the line is kept in the file but ignored by every command."""
        return self.bsd_type == "xx"

    @property
    def is_swap(self) -> bool:
        return self.fstype == "swap" or self.bsd_type == "sw"

    @property
    def tag(self) -> tuple[str, str] | None:
        return parse_tag(self.source)

    @property
    def is_duid(self) -> bool:
        return bool(DUID_RE.match(self.source))

    def replace(self, **changes: object) -> Entry:
        """A copy with fields changed; `options` may be given as a list."""
        if "options" in changes:
            changes["options"] = tuple(changes["options"])  # type: ignore[arg-type]
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class Line:
    """One physical line. `entry` is None for comments, blank and malformed lines."""

    lineno: int
    raw: str
    entry: Entry | None = None
    # layout of an entry line: leading blanks, raw field texts, separators between them, trailing blanks
    lead: str = ""
    fields: list[str] = field(default_factory=list)
    seps: list[str] = field(default_factory=list)
    trail: str = ""
    error: str | None = None

    @property
    def is_comment(self) -> bool:
        return self.entry is None and self.error is None and self.raw.lstrip(BLANKS).startswith("#")


def _tokenize(text: str) -> tuple[str, list[str], list[str], str]:
    parts = re.split(r"([ \t]+)", text)
    lead = ""
    if parts and parts[0] == "":
        parts.pop(0)
        lead = parts.pop(0) if parts else ""
    trail = ""
    if parts and parts[-1] == "":
        parts.pop()
        trail = parts.pop() if parts else ""
    return lead, parts[0::2], parts[1::2], trail


def parse_line(raw: str, lineno: int) -> Line:
    """Parse one physical line (without its newline) into a `Line`."""
    body = raw.removesuffix("\r")
    stripped = body.strip(BLANKS)
    if stripped == "" or stripped.startswith("#"):
        return Line(lineno, raw)
    lead, fields, seps, trail = _tokenize(body)
    if raw.endswith("\r"):
        trail += "\r"
    line = Line(lineno, raw, lead=lead, fields=fields, seps=seps, trail=trail)
    names = ("source", "target", "fstype")
    if len(fields) < 3:
        line.error = f"missing {names[len(fields)]} field (need at least source, target and fstype)"
        return line
    nums = []
    for name, text in zip(("freq", "passno"), fields[4:6]):
        if not _NUM_RE.match(text):
            line.error = f"{name} must be a number, got {text!r}"
            return line
        value = int(text)
        if value < 0 or value > 2**31 - 1:
            line.error = f"{name} out of range: {text}"
            return line
        nums.append(value)
    nums += [0] * (2 - len(nums))
    optstr = unmangle(fields[3]) if len(fields) > 3 else ""
    line.entry = Entry(
        source=unmangle(fields[0]),
        target=unmangle(fields[1]),
        fstype=unmangle(fields[2]),
        options=tuple(split_options(optstr)),
        freq=nums[0],
        passno=nums[1],
    )
    return line


def _field_texts(entry: Entry) -> list[str]:
    for name in ("source", "target", "fstype"):
        if getattr(entry, name) == "":
            raise ValueError(f"an fstab entry needs a non-empty {name}")
    texts = [mangle(entry.source, first_field=True), mangle(entry.target), mangle(entry.fstype)]
    texts.append(mangle(join_options(list(entry.options))) if entry.options else "defaults")
    texts += [str(entry.freq), str(entry.passno)]
    return texts


def render_entry(entry: Entry, old: Line | None = None) -> str:
    """The text of an entry line; with `old`, keep its layout and the raw text of unchanged fields."""
    new = _field_texts(entry)
    if old is None or old.entry is None:
        return "\t".join(new)
    fields = list(old.fields)
    seps = list(old.seps)
    keep = max(len(fields), 3)
    # an entry with freq/passno 0 and default options may keep its short form
    want = 6 if (entry.freq or entry.passno) else (4 if entry.options else 3)
    n = max(want, min(keep, 6)) if len(fields) <= 6 else len(fields)
    old_entry = old.entry
    same = [
        entry.source == old_entry.source,
        entry.target == old_entry.target,
        entry.fstype == old_entry.fstype,
        entry.options == old_entry.options,
        entry.freq == old_entry.freq,
        entry.passno == old_entry.passno,
    ]
    out_fields = []
    for i in range(n):
        if i < 6 and (i >= len(fields) or not same[i]):
            out_fields.append(new[i])
        else:
            out_fields.append(fields[i])
    default_sep = seps[-1] if seps else "\t"
    out = old.lead + out_fields[0]
    for i, text in enumerate(out_fields[1:]):
        out += (seps[i] if i < len(seps) else default_sep) + text
    return out + old.trail


class Fstab:
    """A parsed fstab: lines in order, entries, parse errors; `render()` round-trips the input."""

    def __init__(self, lines: list[Line], filename: str = "fstab", final_newline: bool = True) -> None:
        self.lines = lines
        self.filename = filename
        self.final_newline = final_newline

    @classmethod
    def parse(cls, text: str, filename: str = "fstab") -> Fstab:
        final_newline = text.endswith("\n")
        chunks = text.split("\n")
        if final_newline or text == "":
            chunks.pop()
        lines = [parse_line(raw, i) for i, raw in enumerate(chunks, start=1)]
        return cls(lines, filename, final_newline or text == "")

    @classmethod
    def load(cls, path: str | Path) -> Fstab:
        """Read and parse a file; raises `FstabError` with a short reason when it cannot be read."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FSTAB_BYTES + 1)
        except OSError as e:
            raise FstabError(f"{path}: {e.strerror or e}") from None
        if len(data) > MAX_FSTAB_BYTES:
            raise FstabError(f"{path}: larger than {MAX_FSTAB_BYTES} bytes; refusing to parse")
        return cls.parse(data.decode("utf-8", "surrogateescape"), str(path))

    def render(self) -> str:
        text = "\n".join(line.raw for line in self.lines)
        if self.lines and self.final_newline:
            text += "\n"
        return text

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.render().encode("utf-8", "surrogateescape"))

    @property
    def entries(self) -> list[tuple[Line, Entry]]:
        return [(line, line.entry) for line in self.lines if line.entry is not None]

    @property
    def errors(self) -> list[ParseError]:
        return [ParseError(self.filename, ln.lineno, ln.error) for ln in self.lines if ln.error]

    def find(self, target: str) -> Line | None:
        for line, entry in self.entries:
            if entry.target == target:
                return line
        return None

    def update(self, line: Line, entry: Entry) -> None:
        """Replace the entry of `line`, keeping its layout and unchanged fields byte for byte."""
        line.raw = render_entry(entry, line)
        fresh = parse_line(line.raw, line.lineno)
        line.entry, line.lead, line.fields = fresh.entry, fresh.lead, fresh.fields
        line.seps, line.trail, line.error = fresh.seps, fresh.trail, fresh.error

    def append(self, entry: Entry) -> Line:
        line = parse_line(render_entry(entry), len(self.lines) + 1)
        self.lines.append(line)
        self.final_newline = True
        return line

    def remove(self, line: Line) -> None:
        self.lines.remove(line)
        for i, ln in enumerate(self.lines, start=1):
            ln.lineno = i
