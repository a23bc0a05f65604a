"""Wireshark's iSCSI dissector decodes a whole uiscsictl session with zero malformed PDUs.

tshark is an independent decoder, not a conformance checker (TARGETS.md): it catches framing and field
layout errors (lengths, padding, opcodes), which is what this test is for. Traffic is kept light (QD1,
small transfers) because dumpcap drops packets under load.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.target


def uiscsictl(*args):
    r = subprocess.run([sys.executable, "-m", "initiator.ctl", *args], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _start_capture(port, path):
    proc = subprocess.Popen(["tshark", "-i", "lo", "-f", f"tcp port {port}", "-w", str(path), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 20
    seen = ""
    while time.monotonic() < deadline:  # dumpcap says "Capturing on ..." once the filter is live
        line = proc.stderr.readline()
        seen += line
        if "Capturing on" in line:
            return proc
        if proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"tshark did not start capturing: {seen}")


def _stop_capture(proc):
    time.sleep(0.5)  # let the last segments reach the capture
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _decode(path, port, *extra):
    return subprocess.run(["tshark", "-r", str(path), "-d", f"tcp.port=={port},iscsi", *extra],
                          capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (make test installs it)")
@pytest.mark.parametrize("query", ["", "?header_digest=crc32c&data_digest=crc32c"], ids=["plain", "digests"])
def test_one_session_decodes_with_zero_malformed_pdus(tgtd, tmp_path, query):
    digests = bool(query)
    t = tgtd(size_mb=4, params={"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"} if digests else None)
    url = t.url(1) + query
    cap = tmp_path / "session.pcapng"
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(256 << 10))
    proc = _start_capture(t.port, cap)
    try:
        uiscsictl("discover", f"127.0.0.1:{t.port}")
        uiscsictl("inquiry", url)
        uiscsictl("cp", "--queue-depth", "1", "--chunk-size", "64k", str(src), url)
        uiscsictl("perf", url, "--block-size", "4k", "--queue-depth", "1", "--seconds", "0.2", "--random")
    finally:
        _stop_capture(proc)
    malformed = _decode(cap, t.port, "-Y", "_ws.malformed")
    assert malformed == "", malformed
    # the capture really holds the session: login, text, SCSI commands both ways, data, logout
    opcodes = set(_decode(cap, t.port, "-Y", "iscsi", "-T", "fields", "-e", "iscsi.opcode").split())
    opcodes = {int(o, 16) for line in opcodes for o in line.split(",") if o}
    assert {0x03, 0x23, 0x04, 0x24, 0x01, 0x21, 0x25, 0x06, 0x26} <= opcodes, sorted(hex(o) for o in opcodes)
    if digests:  # the dissector saw (and parsed) digests, so the digest layout was checked too
        fields = _decode(cap, t.port, "-Y", "iscsi.headerdigest32 && iscsi.datadigest32", "-T", "fields",
                         "-e", "iscsi.opcode")
        assert fields.strip(), "no PDU with both digests was decoded"
