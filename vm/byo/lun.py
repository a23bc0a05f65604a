"""What a proof may do with its LUN, and which check judges it.

The rule (vm/fscheck/probe.py): a LUN file the test creates is formatted and seeded; any other LUN is used
only if it already holds the fstab line's filesystem, unless ``--format`` was given; anything else is
refused before a guest boots. Where the formatting happens: on the image file when the test runs the
target itself (nothing serves it yet), through the target from a guest boot when the target is the
admin's (never under a running target's feet).

Which check judges the LUN between boots: the host's, on a backing file it can read (the built-in
target's, or the admin's ``--lun-file`` of their target, which is first compared with what the target
serves); without one, the boots' own fsck says how each shutdown left it and a last guest boot runs the
read-only check (vm/fscheck/guest.py). The report names the check used.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from initiator.errors import ISCSIError
from vm.byo.target import ByoError, UserTarget
from vm.fscheck import FsCheckError
from vm.fscheck.host import create, format_seeded
from vm.fscheck.probe import Decision, decide, probe, require
from vm.fscheck.remote import EDGE, INITIATOR, probe_lun, read_edges

FormatInGuest = Callable[[], str]  # formats the admin's LUN from a guest boot; returns the payload digest


@dataclass(frozen=True)
class LunPlan:
    """``action``: created, reused or formatted; ``backing``: the file the host checks (None: a last guest
    boot checks it); ``seed``: the payload digest a fresh filesystem holds (None when reused)."""

    action: str
    reason: str
    fstype: str
    backing: Path | None
    seed: str | None = None

    @property
    def check_where(self) -> str:
        return "host" if self.backing is not None else "guest"

    def as_dict(self) -> dict:
        return {"action": self.action, "reason": self.reason, "fstype": self.fstype,
                "backing": str(self.backing) if self.backing else None, "check": self.check_where}


def prepare_file(path: Path, fstype: str, *, allow_format: bool, payload_mb: int = 8,
                 label: str = "bootkit-proof") -> LunPlan:
    """The built-in target's LUN file: created on first use, else probed and reused, formatted or refused."""
    path = Path(path).resolve()
    if not path.exists():
        digest = create(path, fstype, payload_mb=payload_mb)
        return LunPlan("created", f"{path}: created by this test", fstype, path, digest)
    d = require(decide(probe(path), fstype, created=False, allow_format=allow_format, name=str(path)))
    if d.action == "reuse":
        return LunPlan("reused", d.reason, fstype, path)
    digest = format_seeded(path, fstype, payload_mb, label)
    return LunPlan("formatted", d.reason, fstype, path, digest)


def same_lun(target: UserTarget, backing: Path, timeout: float = 20.0) -> None:
    """ByoError unless BACKING's first and last MiB and size are what the target serves as its LUN."""
    params = dataclasses.replace(target.params, initiator_name=target.params.initiator_name or INITIATOR,
                                 login_timeout=timeout, command_timeout=0.0)
    try:
        size, chunks = asyncio.run(asyncio.wait_for(read_edges(params, target.lun, timeout), 3 * timeout))
    except (ISCSIError, OSError, TimeoutError) as e:
        raise ByoError(f"{target.origin}: cannot read the LUN: {e}") from None
    try:
        with open(backing, "rb") as f:
            same = f.seek(0, 2) == size and all(f.seek(o) == o and f.read(len(c)) == c for o, c in chunks)
    except OSError as e:
        raise ByoError(f"--lun-file {backing}: {e.strerror}") from None
    if not same:
        raise ByoError(f"--lun-file {backing} is not what {target.origin} serves (size or its first and last "
                       f"{EDGE >> 20} MiB differ): give the file that target's LUN {target.lun} is backed by")


def prepare_remote(target: UserTarget, fstype: str, *, allow_format: bool, backing: Path | None,
                   format_in_guest: FormatInGuest) -> LunPlan:
    """The admin's target: what its LUN holds decides (through ``backing`` if given, else read through the
    target); --format makes the filesystem from a guest boot."""
    if backing is not None:
        backing = Path(backing).resolve()
        same_lun(target, backing)
        content = probe(backing)
    else:
        try:
            content = probe_lun(target.params, target.lun).content
        except FsCheckError as e:
            raise ByoError(str(e)) from None
    d: Decision = require(decide(content, fstype, created=False, allow_format=allow_format, name=target.origin))
    if d.action == "reuse":
        return LunPlan("reused", d.reason, fstype, backing)
    return LunPlan("formatted", d.reason, fstype, backing, format_in_guest())
