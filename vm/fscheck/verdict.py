"""What a read-only check of a filesystem concludes, the same for every filesystem type and place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# How each type calls what its next mount would replay (the words of the failure lines).
REPLAYED = {"ext4": "journal recovery", "xfs": "log recovery", "btrfs": "log tree replay"}


class FsCheckError(RuntimeError):
    """A check could not be run (a tool is missing, failed to start or hung); the message says which."""


@dataclass(frozen=True)
class FsVerdict:
    """One filesystem, checked without mounting it.

    ``where`` is "host" (the LUN's image file, between boots) or "guest" (the LUN's block device in a last
    guest boot, for a LUN the host cannot read); ``tool`` is the checker as it was run and ``exit`` its
    status; ``needs_recovery`` says whether the next mount would replay a journal (ext4), a log (xfs) or a
    log tree (btrfs), and ``recovery_evidence`` where that was read. The payload is read the same way,
    without any replay: ``payload_ok`` is None when the filesystem holds no payload at all.
    """

    needs_recovery: bool
    exit: int
    tail: list[str] = field(default_factory=list)  # the checker's last lines, as evidence
    payload_sha256: str | None = None  # of the payload as read without replay
    recorded_sha256: str | None = None  # the digest the filesystem's payload.sha256 holds
    payload_ok: bool | None = None
    expected_sha256: str | None = None  # what the guest's writer last wrote, when known
    fstype: str = "ext4"
    where: str = "host"
    tool: str = "e2fsck -fn"
    target: str = ""
    recovery_evidence: str = ""
    problems: list[str] = field(default_factory=list)  # the checker's lines that say what is wrong

    @property
    def check(self) -> str:
        """Which check judged it, in words for a report: "host: xfs_repair -n -f"."""
        return f"{self.where}: {self.tool}"

    @property
    def clean(self) -> bool:
        """Nothing to replay and the checker found nothing wrong."""
        return not self.needs_recovery and self.exit == 0

    @property
    def damaged(self) -> bool:
        """Not what a clean shutdown leaves: something to replay, the checker complains, or not the payload
        just written."""
        return not self.clean or self.payload_ok is not True

    def failures(self, where: str) -> list[str]:
        """What is wrong after a shutdown, in words (empty: clean, payload intact)."""
        out = []
        if self.needs_recovery:
            out.append(f"{where}: after shutdown the LUN still needs {REPLAYED.get(self.fstype, 'recovery')} "
                       "(not cleanly unmounted)")
        if self.exit != 0:
            out.append(f"{where}: after shutdown {self.tool} exit {self.exit}")
        if self.payload_ok is not True:
            out.append(f"{where}: after shutdown the LUN does not hold the payload just written "
                       "(read without journal replay)")
        return out

    def final_failure(self) -> list[str]:
        """The last check of a run, in words (empty: clean, payload intact)."""
        if not self.damaged:
            return []
        return [(f"final: LUN needs_recovery={self.needs_recovery}, {self.tool} exit {self.exit}, "
                f"payload_ok={self.payload_ok}")]

    def as_dict(self) -> dict:
        d = {**asdict(self), "check": self.check, "clean": self.clean}
        if self.fstype == "ext4":  # the keys the proofs' JSON has always had
            d.update(e2fsck_exit=self.exit, e2fsck_tail=self.tail)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FsVerdict:
        """The verdict `as_dict` gave (the derived keys are left out)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
