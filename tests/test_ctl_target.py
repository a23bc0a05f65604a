"""uiscsictl's one-shot tools against real targets (tgtd, istgt) and misbehaving listeners.

Data is checked with independent readers: the target's backing file and qemu-img (libiscsi).
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.target


def uiscsictl(*args, env=None, timeout=90):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIBISCSI_CHAP")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "initiator.ctl", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, check=False)


def ok_json(*args, **kw):
    r = uiscsictl(*args, "--json", **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def one_line_error(r):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def sha256(path, size=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(size) if size is not None else f.read())
    return h.hexdigest()


# ------------------------------------------------------------------------------------- the read tools


def test_discover_lists_the_target_and_its_portal(tgtd):
    t = tgtd(size_mb=8)
    r = uiscsictl("discover", f"127.0.0.1:{t.port}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"127.0.0.1:{t.port},1 {t.iqn}\n"
    doc = ok_json("discover", f"127.0.0.1:{t.port}")
    assert doc["targets"] == [{"name": t.iqn, "portals": [{"address": "127.0.0.1", "port": t.port, "tpgt": 1}]}]


def test_inquiry_agrees_with_libiscsi(tgtd):
    t = tgtd(size_mb=8)
    inq = subprocess.run(["iscsi-inq", t.url(1)], capture_output=True, text=True, timeout=30, check=True).stdout
    doc = ok_json("inquiry", t.url(1))
    assert f"Vendor:{doc['vendor']}" in inq.replace(" ", "") and f"Product:{doc['product']}" in inq
    assert doc["device_type_name"] == "disk" and doc["qualifier"] == 0
    assert {0x00, 0x80, 0x83, 0xB0, 0xB2} <= set(doc["vpd_pages"])
    assert doc["serial"] and any(d["type"] == "NAA" for d in doc["designators"])
    assert doc["provisioning"]["unmap"] is False
    text = uiscsictl("inquiry", t.url(1)).stdout
    assert "vendor" in text and doc["product"] in text and "identifiers" in text


def test_capacity_matches_the_backing_file_and_libiscsi(tgtd):
    t = tgtd(size_mb=24)
    doc = ok_json("capacity", t.url(1))
    assert doc["block_size"] * doc["blocks"] == os.path.getsize(t.backing[0]) == 24 << 20
    rc16 = subprocess.run(["iscsi-readcapacity16", t.url(1)], capture_output=True, text=True, timeout=30,
                          check=True).stdout
    assert f"Totalsize:{24 << 20}" in rc16.replace(" ", "")
    text = uiscsictl("capacity", t.url(1)).stdout
    assert f"blocks      {doc['blocks']}" in text and "24.0 MiB" in text


def test_luns_lists_controller_and_every_disk(tgtd):
    t = tgtd(size_mb=8, luns=2)
    doc = ok_json("luns", f"iscsi://127.0.0.1:{t.port}/{t.iqn}")
    assert [e["lun"] for e in doc["luns"]] == [0, 1, 2]
    assert doc["luns"][1]["type"] == "disk" and doc["luns"][2]["size"] == 8 << 20
    assert doc["luns"][0]["size"] is None
    text = uiscsictl("luns", t.url(1)).stdout.splitlines()
    assert text[0].split() == ["LUN", "TYPE", "VENDOR", "PRODUCT", "SIZE"] and len(text) == 4


def test_istgt_lun0_capacity_and_inquiry(istgt):
    t = istgt(size_mb=16)
    assert ok_json("capacity", t.url(0))["blocks"] * 512 == 16 << 20
    assert ok_json("inquiry", t.url(0))["device_type_name"] == "disk"


def test_istgt_demanding_header_digests_is_refused_clearly_and_works_when_offered(istgt):
    t = istgt(size_mb=4, digest="Header")
    start = time.monotonic()
    err = one_line_error(uiscsictl("capacity", "--timeout", "5", t.url(0)))
    assert "HeaderDigest" in err and time.monotonic() - start < 5 + 5
    assert ok_json("capacity", t.url(0) + "?header_digest=crc32c")["blocks"] == 8192


# --------------------------------------------------------------------------------------------------- cp


def test_cp_round_trip_file_to_lun_to_file_is_verified_independently(tgtd, tmp_path):
    t = tgtd(size_mb=32)
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom((20 << 20) + 1234))  # ends mid-block: padded with zeros on the LUN
    doc = ok_json("cp", "--queue-depth", "8", str(src), t.url(1))
    assert doc["bytes"] == src.stat().st_size
    # independent reader 1: the target's backing file
    with open(t.backing[0], "rb") as f:
        on_disk = f.read(src.stat().st_size + 512)
    assert on_disk[:src.stat().st_size] == src.read_bytes()
    assert on_disk[src.stat().st_size:] == bytes(512 - 1234 % 512) + on_disk[src.stat().st_size + 512 - 1234 % 512:]
    # independent reader 2: qemu-img through libiscsi
    q = tmp_path / "qemu.img"
    subprocess.run(["qemu-img", "dd", "-f", "raw", "-O", "raw", f"if={t.url(1)}", f"of={q}", "bs=1M",
                    "count=21"], check=True, capture_output=True, timeout=60)
    assert sha256(q, src.stat().st_size) == sha256(src)
    # and back again: the whole LUN comes back, same bytes as the backing file
    back = tmp_path / "back.img"
    r = uiscsictl("cp", t.url(1), str(back))
    assert r.returncode == 0 and r.stdout.startswith(f"copied {32 << 20} bytes"), r.stderr
    assert sha256(back) == sha256(t.backing[0])


def test_cp_with_header_and_data_digests(tgtd, tmp_path):
    t = tgtd(size_mb=8, params={"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(8 << 20))
    url = t.url(1) + "?header_digest=crc32c&data_digest=crc32c"
    session = ok_json("inquiry", url)["session"]
    assert session["header_digest"] and session["data_digest"]
    ok_json("cp", str(src), url)
    assert sha256(t.backing[0]) == sha256(src)
    assert ok_json("inquiry", t.url(1))["session"]["header_digest"] is False


def test_discover_on_istgt(istgt):
    t = istgt(size_mb=4)
    doc = ok_json("discover", f"127.0.0.1:{t.port}")
    assert [x["name"] for x in doc["targets"]] == [t.iqn]


def test_cp_survives_connection_resets_and_the_data_is_intact(tgtd, tmp_path):
    from tests.proxy import ResetProxy

    t = tgtd(size_mb=32)
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(24 << 20))
    with ResetProxy("127.0.0.1", t.port, reset_every=4 << 20, max_resets=4) as proxy:
        doc = ok_json("cp", str(src), f"iscsi://127.0.0.1:{proxy.port}/{t.iqn}/1")
        assert proxy.resets >= 3
    assert doc["bytes"] == 24 << 20
    assert sha256(t.backing[0], 24 << 20) == sha256(src)


def test_cp_lun_to_stdout_streams_the_whole_lun(tgtd):
    t = tgtd(size_mb=8)
    with open(t.backing[0], "r+b") as f:
        f.write(os.urandom(8 << 20))
    r = subprocess.run([sys.executable, "-m", "initiator.ctl", "cp", t.url(1), "-"], capture_output=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == sha256(t.backing[0])


def test_cp_lun_to_lun(tgtd):
    a, b = tgtd(size_mb=8), tgtd(size_mb=8)
    with open(a.backing[0], "r+b") as f:
        f.write(os.urandom(8 << 20))
    ok_json("cp", a.url(1), b.url(1))
    assert sha256(a.backing[0]) == sha256(b.backing[0])


def test_cp_onto_a_smaller_lun_is_refused(tgtd, tmp_path):
    t = tgtd(size_mb=4)
    src = tmp_path / "big.img"
    src.write_bytes(bytes(5 << 20))
    err = one_line_error(uiscsictl("cp", str(src), t.url(1)))
    assert f"holds {4 << 20} bytes, the source has {5 << 20}" in err


def test_cp_to_istgt_round_trip(istgt, tmp_path):
    t = istgt(size_mb=8)
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(8 << 20))
    ok_json("cp", str(src), t.url(0))
    assert sha256(t.backing) == sha256(src)


# ------------------------------------------------------------------------------------------------- perf


@pytest.mark.parametrize("extra", [[], ["--random"], ["--write"], ["--random", "--write"]])
def test_perf_json_reports_sane_numbers(tgtd, extra):
    t = tgtd(size_mb=16)
    doc = ok_json("perf", t.url(1), "--block-size", "64k", "--queue-depth", "4", "--seconds", "0.5", *extra)
    assert set(doc) >= {"iops", "mb_per_s", "connections", "queue_depth", "block_size", "seconds"}
    assert doc["iops"] > 0 and doc["ios"] > 0 and doc["connections"] == 1
    assert doc["queue_depth"] == 4 and doc["block_size"] == 65536 and 0.4 < doc["seconds"] < 5
    assert abs(doc["mb_per_s"] - doc["iops"] * 65536 / 2**20) < 1


def test_perf_text_output_is_one_readable_line(tgtd):
    t = tgtd(size_mb=8)
    r = uiscsictl("perf", t.url(1), "--block-size", "4k", "--queue-depth", "2", "--seconds", "0.3", "--random")
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert "\n" not in line and line.startswith("random reads of 4.0 KiB, QD 2, 1 connection(s): ")
    assert line.endswith(" s") and " IOPS, " in line and " MB/s over " in line


def test_perf_with_two_connections_uses_mcs(tgtd):
    t = tgtd(size_mb=16, params={"MaxConnections": "4"})
    doc = ok_json("perf", t.url(1), "--block-size", "4k", "--queue-depth", "8", "--seconds", "0.5",
                  "--connections", "2")
    assert doc["connections"] == 2 and doc["ios"] > 0


def test_perf_refuses_a_block_size_the_lun_cannot_do(tgtd):
    t = tgtd(size_mb=4)
    err = one_line_error(uiscsictl("perf", t.url(1), "--block-size", "8M", "--seconds", "0.2"))
    assert "larger than the LUN" in err


# -------------------------------------------------------------------------------------------- CHAP


def test_chap_secret_from_environment_logs_in(tgtd):
    t = tgtd(size_mb=4, chap=("alice", "alicesecret12"))
    env = {"LIBISCSI_CHAP_USERNAME": "alice", "LIBISCSI_CHAP_PASSWORD": "alicesecret12"}
    assert ok_json("capacity", t.url(1), env=env)["blocks"] == 8192


def test_wrong_chap_secret_is_refused_with_a_clear_message(tgtd):
    t = tgtd(size_mb=4, chap=("alice", "alicesecret12"))
    url = f"iscsi://alice%wrongsecret99@127.0.0.1:{t.port}/{t.iqn}/1"
    err = one_line_error(uiscsictl("capacity", url))
    assert "authentication" in err.lower() or "chap" in err.lower()
    assert "wrongsecret99" not in err


def test_wrong_chap_secret_on_istgt_is_refused(istgt):
    t = istgt(size_mb=4, chap=("iuser", "isecret12345"))
    err = one_line_error(uiscsictl("capacity", f"iscsi://iuser%nope12345678@127.0.0.1:{t.port}/{t.iqn}/0"))
    assert "authentication" in err.lower() or "chap" in err.lower()


def test_mutual_chap_through_url_arguments(tgtd):
    t = tgtd(size_mb=4, chap=("alice", "alicesecret12"), mutual=("tgt", "targetsecret34"))
    url = (f"iscsi://alice%alicesecret12@127.0.0.1:{t.port}/{t.iqn}/1"
           "?target_user=tgt&target_password=targetsecret34")
    assert ok_json("capacity", url)["blocks"] == 8192
    bad = url.replace("targetsecret34", "notthesecret56")
    err = one_line_error(uiscsictl("capacity", bad))
    assert "notthesecret56" not in err


# ----------------------------------------------------------------------------------- faulty "targets"


class Listener:
    """A TCP listener on loopback that does ``behaviour(conn)`` with each connection (a fault, not a peer)."""

    def __init__(self, behaviour):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            try:
                self.behaviour(conn)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def listener():
    made = []

    def factory(behaviour):
        made.append(Listener(behaviour))
        return made[-1]

    yield factory
    for lst in made:
        lst.close()


def _garbage(conn):
    conn.recv(4096)
    conn.sendall(bytes(range(256)) * 8)


def _oversize(conn):
    conn.recv(4096)
    bhs = bytearray(48)
    bhs[0] = 0x23  # Login Response
    bhs[5:8] = b"\xff\xff\xff"  # DataSegmentLength 16 MiB - 1
    conn.sendall(bytes(bhs))


@pytest.mark.parametrize("tool", ["capacity", "inquiry", "discover"])
def test_stalled_target_gives_a_clear_error_within_timeout(listener, tool):
    lst = listener(lambda conn: None)  # accepts, then says nothing
    where = f"127.0.0.1:{lst.port}" if tool == "discover" else f"iscsi://127.0.0.1:{lst.port}/iqn.2026-11.x:y/1"
    start = time.monotonic()
    err = one_line_error(uiscsictl(tool, "--timeout", "2", where))
    assert time.monotonic() - start < 2 + 5  # interpreter start-up and teardown on a loaded machine
    assert "within 2 s" in err or "timed out" in err.lower(), err


def test_target_that_freezes_mid_run_gives_a_clear_error_within_bounds(tgtd):
    t = tgtd(size_mb=16)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "initiator.ctl", "perf", t.url(1), "--block-size", "4k",
                             "--queue-depth", "4", "--seconds", "2", "--timeout", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # logged in and running by now
        os.kill(t.proc.pid, signal.SIGSTOP)
        out, err = proc.communicate(timeout=30)
    finally:
        os.kill(t.proc.pid, signal.SIGCONT)
        proc.kill()
    assert proc.returncode == 1 and out == "" and err.count("\n") == 1, err
    assert "did not complete within 2 s" in err
    assert time.monotonic() - start < 1 + 2 + 2 + 5 + 3  # sleep, run, bound, bounded logout, start-up


@pytest.mark.parametrize("behaviour", [_garbage, _oversize], ids=["garbage", "oversize-length"])
def test_target_sending_nonsense_gives_a_clear_error(listener, behaviour):
    lst = listener(behaviour)
    start = time.monotonic()
    err = one_line_error(uiscsictl("capacity", "--timeout", "5", f"iscsi://127.0.0.1:{lst.port}/iqn.2026-11.x:y/1"))
    assert time.monotonic() - start < 5 + 5
    assert "internal error" not in err, err


def test_tools_also_run_on_uvloop_when_asked(tgtd, tmp_path):
    pytest.importorskip("uvloop")
    t = tgtd(size_mb=4)
    env = {"UISCSI_EVENT_LOOP": "uvloop"}
    assert ok_json("capacity", t.url(1), env=env)["blocks"] == 8192
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(4 << 20))
    ok_json("cp", str(src), t.url(1), env=env)
    assert sha256(t.backing[0]) == sha256(src)
    assert ok_json("perf", t.url(1), "--block-size", "4k", "--seconds", "0.3", env=env)["ios"] > 0


def test_a_lun_that_does_not_exist_is_named_in_the_error(tgtd):
    t = tgtd(size_mb=4)
    err = one_line_error(uiscsictl("capacity", t.url(7)))
    assert err == "uiscsictl: READ CAPACITY(16): CHECK CONDITION, ILLEGAL REQUEST: logical unit not supported\n"
