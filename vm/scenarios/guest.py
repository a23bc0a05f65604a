"""What the proof's guest boots with, rendered into one host dir, and how its logs are read back.

The dir becomes the harness's ``rc_dir`` (copied to /bootkit/rc in the guest): the busybox ``rc`` and
``rc.shutdown`` rendered by rc/ with the fstab and uiscsi.conf beside them, ``proof.env``, and the guest
scripts of vm/guest_proof/ (the writer and no-disk services, the per-boot commands).

The fstab names the LUN by its stable ``/dev/disk/by-iscsi/<iqn>-lun1`` link with ``_netdev`` (and
``nofail``, so a target that is down does not stop the boot: fsck -N and mount -N skip it, as systemd's
remote-fs.target only wants a nofail mount). There are no local filesystems in the guest (its root is
the harness's overlay), so the local fsck/mount/umount steps are no-ops.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from initiator.daemon.wire import DEFAULT_SOCKET
from rc import render as rc_render
from vm.harness import GUEST_RC_DIR, GUEST_RESULTS
from vm.scenarios.plan import GUEST_IQN, MOUNTPOINT, TARGET_IQN, FstabSpec, TargetSpec

SOCKET = DEFAULT_SOCKET
PIDFILE = "/run/uiscsid.pid"
SCRIPTS = Path(__file__).resolve().parent.parent / "guest_proof"
# OpenBSD reboot(8) waits 2 s after SIGTERM and 3 s after sync; shorter here, same steps, to fit TCG.
SHUTDOWN_KILL_ARGS = "--term-wait 2 --sync-wait 0.5 --kill-step 0.5"

_MARKER = re.compile(r"^rc: (\d+\.\d+) (.*)$")
_STEP = re.compile(r"^step ([A-Za-z0-9_-]+) (begin|end rc=(\d+))$")
_SERVICE = re.compile(r"^(writer|nodisk|cycle|late): (\d+\.\d+) (.*)$")


@dataclass(frozen=True)
class GuestPlan:
    """One guest configuration; ``port`` is the host tgtd's (10.0.2.2:port in the guest)."""

    port: int
    shim: bool = True
    payload_mb: int = 8
    reload_wait: float = 10.0
    attach: str = ""  # uiscsid --attach; "": its default (auto)
    iqn: str = TARGET_IQN
    venv_bin: Path = field(default_factory=lambda: Path(sys.executable).parent)

    @property
    def target(self) -> TargetSpec:
        return TargetSpec(port=self.port, iqn=self.iqn)

    @property
    def fstab(self) -> FstabSpec:
        return FstabSpec.by_iscsi(self.target, "defaults", "_netdev", "nofail")

    @property
    def link(self) -> str:
        return self.target.link


def fstab_text(plan: GuestPlan) -> str:
    return plan.fstab.text("the iSCSI LUN by its stable link; a network disk (_netdev), not needed to boot")


def config_text(plan: GuestPlan) -> str:
    return plan.target.config_text(GUEST_IQN)


def settings(plan: GuestPlan) -> rc_render.Settings:
    b, rc = plan.venv_bin, GUEST_RC_DIR
    return replace(
        rc_render.Settings(),
        bootkit=str(b / "bootkit"),
        uiscsid=str(b / "uiscsid"),
        uiscsictl=str(b / "uiscsictl"),
        fstab=f"{rc}/fstab",
        config=f"{rc}/uiscsi.conf",
        socket=SOCKET,
        pidfile=PIDFILE,
        log=f"{GUEST_RESULTS}/rc.log",
        daemon_log=f"{GUEST_RESULTS}/uiscsid.log",
        reload_wait=plan.reload_wait,
        ctl_timeout=60.0,
        shim=plan.shim,
        attach=plan.attach,
        network="ip link set eth0 up",
        services_start=f"{rc}/services.sh start",
        services_stop=f"{rc}/services.sh stop",
        local_fsck=":",
        local_mount=f"mkdir -p {MOUNTPOINT}",
        local_umount=":",
        shutdown_kill_args=SHUTDOWN_KILL_ARGS,
        poweroff="",
    )


def describe(plan: GuestPlan) -> dict:
    """What a busybox report says about its setup (the same keys as ProofPlan.describe)."""
    return {"init": "busybox", "shim": plan.shim, "fstab_line": plan.fstab.line(), "fstab_source": plan.fstab.source,
            "mountpoint": plan.fstab.mountpoint, "target": f"{plan.iqn} lun 1", "attach": plan.attach or "auto",
            "busy": False, "shutdown": "rc.shutdown, poweroff"}


def env_text(plan: GuestPlan) -> str:
    s = settings(plan)
    values = {
        "PROOF_DATA": MOUNTPOINT,
        "PROOF_RESULTS": GUEST_RESULTS,
        "PROOF_RUN": "/run/proof",
        "PROOF_MB": str(plan.payload_mb),
        "PROOF_BOOTKIT": s.bootkit,
        "PROOF_UISCSICTL": s.uiscsictl,
        "PROOF_SOCK": s.socket,
        "PROOF_CONFIG": s.config,
        "PROOF_FSTAB": s.fstab,
        "PROOF_PIDFILE": s.pidfile,
        # late.sh, once the target is back: what the busybox rc does at boot, then the writer
        "PROOF_LATE_MOUNT_CMD": '"$PROOF_BOOTKIT" fsck -N -p --wait 10 --fstab "$PROOF_FSTAB"; '
        'echo $? >"$PROOF_RESULTS/late.fsck"; "$PROOF_BOOTKIT" mount -a -N --wait 10 --fstab "$PROOF_FSTAB"',
        "PROOF_WRITER_START_CMD": '"$PROOF_DIR/writer.sh" </dev/null >>"$PROOF_RESULTS/services.out" 2>&1 & '
        'echo $! >"$PROOF_RUN/writer.pid"',
    }
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def render_dir(plan: GuestPlan, out: Path) -> Path:
    """Write rc, rc.shutdown, fstab, uiscsi.conf, proof.env and the guest scripts into OUT."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fstab").write_text(fstab_text(plan))
    (out / "uiscsi.conf").write_text(config_text(plan))
    (out / "proof.env").write_text(env_text(plan))
    entries, problems = rc_render.load_net_entries(str(out / "fstab"), "busybox")
    if problems or len(entries) != 1:
        raise ValueError(f"the proof's fstab does not parse as one network entry: {problems}")
    rendered = rc_render.render("busybox", settings(plan), entries)
    for rel, name in (("etc/rc", "rc"), ("etc/rc.shutdown", "rc.shutdown")):
        (out / name).write_text(rendered.files[rel].text)
        (out / name).chmod(0o755)
    for script in SCRIPTS.glob("*.sh"):
        shutil.copy2(script, out / script.name)
    return out


@dataclass(frozen=True)
class Step:
    """One rc step from the `rc: EPOCH.MS step NAME begin|end rc=N` markers (times: guest epoch)."""

    name: str
    begin: float
    end: float | None
    rc: int | None


def parse_rc_log(text: str) -> tuple[list[Step], dict[str, float]]:
    """The steps in order, and the other markers ("boot begin", "shutdown end", ...) by text -> time."""
    steps: list[Step] = []
    other: dict[str, float] = {}
    open_steps: dict[str, int] = {}
    for raw in text.splitlines():
        m = _MARKER.match(raw.strip())
        if not m:
            continue
        t, what = float(m[1]), m[2]
        s = _STEP.match(what)
        if s is None:
            other.setdefault(what, t)
        elif s[2] == "begin":
            open_steps[s[1]] = len(steps)
            steps.append(Step(s[1], t, None, None))
        elif s[1] in open_steps:
            i = open_steps.pop(s[1])
            steps[i] = replace(steps[i], end=t, rc=int(s[3]))
    return steps, other


def step(steps: list[Step], name: str) -> Step | None:
    return next((s for s in steps if s.name == name), None)


def service_events(text: str) -> list[tuple[str, float, str]]:
    """(service, epoch time, text) from the guest scripts' `NAME: EPOCH.MS TEXT` log lines."""
    out = []
    for raw in text.splitlines():
        m = _SERVICE.match(raw.strip())
        if m:
            out.append((m[1], float(m[2]), m[3]))
    return out


def between(lines: list[str], begin: str, end: str) -> list[str]:
    """The lines strictly between the first one containing BEGIN and the next containing END."""
    out: list[str] = []
    inside = False
    for line in lines:
        if not inside and begin in line:
            inside = True
        elif inside and end in line:
            return out
        elif inside:
            out.append(line)
    return out


_KILL = re.compile(r"bootkit shutdown-kill: \S+ (SIGTERM|SIGKILL)[^:]*: ([\d ]+)$")


def signalled(console_lines: list[str], pid: int) -> list[str]:
    """The shutdown-kill signals (SIGTERM, SIGKILL) whose PID list names pid."""
    out = []
    for line in console_lines:
        m = _KILL.search(line.strip())
        if m and str(pid) in m[2].split():
            out.append(m[1])
    return out
