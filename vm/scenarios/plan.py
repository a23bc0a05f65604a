"""What a proof runs against, as parameters: the target the guest logs in to, the fstab line that mounts
its LUN, the init system and how the daemon runs. The scenarios take a `ProofPlan` and never spell these
out themselves, so a user's own target or fstab line (issue 16) is one more way to build a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fstab_tools.fstab import mangle
from initiator.kernel.udev_info import link_path

GUEST_IQN = "iqn.2026-11.test.bootkit:proof-guest"
TARGET_IQN = "iqn.2026-11.test.bootkit:proof"
HOST_FROM_GUEST = "10.0.2.2"  # QEMU user networking: the host's loopback
MOUNTPOINT = "/srv/data"
# How long the kernel holds a netlink device's I/O for a daemon that went away (the session's
# replacement timeout): short in the proofs, so that a control whose daemon was killed shows its damage
# in seconds rather than after the default 120 s. It changes when a failure shows, never whether.
REPLACEMENT_TIMEOUT = 15.0


@dataclass(frozen=True)
class TargetSpec:
    """The iSCSI target and LUN as the guest reaches them (the host's tgtd at 10.0.2.2 by default)."""

    port: int
    iqn: str = TARGET_IQN
    host: str = HOST_FROM_GUEST
    lun: int = 1
    name: str = "proof"  # the target's name in uiscsi.conf
    replacement_timeout: float = REPLACEMENT_TIMEOUT
    # an admin's target (vm/byo/target.py): CHAP and digest statements, and the secret files they name
    # (guest path, secret), which the guest gets with mode 0600
    auth: tuple[str, ...] = ()
    secrets: tuple[tuple[str, str], ...] = ()
    initiator: str = GUEST_IQN

    @property
    def link(self) -> str:
        """The LUN's stable name in the guest: /dev/disk/by-iscsi/<iqn>-lun<N>."""
        return link_path(self.iqn, self.lun)

    def config_text(self, initiator: str | None = None) -> str:
        """The guest's /etc/uiscsi.conf for this target."""
        auth = "".join(f"    {line}\n" for line in self.auth)
        return (f"# bootkit proof: the target as the guest reaches it\ninitiatorname {initiator or self.initiator}\n"
                f"target {self.name} {{\n    targetaddr {self.host} port {self.port}\n"
                f"    targetname {self.iqn}\n{auth}    lun {self.lun}\n"
                f"    replacement_timeout {self.replacement_timeout:g}\n}}\n")


@dataclass(frozen=True)
class FstabSpec:
    """One fstab line for the LUN; ``source`` defaults to the target's by-iscsi link."""

    source: str
    mountpoint: str = MOUNTPOINT
    fstype: str = "ext4"
    options: tuple[str, ...] = ("_netdev",)
    freq: int = 0
    passno: int = 2

    @classmethod
    def by_iscsi(cls, target: TargetSpec, *options: str, **kw: object) -> FstabSpec:
        return cls(target.link, options=options or ("_netdev",), **kw)  # type: ignore[arg-type]

    def line(self) -> str:
        fields = [mangle(self.source, first_field=True), mangle(self.mountpoint), mangle(self.fstype),
                  mangle(",".join(self.options) or "defaults")]
        return " ".join([*fields, str(self.freq), str(self.passno)])

    def text(self, comment: str = "the iSCSI LUN by its stable link, a network disk (_netdev)") -> str:
        return f"# bootkit proof: {comment}\n{self.line()}\n"

    def option(self, prefix: str) -> str | None:
        """The value of the first option ``prefix=VALUE`` (e.g. ``x-systemd.device-timeout``), if any."""
        return next((o.split("=", 1)[1] for o in self.options if o.startswith(prefix + "=")), None)


@dataclass(frozen=True)
class ProofPlan:
    """One proof guest: where its LUN is, how it is mounted, which init runs it and how the daemon runs.

    ``attach`` is uiscsid's --attach ("" for its default, auto); ``busy`` keeps a process holding the
    mount through the shutdown; ``shutdown`` is how each cycle ends ("reboot" or "poweroff").
    """

    target: TargetSpec
    fstab: FstabSpec
    init: str = "busybox"
    shim: bool = True
    attach: str = ""
    busy: bool = False
    shutdown: str = "reboot"
    payload_mb: int = 8
    reload_wait: float = 10.0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def default(cls, port: int, init: str, *options: str, **kw: object) -> ProofPlan:
        target = TargetSpec(port=port)
        return cls(target, FstabSpec.by_iscsi(target, *options), init=init, **kw)  # type: ignore[arg-type]

    def with_(self, **kw: object) -> ProofPlan:
        return replace(self, **kw)  # type: ignore[arg-type]

    def describe(self) -> dict:
        """What the report says about the setup: init, fstab line and source, attach, shim, busy."""
        return {"init": self.init, "fstab_line": self.fstab.line(), "fstab_source": self.fstab.source,
                "mountpoint": self.fstab.mountpoint, "target": f"{self.target.iqn} lun {self.target.lun}",
                "attach": self.attach or "auto", "shim": self.shim, "busy": self.busy,
                "shutdown": self.shutdown}
