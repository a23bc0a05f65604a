"""What a LUN holds (``blkid -p``, low-level probing of the image itself) and whether a test may format it.

The rule: a test formats only a LUN it created itself, or one the admin gave ``--format`` for. A LUN that
already holds the filesystem the fstab line names is used as it is; a LUN holding anything else (another
filesystem, a partition table, LVM, swap, RAID) or nothing at all is refused, with a message saying what
is there and what ``--format`` would destroy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vm.fscheck.filesystems import run
from vm.fscheck.verdict import FsCheckError

# blkid's exit statuses (blkid(8)): 2 nothing found, 8 ambivalent (more than one signature)
_NOTHING, _AMBIVALENT = 2, 8


class Refused(FsCheckError):
    """The test will not use (or format) this LUN; the message says what it holds and what to do."""


@dataclass(frozen=True)
class Content:
    """What ``blkid -p`` found: a filesystem or other signature (TYPE, USAGE), a partition table (PTTYPE),
    or several signatures at once (``ambivalent``)."""

    fields: dict[str, str] = field(default_factory=dict)
    ambivalent: bool = False

    @property
    def type(self) -> str | None:
        return self.fields.get("TYPE")

    @property
    def empty(self) -> bool:
        return not self.ambivalent and not self.type and "PTTYPE" not in self.fields

    def describe(self) -> str:
        """"xfs (filesystem, label data, uuid ...)", "dos (partition table)", ..."""
        if self.ambivalent:
            return "more than one signature (blkid -p: ambivalent result)"
        if self.empty:
            return "no filesystem or other signature"
        f = self.fields
        if "PTTYPE" in f and not self.type:
            return f"{f['PTTYPE']} (partition table)"
        extra = [f.get("USAGE", "signature"), *(f"{k.lower()} {f[k]}" for k in ("LABEL", "UUID") if k in f)]
        return f"{self.type} ({', '.join(extra)})"


def parse_export(text: str) -> dict[str, str]:
    """``blkid -o export`` output as a dict (DEVNAME left out)."""
    out = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key != "DEVNAME":
            out[key.strip()] = value.strip()
    return out


def probe(path: str | Path) -> Content:
    """``blkid -p`` on an image file or device: what is on it (superblocks, not the cache)."""
    r = run(["blkid", "-p", "-o", "export", str(path)], "util-linux")
    if r.returncode == _NOTHING:
        return Content()
    if r.returncode == _AMBIVALENT:
        return Content(parse_export(r.stdout), ambivalent=True)
    if r.returncode != 0:
        raise FsCheckError(f"blkid -p {path}: exit {r.returncode}: {r.stderr.strip()}")
    return Content(parse_export(r.stdout))


@dataclass(frozen=True)
class Decision:
    """``action``: "format" (make FSTYPE on it), "reuse" (it holds FSTYPE already) or "refuse"."""

    action: str
    reason: str


def decide(content: Content, fstype: str, *, created: bool, allow_format: bool, name: str) -> Decision:
    """What the test may do with a LUN (``name``: how to call it in messages); see the module docstring."""
    if created:
        return Decision("format", f"{name}: created by this test")
    if allow_format:
        lost = "" if content.empty else f"; --format destroys {content.describe()}"
        return Decision("format", f"{name}: --format given{lost}")
    if content.type == fstype and not content.ambivalent:
        return Decision("reuse", f"{name}: holds {content.describe()}, used as it is")
    if content.empty:
        return Decision("refuse", f"{name} holds no filesystem, and this test formats only a LUN it created: "
                                  f"give --format to let it make {fstype} there")
    return Decision("refuse", f"{name} holds {content.describe()}, not {fstype}: the test would destroy it. "
                              "Give --format to allow that, or a LUN that holds the fstab line's filesystem")


def require(decision: Decision) -> Decision:
    """The decision, or `Refused` with its reason."""
    if decision.action == "refuse":
        raise Refused(decision.reason)
    return decision
