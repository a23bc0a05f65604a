"""Where a proof's LUN lives and how it is judged: the built-in tgtd on a LUN file, or an admin's target.

A scenario asks its `LunSource` four things: ``prepare`` (the LUN made ready under the format rule of
vm/byo/lun.py, before any boot), ``served`` (the port the guest logs in to while the boots run: a tgtd the
test starts on the LUN file, or the admin's own target, left as it is), ``check`` (the LUN between boots:
the host's read-only check of its backing file, or None when the host has none) and ``final`` (the last
word on the LUN: the host's check, or a last guest boot that attaches it and runs the same check there).
`TargetSpec` (plan.py) is how the guest reaches it.

A plain path stands for the built-in tgtd with an ext4 on that file (`of`), which is what every scenario
did before an admin could bring their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from vm.byo.lun import LunPlan, prepare_file, prepare_remote
from vm.byo.relay import Relay
from vm.byo.target import UserTarget
from vm.fscheck.guest import SECRETS_DIR as BOOT_SECRETS
from vm.fscheck.guest import LunAccess, in_guest
from vm.fscheck.host import LABEL
from vm.scenarios import lun
from vm.scenarios.facts import Runner, start_target
from vm.scenarios.plan import GUEST_IQN, HOST_FROM_GUEST, TargetSpec
from vm.scenarios.target_down import Stoppable

SECRETS_DIR = "/etc/uiscsi.secrets"  # where an admin's CHAP secrets go in the guest


@dataclass
class LunSource:
    """The built-in tgtd serving ``lun_file``, or (``user``) the admin's target, whose LUN the host checks
    through ``lun_file`` when given (its backing file) and otherwise from a last guest boot."""

    lun_file: Path | None = None
    user: UserTarget | None = None
    fstype: str = "ext4"
    allow_format: bool = False
    label: str = LABEL
    payload_mb: int = 8
    relayed: bool = False  # target-down: the guest reaches an admin's target through a relay (vm/byo/relay.py)
    plan: LunPlan | None = field(default=None, init=False)
    served_text: str = field(default="", init=False)

    @property
    def created(self) -> bool:
        return self.plan is not None and self.plan.action == "created"

    @property
    def seeded(self) -> bool:
        """The LUN got a fresh filesystem with a payload from this run (created or --format)."""
        return self.plan is not None and self.plan.seed is not None

    # ------------------------------------------------------------------------------------------ setup
    def prepare(self, workdir: Path, runner: Runner) -> Path:
        """Make the LUN ready (see vm/byo/lun.py); returns the absolute workdir."""
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        if self.user is None:
            assert self.lun_file is not None
            self.plan = prepare_file(self.lun_file, self.fstype, allow_format=self.allow_format,
                                     payload_mb=self.payload_mb, label=self.label)
        else:
            self.plan = prepare_remote(self.user, self.fstype, allow_format=self.allow_format,
                                       backing=self.lun_file, format_in_guest=lambda: self._format(workdir, runner))
        runner.say(f"LUN: {self.plan.reason}; judged by the {self.plan.check_where}'s check")
        return workdir

    def _format(self, workdir: Path, runner: Runner) -> str:
        runner.say(f"formatting {self.user.origin if self.user else 'the LUN'} as {self.fstype} from a guest boot")
        g = in_guest(self.access(), self.fstype, workdir / "format", ("format",), payload_mb=self.payload_mb,
                     timeout=runner.timeout, stream=runner.stream, boot_files=runner.boot_files)
        if g.exit_code != 0 or not g.digest:
            raise lun.LunError(f"formatting the LUN from a guest failed (exit {g.exit_code}); see "
                               f"{workdir / 'format' / 'console.log'}")
        return g.digest

    @contextlib.contextmanager
    def served(self, workdir: Path, port: int | None = None) -> Iterator[int]:
        """The port the guest logs in to, for the time of the boots."""
        if self.user is not None:
            self.served_text = f"the admin's target {self.user.origin}"
            yield self.user.params.port
            return
        assert self.lun_file is not None
        with start_target(workdir, self.lun_file.resolve(), port=port) as tgt:
            self.served_text = f"tgtd serves it as {tgt.iqn} on 127.0.0.1:{tgt.port}"
            yield tgt.port

    def target(self, port: int) -> TargetSpec:
        """How the guest reaches the LUN (the built-in tgtd's on PORT, or the admin's)."""
        u = self.user
        if u is None:
            return TargetSpec(port=port)
        host, port = (HOST_FROM_GUEST, port) if self.relayed else (u.guest_host, u.params.port)
        return TargetSpec(port=port, iqn=u.iqn, host=host, lun=u.lun, name=u.name,
                          auth=tuple(u.auth_lines(SECRETS_DIR)), secrets=tuple(u.secret_files(SECRETS_DIR).items()),
                          initiator=u.params.initiator_name or GUEST_IQN)

    def late_start(self, workdir: Path, port: int) -> Callable[[], Stoppable]:
        """What the target-down proof brings up on PORT once the guest asks: tgtd on the LUN file, or a
        relay to the admin's target (which the test never stops)."""
        u = self.user
        if u is None:
            assert self.lun_file is not None
            lun_file = self.lun_file.resolve()
            return lambda: start_target(workdir, lun_file, port=port)
        return lambda: Relay.start(port, u.params.host, u.params.port)

    def access(self) -> LunAccess:
        """How a guest of vm/fscheck/guest.py logs in to the admin's LUN (secrets under its boot share)."""
        u = self.user
        assert u is not None, "only an admin's target is reached from a LUN guest"
        spec = replace(self.target(0), auth=tuple(u.auth_lines(BOOT_SECRETS)), secrets=())
        secrets = {Path(p).name: s for p, s in u.secret_files(BOOT_SECRETS).items()}
        return LunAccess(spec.config_text(), spec.name, spec.lun, secrets)

    # ------------------------------------------------------------------------------------------ checks
    def check(self, expected: str | None = None) -> lun.HostCheck | None:
        """The host's check of the backing file, or None when the host has none."""
        if self.lun_file is None:
            return None
        return lun.check(self.lun_file.resolve(), expected=expected, fstype=self.fstype)

    def final(self, expected: str | None, workdir: Path, runner: Runner) -> lun.HostCheck:
        """The host's check, or a last guest boot's when the host has no backing file."""
        host = self.check(expected)
        if host is not None:
            return host
        runner.say("the host cannot read this LUN: a last guest boot checks it, read-only")
        g = in_guest(self.access(), self.fstype, Path(workdir) / "final-check", ("check",), expected=expected,
                     timeout=runner.timeout, stream=runner.stream, boot_files=runner.boot_files)
        if g.verdict is None:
            raise lun.LunError(f"the guest's check of the LUN gave no verdict (exit {g.exit_code}); see "
                               f"{Path(workdir) / 'final-check' / 'console.log'}")
        return g.verdict

    def describe(self) -> dict:
        """What the report says about the LUN: its file or target, what was done with it, which check."""
        out: dict = {"lun_file": str(self.lun_file.resolve()) if self.lun_file else None,
                     "created": self.created, "fstype": self.fstype,
                     "lun_source": self.user.origin if self.user else "tgtd (built in)"}
        if self.plan is not None:
            out["lun"] = self.plan.as_dict()
        return out


def of(lun_file: Path | LunSource) -> LunSource:
    """A scenario's LUN argument as a source: a path is the built-in tgtd with an ext4 on it."""
    return lun_file if isinstance(lun_file, LunSource) else LunSource(lun_file=Path(lun_file))

