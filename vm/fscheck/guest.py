"""A LUN the host cannot read (a user's target, no backing file here), formatted or checked in a guest.

One boot of the harness's host-root guest (vm/harness.py) runs vm/guest_lun/lun.sh: uiscsid attaches the
LUN as /dev/nbdN from a uiscsi.conf, and the guest runs the same code the host would on an image file
(`vm.fscheck.host`): ``format`` makes the filesystem with a seeded payload, ``check`` judges it read-only
(nothing is mounted, so nothing is replayed: what the check sees is what the last shutdown left). The
verdict says ``where: guest``. The guest's tools are the host's own (its root is the host's, read-only).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vm.fscheck.verdict import FsCheckError, FsVerdict
from vm.harness import GUEST_RESULTS, BootFiles, GuestError, run_guest

SCRIPT = Path(__file__).resolve().parent.parent / "guest_lun" / "lun.sh"
SECRETS_DIR = f"{GUEST_RESULTS}/secrets"  # where a generated uiscsi.conf's secret files are in the guest
OPS = ("format", "check")


@dataclass(frozen=True)
class LunAccess:
    """How a guest logs in to the LUN: a uiscsi.conf (its secret files at host paths the guest sees, or
    ``secrets`` written under SECRETS_DIR), the target's name in it and the LUN number."""

    config_text: str
    target: str
    lun: int
    secrets: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GuestLun:
    """What the boot did: the device, the seeded payload's digest (format), the verdict (check)."""

    exit_code: int | None
    device: str | None
    digest: str | None
    verdict: FsVerdict | None
    seconds: float
    console: str


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def in_guest(access: LunAccess, fstype: str, results: Path, ops: Sequence[str] = ("check",), *,
             expected: str | None = None, payload_mb: int = 8, wait: float = 60.0, timeout: float = 420.0,
             stream: TextIO | None = None, boot_files: BootFiles | None = None) -> GuestLun:
    """Boot once, attach the LUN, run OPS in order (see the module docstring)."""
    if unknown := [op for op in ops if op not in OPS]:
        raise ValueError(f"unknown LUN operation(s) {unknown}: {OPS}")
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    (results / "uiscsi.conf").write_text(access.config_text)
    if access.secrets:
        sec = results / "secrets"
        sec.mkdir(mode=0o700)
        for name, secret in access.secrets.items():
            fd = os.open(sec / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret + "\n")
    env = {"LUN_OPS": " ".join(ops), "LUN_TYPE": fstype, "LUN_TARGET": access.target,
           "LUN_NUMBER": str(access.lun), "LUN_PAYLOAD_MB": str(payload_mb), "LUN_WAIT": f"{wait:g}",
           "LUN_EXPECT": expected or ""}
    try:
        r = run_guest(script=SCRIPT.read_text(), net=True, env=env, results_dir=results, timeout=timeout,
                      stream=stream, boot_files=boot_files)
    finally:
        shutil.rmtree(results / "secrets", ignore_errors=True)  # the secrets never outlive the boot
    (results / "console.log").write_text(r.console + "\n")
    verdict = None
    if "check" in ops and (text := _read(results / "fscheck.json")):
        try:
            verdict = FsVerdict.from_dict(json.loads(text))
        except (ValueError, TypeError) as e:
            raise FsCheckError(f"the guest's check printed no verdict ({e}); see {results}/console.log") from None
    if r.error and r.exit_code is None:
        raise GuestError(f"the LUN's guest boot failed: {r.error} (console in {results}/console.log)")
    return GuestLun(r.exit_code, _read(results / "device"), _read(results / "format.sha256"), verdict,
                    r.duration, r.console)
