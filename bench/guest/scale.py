#!/usr/bin/env python3
"""Guest side of bench/scale.py: one uiscsid, udev naming its devices, and one host tgtd target with many LUNs.

Environment (set by bench/scale.py): SC_PORT, SC_IQN (the target at 10.0.2.2:SC_PORT, disk LUNs 1..max),
SC_SIZES ("1 8 32 64"). For each size N, in that order: a uiscsi.conf naming LUNs 1..N, then the time from
`uiscsictl reload` until every /dev/disk/by-iscsi/<iqn>-lun<i> link udev makes is there, uiscsid's resident
memory (VmRSS) with N LUNs attached, and the daemon's answer time to the request `uiscsictl show --json`
sends (median of 7, on one control connection), beside the wall time of the whole command once. Then a
reload with no target detaches everything before the next size. Results: /results/rows.json, or
/results/failed (one line) and the logs.
"""

import glob
import json
import os
import statistics
import subprocess
import sys
import time

R = "/results"
SOCK = "/run/uiscsid-scale.sock"
LINKS = "/dev/disk/by-iscsi"
INITIATOR = "iqn.2026-12.test.bootkit:scale"


def fail(msg: str) -> None:
    with open(f"{R}/failed", "w") as f:
        f.write(msg.strip().replace("\n", " | ")[-2000:] + "\n")
    print(f"scale guest: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def sh(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def wait_for(pred, seconds: float, step: float = 0.05) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def write_conf(path: str, port: str, iqn: str, luns: int) -> None:
    body = f"initiatorname {INITIATOR}\n"
    if luns:
        body += (f"target disk {{\n targetaddr 10.0.2.2 port {port}\n targetname {iqn}\n"
                 f" lun {' '.join(str(i) for i in range(1, luns + 1))}\n}}\n")
    with open(path, "w") as f:
        f.write(body)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    port, iqn = os.environ["SC_PORT"], os.environ["SC_IQN"]
    sizes = [int(x) for x in os.environ["SC_SIZES"].split()]
    need = max(sizes) + 8
    # 64 LUNs need 64 NBD devices: reload the module with enough of them (none is in use yet)
    sh("rmmod", "nbd")
    r = sh("modprobe", "nbd", f"nbds_max={need}")
    if r.returncode:
        fail(f"modprobe nbd nbds_max={need}: {r.stderr}")
    # udev names the devices, as on an installed host: the package's rule, rendered, and udevd running
    r = sh("bootkit", "rc", "render", "--init", "systemd", "-o", "/tmp/rc")
    rules = glob.glob("/tmp/rc/**/61-uiscsi.rules", recursive=True)
    if r.returncode or not rules:
        fail(f"bootkit rc render: {r.stderr or 'no 61-uiscsi.rules'}")
    os.makedirs("/etc/udev/rules.d", exist_ok=True)
    with open(rules[0]) as src, open("/etc/udev/rules.d/61-uiscsi.rules", "w") as dst:
        dst.write(src.read())
    with open(f"{R}/udevd.log", "w") as log:
        udevd = subprocess.Popen(["/lib/systemd/systemd-udevd"], stdout=log, stderr=subprocess.STDOUT)
    if not wait_for(lambda: os.path.exists("/run/udev/control"), 30):
        fail("systemd-udevd did not start")
    with open(f"{R}/uiscsid.log", "w") as log:
        daemon = subprocess.Popen(["uiscsid", "-d", "-s", SOCK], stdout=log, stderr=subprocess.STDOUT)
    if not wait_for(lambda: os.path.exists(SOCK), 60):
        with open(f"{R}/uiscsid.log") as log:
            fail(f"uiscsid did not start: {log.read()}")
    from initiator.ctl.client import ControlClient

    conf = "/tmp/uiscsi-scale.conf"
    rows = []
    for n in sizes:
        links = [f"{LINKS}/{iqn}-lun{i}" for i in range(1, n + 1)]
        write_conf(conf, port, iqn, n)
        t0 = time.monotonic()
        r = sh("uiscsictl", "-s", SOCK, "reload", "-f", conf, "--wait", "600", timeout=660)
        if r.returncode:
            fail(f"reload with {n} LUNs exited {r.returncode}: {r.stdout} {r.stderr}")
        if not wait_for(lambda links=links: all(os.path.lexists(p) for p in links), 300, 0.01):
            missing = [p for p in links if not os.path.lexists(p)]
            fail(f"{len(missing)} of {n} links missing after reload, e.g. {missing[0]}")
        attach = time.monotonic() - t0
        time.sleep(1)       # let the daemon settle before the memory and latency figures
        rss = rss_mib(daemon.pid)
        with ControlClient(SOCK) as c:
            c.call("show", what="summary")
            times = []
            for _ in range(7):
                s = time.perf_counter()
                c.call("show", what="summary")
                times.append((time.perf_counter() - s) * 1000)
        s = time.monotonic()
        r = sh("uiscsictl", "-s", SOCK, "show", "--json")
        command_ms = (time.monotonic() - s) * 1000
        if r.returncode or len(json.loads(r.stdout)["targets"]) != 1:
            fail(f"show --json with {n} LUNs: {r.stdout} {r.stderr}")
        rows.append({"luns": n, "attach_seconds": round(attach, 3), "rss_mib": round(rss, 1),
                     "show_ms": round(statistics.median(times), 2), "show_command_ms": round(command_ms, 1)})
        print(f"scale guest: {rows[-1]}", file=sys.stderr, flush=True)
        with open(f"{R}/rows.json", "w") as f:
            json.dump(rows, f)
        # detach everything before the next size: a reload naming no target, then udev drops the links
        write_conf(conf, port, iqn, 0)
        r = sh("uiscsictl", "-s", SOCK, "reload", "-f", conf, "--wait", "120", timeout=180)
        if r.returncode:
            fail(f"reload with no target exited {r.returncode}: {r.stdout} {r.stderr}")
        if not wait_for(lambda links=links: not any(os.path.lexists(p) for p in links), 120):
            fail(f"links still there after detaching {n} LUNs")
    daemon.terminate()
    daemon.wait(60)
    udevd.terminate()


if __name__ == "__main__":
    main()
