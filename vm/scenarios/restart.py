"""The restart proof (`bootkit vm restart-test`): tgtd SIGKILLed and restarted N times under a write stream.

One guest boot. In the guest: uiscsid, `uiscsictl reload` (one target: the LUN file served by a tgtd on
the host), ext4 on its /dev/disk/by-iscsi link (/dev/nbdN), and a writer that writes files of random
bytes (`stream_writer`, up to 10 a second), fsyncs each, and appends its sha256 to a manifest (fsync'd
too, and copied to /results as it goes).
On the host, once the first file is on disk, tgtd is SIGKILLed and started again N times, at random
intervals (seeded: ``--seed`` replays a run's timing) while the writer goes on; after the last restart
the writer writes a few more files, then stops. What must hold:
- in the guest, with the page cache dropped, every file in the manifest reads back (through iSCSI) with
  its checksum; the writer saw no error and the kernel log shows no I/O error;
- after the unmount, on the host: e2fsck -fn finds the LUN file clean, and every file read out of it with
  debugfs has its checksum.
Reconnects are uiscsid's own count (``show stats --json``: session reinstatements, plus fresh logins).
The LUN file is created (ext4) on first use and reused; each run replaces the previous run's files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vm.harness import run_guest
from vm.scenarios import guest, lun
from vm.scenarios.facts import Runner, read, start_target
from vm.targets import Tgt

DIR = "restart-stream"
FILE_KB = 32
RATE = 10.0               # files per second at most (the LUN must hold the whole stream)
INTERVAL = (1.5, 4.5)     # seconds from tgtd being back to the next SIGKILL
DOWN = (0.2, 1.5)         # seconds tgtd stays dead
AFTER_LAST = 3            # files the writer must write after the last restart before it stops

GUEST = r"""#!/bin/sh
set -u
R=/results
modprobe nbd
cat > /tmp/uiscsi.conf <<EOF
initiatorname {guest_iqn}
target proof {{
 targetaddr 10.0.2.2 port {port}
 targetname {iqn}
 lun 1
}}
EOF
uiscsid -d > $R/uiscsid.log 2>&1 &
PID=$!
for i in $(seq 300); do test -S /run/uiscsid.sock && break; sleep 0.05; done
uiscsictl reload -f /tmp/uiscsi.conf --wait 60 > $R/reload.out 2>&1; echo $? > $R/reload.rc
mkdir -p /mnt/t
mount -t ext4 /dev/disk/by-iscsi/{iqn}-lun1 /mnt/t; echo $? > $R/mount.rc
D=/mnt/t/{dir}
rm -rf $D; mkdir $D; sync
cap=$(( $(df -k --output=avail /mnt/t | tail -1) * 8 / 10 / {file_kb} ))
echo "$cap" > $R/cap
python3 -m vm.scenarios.stream_writer $D $R --size $(({file_kb} * 1024)) --rate {rate:g} --cap $cap
sync; echo 3 > /proc/sys/vm/drop_caches
(cd $D && sha256sum -c $R/manifest) > $R/verify.out 2>&1
grep -c ': OK$' $R/verify.out > $R/verified
dmesg | grep -ci "i/o error" > $R/ioerrors
dmesg | grep -i -e "i/o error" -e "EXT4-fs" -e nbd > $R/dmesg
uiscsictl show stats --json > $R/stats.json
uiscsictl show --json > $R/summary.json
umount /mnt/t; echo $? > $R/umount.rc
kill -TERM $PID; wait $PID; echo $? > $R/daemon.rc
"""


class _Restarter:
    """Kills and restarts tgtd N times once the guest's writer runs, then tells the writer to stop."""

    def __init__(self, tgt: Tgt, results: Path, restarts: int, rng: random.Random, say: Callable[[str], None],
                 deadline: float) -> None:
        self.tgt, self.results, self.restarts, self.rng, self.say = tgt, results, restarts, rng, say
        self.deadline = deadline
        self.log: list[dict] = []
        self.error: str | None = None
        self.started: float | None = None
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="restart-test", daemon=True)
        self.thread.start()

    def _files(self) -> int:
        return len(read(self.results, "manifest").splitlines())

    def _wait(self, cond: Callable[[], bool]) -> bool:
        while not cond():
            if self.halt.wait(0.1) or time.monotonic() > self.deadline:
                return False
        return True

    def _run(self) -> None:
        try:
            if not self._wait(lambda: (self.results / "writing").exists()):
                return
            self.started = time.monotonic()
            for n in range(1, self.restarts + 1):
                if self.halt.wait(self.rng.uniform(*INTERVAL)):
                    return
                down = self.rng.uniform(*DOWN)
                at, files = time.monotonic() - self.started, self._files()
                self.tgt.restart(down_for=down)
                back = time.monotonic() - self.started
                self.log.append({"restart": n, "killed_at": round(at, 2), "back_at": round(back, 2),
                                 "files_before": files})
                self.say(f"restart {n}/{self.restarts}: tgtd SIGKILLed at {at:.1f} s, back at {back:.1f} s "
                         f"({files} files written so far)")
            files = self._files()
            self._wait(lambda: self._files() >= files + AFTER_LAST)
        except (RuntimeError, OSError, TimeoutError) as exc:
            self.error = f"restarting tgtd: {exc}"
        finally:
            (self.results / "stop").write_text("stop\n")

    def stop(self) -> None:
        self.halt.set()
        self.thread.join(timeout=60)


def _host_files(lun_file: Path, manifest: list[tuple[str, str]]) -> tuple[int, list[str]]:
    """The stream's files as debugfs reads them from the unmounted LUN file: (verified, bad names)."""
    with tempfile.TemporaryDirectory(prefix="bootkit-restart-") as d:
        r = subprocess.run(["debugfs", "-R", f"rdump /{DIR} {d}", str(lun_file)], capture_output=True, text=True,
                           timeout=300, check=False)
        if r.returncode != 0:
            return 0, [f"debugfs rdump failed: {r.stderr.strip()[-200:]}"]
        ok, bad = 0, []
        for digest, name in manifest:
            path = Path(d, DIR, name)
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                ok += 1
            else:
                bad.append(name)
        return ok, bad


def _int(text: str, default: int = -1) -> int:
    return int(text) if text.lstrip("-").isdigit() else default


def restart_test(lun_file: Path, restarts: int, workdir: Path, runner: Runner, seed: int | None = None) -> dict:
    """Run the proof (see the module docstring) and return its report."""
    t0 = time.monotonic()
    lun_file, workdir = Path(lun_file).resolve(), Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    created = lun.ensure(lun_file, size_mb=128, payload_mb=1)
    seed = random.randrange(1 << 32) if seed is None else seed
    results = workdir / "guest"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    runner.say(f"LUN {lun_file}{' (created)' if created else ''}; {restarts} restarts, seed {seed}")
    tgt = start_target(workdir, lun_file)
    try:
        restarter = _Restarter(tgt, results, restarts, random.Random(seed), runner.say,
                               time.monotonic() + runner.timeout)
        script = GUEST.format(guest_iqn=guest.GUEST_IQN, port=tgt.port, iqn=guest.TARGET_IQN, dir=DIR,
                              file_kb=FILE_KB, rate=RATE)
        r = run_guest(script=script, net=True, results_dir=results, timeout=runner.timeout, stream=runner.stream,
                      boot_files=runner.boot_files)
        restarter.stop()
    finally:
        tgt.stop()
    (results / "console.log").write_text(r.console + "\n")
    manifest = [tuple(line.split()) for line in read(results, "manifest").splitlines() if len(line.split()) == 2]
    written, writer_errors = (map(int, read(results, "writer").split()) if len(read(results, "writer").split()) == 2
                              else (0, -1))
    host = lun.check(lun_file)
    host_ok, host_bad = _host_files(lun_file, manifest) if manifest else (0, [])
    guest_ok = _int(read(results, "verified"), 0)
    reconnects, logins = 0, 0
    try:
        (st,) = json.loads(read(results, "stats.json"))["stats"]
        (summary,) = json.loads(read(results, "summary.json"))["targets"]
        reconnects, logins = (st["session"] or {}).get("reconnects", 0), summary.get("logins", 0)
    except (ValueError, KeyError, TypeError):
        pass
    latencies = []
    for line in read(results, "latency").splitlines():
        words = line.split()
        if len(words) == 3:
            latencies.append(float(words[2]) - float(words[1]))
    io_errors = _int(read(results, "ioerrors"))
    checks = {
        "logged_in_and_mounted": read(results, "reload.rc") == "0" and read(results, "mount.rc") == "0",
        "every_restart_done": len(restarter.log) == restarts and restarter.error is None,
        "writer_saw_no_error": writer_errors == 0 and written > 0,
        "every_file_reads_back_in_the_guest": guest_ok == len(manifest) > 0,
        "every_file_intact_on_the_lun": host_ok == len(manifest) and not host_bad,
        "no_io_error_in_the_kernel_log": io_errors == 0,
        "unmounted_and_logged_out": read(results, "umount.rc") == "0" and read(results, "daemon.rc") == "0",
        "e2fsck_clean": host.exit == 0 and not host.needs_recovery,
    }
    return {
        "test": "restart",
        "lun_file": str(lun_file),
        "created": created,
        "seed": seed,
        "restarts": len(restarter.log),
        "reconnects": reconnects + max(0, logins - 1),
        "files_written": len(manifest),
        "files_verified": host_ok,
        "files_verified_in_guest": guest_ok,
        "files_bad": len(manifest) - host_ok,
        "bad_files": host_bad[:20],
        "io_errors": io_errors,
        "writer_errors": writer_errors,
        "e2fsck_exit": host.exit,
        "restart_log": restarter.log,
        "restarter_error": restarter.error,
        "boot_seconds": r.duration,
        "stream_seconds": round(time.monotonic() - restarter.started, 1) if restarter.started else None,
        "max_write_seconds": round(max(latencies), 2) if latencies else None,
        "median_write_seconds": round(sorted(latencies)[len(latencies) // 2], 3) if latencies else None,
        "guest_error": r.error,
        "checks": checks,
        "ok": all(checks.values()),
        "seconds": round(time.monotonic() - t0, 1),
        "workdir": str(workdir),
    }


# --------------------------------------------------------------------------------------------- the CLI
EPILOG = """\
One guest boot (QEMU, TCG) running this host's root with the project's venv; the LUN file is served by a
real tgtd on 127.0.0.1 (10.0.2.2 in the guest) and holds ext4, mounted in the guest from /dev/nbdN. The
guest's writer writes 32 KiB files of random bytes (up to 10 a second), fsyncs each and records its
sha256; the host
SIGKILLs and restarts tgtd N times at random intervals (1.5-4.5 s apart, 0.2-1.5 s down; --seed replays
them). Then every recorded file must read back with its checksum, in the guest (page cache dropped)
and on the host (debugfs on the unmounted LUN file), e2fsck -fn must be clean and the kernel log must
show no I/O error. The boot's console and the daemon's log stay in --workdir.
Exit status: 0 every check held, 1 one did not, 125 the guest or the target could not be run.

JSON: restarts, reconnects, files_verified, files_bad, io_errors, files_written, writer_errors,
e2fsck_exit, restart_log, seed, boot_seconds, stream_seconds, max_write_seconds, checks, ok.

examples:
  bootkit vm restart-test                                  20 restarts on /var/tmp/bootkit-proof/restart.img
  bootkit vm restart-test --restarts 3 --json
  bootkit vm restart-test --restarts 20 --lun-file /var/tmp/r.img --seed 7 --json
"""


def table(rep: dict) -> str:
    lines = [
        (f"restart-test: {rep['restarts']} tgtd restarts (seed {rep['seed']}), {rep['reconnects']} reconnects, "
        f"LUN {rep['lun_file']}"),
        (f"  files written and fsync'd: {rep['files_written']}; verified on the LUN: {rep['files_verified']}, "
        f"bad: {rep['files_bad']}; I/O errors in the kernel log: {rep['io_errors']}"),
        (f"  slowest write+fsync {rep['max_write_seconds']} s (median {rep['median_write_seconds']} s); "
        f"e2fsck -fn exit {rep['e2fsck_exit']}"),
    ]
    lines += [f"  {'ok  ' if ok else 'FAIL'} {name.replace('_', ' ')}" for name, ok in rep["checks"].items()]
    lines.append(f"result: {'PASS' if rep['ok'] else 'FAIL'} ({rep['seconds']:.0f} s, logs in {rep['workdir']})")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None],
             run: Callable[..., int], state_dir: Path) -> None:
    """Add ``restart-test``; ``common`` adds the scenarios' shared options and ``run`` runs a scenario."""
    p = sub.add_parser("restart-test", help="kill and restart tgtd N times under an fsync'd write stream",
                       description="Prove that an ext4 on /dev/nbdN loses nothing while its target is "
                                   "SIGKILLed and restarted N times under a checksummed write stream.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--restarts", type=int, default=20, metavar="N", help="tgtd restarts (default 20)")
    p.add_argument("--lun-file", metavar="PATH", default=str(state_dir / "restart.img"),
                   help=f"LUN backing file, created (ext4, 128 MiB) on first use (default {state_dir}/restart.img)")
    p.add_argument("--seed", type=int, default=None, help="seed of the restart timing (default: random)")
    common(p)

    def cmd(args: argparse.Namespace) -> int:
        if args.restarts < 1:
            print("bootkit vm restart-test: --restarts must be >= 1", file=sys.stderr)
            return 2
        return run(args, "restart-test",
                   lambda w, r: restart_test(Path(args.lun_file), args.restarts, w, r, seed=args.seed), table)

    p.set_defaults(func=cmd)
