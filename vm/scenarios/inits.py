"""The init systems a proof can boot, as one parameter: ``--init busybox|systemd`` (more register here).

busybox is the harness's own host-root guest running the rendered busybox rc (vm/scenarios/reboot.py and
friends). Every other init boots a Debian image (vm/guest_image.py) with the project's .deb installed by
apt, and is an `ImageInit`: how to install the proof's fstab, units or scripts, how its command shuts the
guest down, and how to read a boot's timeline from the console. vm/scenarios/image_proof.py runs the
scenarios on any of them. A new init (sysvinit) is one module with an `ImageInit` subclass and one line in
`IMAGE_INITS`.
"""

from __future__ import annotations

import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib import resources

from vm.console import GuestEvent
from vm.guest_image import FileSpec
from vm.harness import GUEST_RESULTS, GuestResult
from vm.scenarios import timeline
from vm.scenarios.plan import ProofPlan
from vm.scenarios.timeline import Event, Rule

DEFAULT_INIT = "busybox"
PROOF_DIR = "/usr/local/lib/bootkit-proof"  # the proof's scripts and proof.env in a Debian guest
SCRIPTS = ("common.sh", "writer.sh", "nodisk.sh", "cycle.sh", "late.sh")
UISCSICTL = "/usr/bin/uiscsictl"  # where the Debian package puts the programs
SOCKET = "/run/uiscsid.sock"
# The harness markers a timeline keeps, under their timeline names.
MARKERS = {"boot": "boot", "cmd-begin": "cmd-begin", "cmd-end": "cmd-end", "shutdown-begin": "shutdown-begin",
           "late-reload": "late-reload", "late-reloaded": "late-reloaded", "poweroff": "power-off",
           "reboot": "power-off"}


class ImageInit(ABC):
    """How one init system runs the proof in a Debian guest image."""

    name: str = ""              # the --init value
    variant: str = ""           # the vm.image variant the guest boots
    kernel_args: tuple[str, ...] = ()
    journal_to_console = False  # journald's lines on the console, with the guest's uptime
    fstab_options: tuple[str, ...] = ("_netdev",)  # the proof's fstab line when the scenario names none

    # ------------------------------------------------------------------ what goes into the image
    def files(self, plan: ProofPlan) -> dict[str, FileSpec]:
        """fstab, uiscsi.conf, the proof's scripts and proof.env; subclasses add their units."""
        out = {"/etc/fstab": FileSpec(plan.fstab.text()),
               "/etc/uiscsi.conf": FileSpec(plan.target.config_text()),
               f"{PROOF_DIR}/proof.env": FileSpec(self.env_text(plan))}
        for name in SCRIPTS:
            out[f"{PROOF_DIR}/{name}"] = FileSpec(guest_file_proof(name), 0o755)
        for path, secret in plan.target.secrets:  # an admin's CHAP secrets, as uiscsi.conf wants them
            out[path] = FileSpec(secret + "\n", 0o600)
        return out

    def dirs(self, plan: ProofPlan) -> list[str]:
        return [plan.fstab.mountpoint]

    def enable(self, plan: ProofPlan) -> list[str]:
        """Services to enable in the image (the package enables its own)."""
        return []

    def env(self, plan: ProofPlan) -> dict[str, str]:
        """The guest scripts' settings (proof.env); subclasses fill the init-specific commands."""
        return {"PROOF_DATA": plan.fstab.mountpoint, "PROOF_RESULTS": GUEST_RESULTS, "PROOF_RUN": "/run/proof",
                "PROOF_MB": str(plan.payload_mb), "PROOF_UISCSICTL": UISCSICTL, "PROOF_SOCK": SOCKET,
                "PROOF_CONFIG": "/etc/uiscsi.conf",
                # the command runs once the boot is over: every service has started or failed by then
                "PROOF_SERVICES_WAIT": "5",
                "PROOF_BUSY": "1" if plan.busy else "0",
                "PROOF_SHUTDOWN_CMD": self.shutdown_command(plan.shutdown),
                "PROOF_BUSY_CMD": self.busy_command(plan), "PROOF_LATE_MOUNT_CMD": self.late_mount_command(plan),
                "PROOF_WRITER_START_CMD": self.writer_start_command(plan),
                "PROOF_SOURCE_CMD": self.source_command(plan)}

    def env_text(self, plan: ProofPlan) -> str:
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in self.env(plan).items())

    @abstractmethod
    def shutdown_command(self, how: str) -> str:
        """Shell code that shuts the guest down the init system's way (how: reboot or poweroff)."""

    @abstractmethod
    def busy_command(self, plan: ProofPlan) -> str:
        """Shell code starting a process that holds the mount through the whole shutdown."""

    @abstractmethod
    def late_mount_command(self, plan: ProofPlan) -> str:
        """Shell code an admin runs to mount the filesystem once `uiscsictl reload` brought its disk back."""

    @abstractmethod
    def writer_start_command(self, plan: ProofPlan) -> str:
        """Shell code starting the writer service again."""

    def source_command(self, plan: ProofPlan) -> str:
        """Shell code printing what the init system mounted the filesystem from (its fstab source)."""
        return f"findmnt -n -o SOURCE {shlex.quote(plan.fstab.mountpoint)}"

    def expects_damage(self, plan: ProofPlan) -> bool:
        """Whether this plan is a negative control: the design says its LUN is left needing recovery."""
        return False

    def fsck_output(self, r: GuestResult) -> list[str]:
        """What the boot's check of the network filesystem printed."""
        return []

    def reload_messages(self, r: GuestResult) -> list[str]:
        """What uiscsictl reload said about the targets (journald's uiscsictl lines on the console)."""
        return [timeline.stamped(line)[1] for line in r.lines
                if re.search(r"uiscsictl\[\d+\]: uiscsictl: ", line.text)]

    # ------------------------------------------------------------------ reading a boot back
    @abstractmethod
    def rules(self, plan: ProofPlan) -> Sequence[Rule]:
        """Console lines -> timeline events."""

    def timeline(self, plan: ProofPlan, r: GuestResult) -> list[Event]:
        rules = [*self.rules(plan), *timeline.kernel_rules()]
        events = timeline.from_console(r.lines, rules) + timeline.from_markers(r.events, MARKERS)
        anchors = [e for e in r.events if e.uptime >= 0] or [GuestEvent("start", 0.0, 0.0)]
        return timeline.ordered(timeline.fill_clocks(events, anchors))

    @abstractmethod
    def shutdown_facts(self, plan: ProofPlan, events: list[Event], r: GuestResult) -> dict:
        """What the shutdown did, as evidence: unmount, logout, the daemon through the final kill, errors."""

    @abstractmethod
    def stop_bounds(self, plan: ProofPlan, events: list[Event]) -> list[dict]:
        """Each shutdown step with its duration and its stated bound: {step, seconds, bound, ok}."""


def guest_file_proof(name: str) -> bytes:
    """A file of vm/guest_proof (package data)."""
    return resources.files("vm").joinpath("guest_proof", name).read_bytes()


def _registry() -> dict[str, ImageInit]:
    from vm.scenarios.init_systemd import Systemd
    from vm.scenarios.init_sysvinit import Sysvinit

    return {"systemd": Systemd(), "sysvinit": Sysvinit()}


IMAGE_INITS: dict[str, ImageInit] = {}


def image_init(name: str) -> ImageInit:
    """The ImageInit for ``name`` (KeyError for busybox, which is not an image guest)."""
    if not IMAGE_INITS:
        IMAGE_INITS.update(_registry())
    return IMAGE_INITS[name]


def names() -> list[str]:
    """Every --init value, busybox first (the default)."""
    if not IMAGE_INITS:
        IMAGE_INITS.update(_registry())
    return [DEFAULT_INIT, *IMAGE_INITS]
