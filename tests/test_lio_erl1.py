"""ErrorRecoveryLevel 1 against LIO: what LIO does, PDU by PDU, then our recovery through a proxy that corrupts
chosen payloads (tests/proxy.py frames the PDUs and never touches a header, padding or digest).

The first two tests drive a session by hand (the sans-IO login over a blocking socket, then raw PDUs), with
8 KiB Data-In PDUs and 32 KiB bursts, so a 64 KiB READ comes as DataSN 0-7 in two bursts. Facts shown here
(kernel 6.1):

- at ERL >= 1 LIO sets the A bit (asks for a DataACK SNACK) on the last Data-In of every burst and puts a
  TTT and the LUN there; at ERL 0 neither (TTT 0xffffffff);
- a Data SNACK gets the named Data-In PDUs again, same bytes; RunLength 0 means "to the end", and the
  last one carries the status again with the same StatSN;
- a Status SNACK gets the SCSI Response again, same StatSN; a DataACK SNACK is taken silently;
- at ERL 0 any SNACK closes the connection.

NEVER send LIO a Data SNACK whose BegRun + RunLength exceeds the last DataSN sent, *and note LIO counts that
bound one short*: naming the last PDU with RunLength 1 (or more) already counts as exceeding it, so ask
for runs that reach the end with RunLength 0. LIO 6.1 answers the overrun with a Reject, drops the
connection, warns in iscsit_release_cmd, and some seconds later (DefaultTime2Retain) the guest kernel
panics in target_release_cmd_kref: a use-after-free, tried here once and not again. (The fixture boots a
new guest if one dies; protocol.erl1 only ever asks from a DataSN LIO has sent, with RunLength 0.)

The rest go through the public surface (``uiscsictl cp --json`` with ``erl=1`` in the URL, uiscsi.conf's
``erl 1``) or the session API, with every byte checked against the LUN's image on the host; LIO's own log
(dynamic debug: ``Got ISCSI_INIT_SNACK ... Type: 0xNN``) counts the SNACKs it received.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from collections import Counter

import pytest

from tests.initiator.ctl.helpers import ok_json, uiscsictl
from tests.initiator.protocol.test_login_targets import login, logout, params
from tests.lio_fixture import Proposals, SessionParams, open_session, pdu, uiscsid_reloaded
from tests.proxy import ResetProxy

pytestmark = [pytest.mark.vm, pytest.mark.target]

KiB = 1024
MiB = 1 << 20
READ_64K = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 128, 0])  # READ(10) LBA 0, 128 blocks
DATA, STATUS, DATA_ACK = 0, 1, 2  # SNACK types


def erl_session(t, erl: int):
    """A hand-driven session at ``erl`` with 8 KiB Data-In PDUs, 32 KiB bursts and both digests."""
    conn = login(t.portal, params(t.iqn, proposals=Proposals(erl=erl, max_recv_dsl=8 * KiB, max_burst=32 * KiB),
                                  header_digest=True, data_digest=True))
    assert conn.negotiated.erl == erl and conn.negotiated.max_burst == 32 * KiB
    return conn


def read_64k(conn, itt: int = 0x51) -> tuple[dict[int, pdu.DataIn], int]:
    """Issue the READ; return its Data-In PDUs by DataSN and the StatSN of its status (not acknowledged)."""
    conn.send(pdu.ScsiCommand(itt=itt, read=True, edtl=64 * KiB, cmdsn=conn.cmdsn, expstatsn=conn.expstatsn,
                              cdb=READ_64K))
    conn.cmdsn += 1
    got: dict[int, pdu.DataIn] = {}
    while True:
        p = conn.recv()
        assert isinstance(p, pdu.DataIn) and p.itt == itt, p
        got[p.datasn] = p
        if p.has_status:
            assert p.status == 0
            return got, p.statsn


def snack(conn, kind: int, itt: int, begrun: int, runlength: int, ttt: int = pdu.RESERVED_TAG,
          lun: int = 0) -> None:
    """ExpStatSN stays where it was: the READ's status is not acknowledged, so LIO keeps the command."""
    conn.send(pdu.SnackRequest(itt=itt, type=kind, ttt=ttt, lun=lun, expstatsn=conn.expstatsn, begrun=begrun,
                               runlength=runlength))


def test_lio_at_erl1_marks_burst_ends_and_answers_data_status_and_ack_snacks(lio):
    t = lio(params={"ErrorRecoveryLevel": "1"})
    conn = erl_session(t, 1)
    try:
        first, statsn = read_64k(conn)
        assert sorted(first) == list(range(8))
        assert [n for n, p in first.items() if p.ack] == [3, 7]  # the end of each 32 KiB burst
        assert all(first[n].ttt != pdu.RESERVED_TAG for n in (3, 7))

        snack(conn, DATA, 0x51, begrun=2, runlength=1)
        again = conn.recv()
        assert isinstance(again, pdu.DataIn) and again.datasn == 2 and not again.has_status
        assert (again.offset, bytes(again.data)) == (first[2].offset, bytes(first[2].data))

        snack(conn, DATA, 0x51, begrun=6, runlength=0)  # 0: from DataSN 6 to the end
        tail = [conn.recv(), conn.recv()]
        assert [p.datasn for p in tail] == [6, 7]
        assert [bytes(p.data) for p in tail] == [bytes(first[6].data), bytes(first[7].data)]
        assert tail[1].has_status and tail[1].statsn == statsn

        snack(conn, STATUS, 0x51, begrun=statsn, runlength=1)
        rsp = conn.recv()
        assert isinstance(rsp, pdu.ScsiResponse) and (rsp.itt, rsp.statsn, rsp.status) == (0x51, statsn, 0)

        snack(conn, DATA_ACK, 0x51, begrun=8, runlength=0, ttt=first[7].ttt, lun=first[7].lun)
        conn.send(pdu.NopOut(itt=0x52, immediate=True, cmdsn=conn.cmdsn, expstatsn=conn.expstatsn))
        assert isinstance(conn.recv(), pdu.NopIn)  # nothing came back for the DataACK
        conn.expstatsn = (statsn + 1) & 0xFFFFFFFF
        assert logout(conn).response == 0
    finally:
        conn.close()
    log = t.log()
    assert log.count("Got ISCSI_INIT_SNACK") == 4 and "Received Data ACK SNACK for ITT" in log


def test_lio_at_erl0_asks_for_no_data_ack_and_closes_the_connection_on_a_snack(lio):
    t = lio()
    conn = erl_session(t, 0)
    try:
        first, _ = read_64k(conn)
        assert not any(p.ack for p in first.values()) and first[7].ttt == pdu.RESERVED_TAG
        snack(conn, DATA, 0x51, begrun=2, runlength=1)
        with pytest.raises((ConnectionError, socket.timeout)):
            conn.recv()
    finally:
        conn.close()
    assert "Initiator sent SNACK request while in ErrorRecoveryLevel=0" in t.log()


DATA_IN, DATA_OUT, SCSI_CMD, SCSI_RSP = 0x25, 0x05, 0x01, 0x21
ERL1 = "erl=1&header_digest=crc32c&data_digest=crc32c"
_SNACK_TYPE = re.compile(r"Got ISCSI_INIT_SNACK, .*Type: 0x(\w\w)")


def lio_snacks(log: str) -> Counter:
    """SNACKs LIO received, by type name (its dynamic debug prints each with the F bit cleared)."""
    names = {0: "data", 1: "status", 2: "data_ack"}
    return Counter(names.get(int(x, 16), x) for x in _SNACK_TYPE.findall(log))


def image(t, data: bytes | None = None) -> bytes:
    """Write ``data`` to the LUN's image on the host, or read as much as the image holds."""
    with open(t.backing[0], "r+b" if data is not None else "rb") as f:
        if data is not None:
            f.write(data)
            return data
        return f.read()


async def proxied_session(proxy, t, erl: int):
    """A session through ``proxy`` with both digests at ``erl``; no keep-alive pings (they would add PDUs)."""
    return await open_session(SessionParams(proxy.host, proxy.port, f"iqn.2026-11.test.bootkit:lio-erl{erl}", t.iqn,
                                            nop_interval=0, header_digest=True, data_digest=True, erl=erl,
                                            login_timeout=10, replacement_timeout=30))


def proxy_url(proxy, t) -> str:
    return f"iscsi://{proxy.host}:{proxy.port}/{t.iqn}/0?{ERL1}"


def test_data_digest_errors_at_erl0_are_recovered_by_reconnecting(lio):
    """The negative control: at ERL 0 each corrupted Data-In costs a reconnect (and the bytes are still right)."""
    t = lio()
    data = image(t, os.urandom(8 * MiB))

    async def go():
        # at most 3: a fourth loss in a row with no command completed would be a 4th protocol violation,
        # after which the session rightly gives up (io.recovery)
        with ResetProxy(t.host, t.port, corrupt_pdus={DATA_IN: 5}, max_corruptions=3) as proxy:
            s = await proxied_session(proxy, t, erl=0)
            try:
                buf = bytearray(len(data))
                for off in range(0, len(data), MiB):
                    cdb = bytes([0x28, 0]) + (off // 512).to_bytes(4, "big") + b"\0\x08\0\0"
                    assert (await s.execute(0, cdb, read_into=memoryview(buf)[off:off + MiB])).status == 0
                return bytes(buf), s.stats.reconnects, proxy.corruptions
            finally:
                await s.close()

    got, reconnects, corruptions = asyncio.run(asyncio.wait_for(go(), 90))
    assert corruptions == 3 and reconnects == corruptions and got == data


def test_data_digest_errors_at_erl1_are_recovered_by_snack_without_reconnecting(lio, tmp_path):
    """``uiscsictl cp`` reads the 32 MiB LUN through a proxy that corrupts one Data-In payload in five (resent
    ones too): every byte right, no reconnect, a Data SNACK per error that LIO answered; burst ends
    acknowledged (DataACK)."""
    t = lio(params={"ErrorRecoveryLevel": "1"})
    data = image(t, os.urandom(8 * MiB))
    out = tmp_path / "back.img"
    with ResetProxy(t.host, t.port, corrupt_pdus={DATA_IN: 5}) as proxy:
        r = uiscsictl("cp", "--json", "--queue-depth", "4", proxy_url(proxy, t), str(out))
        corrupted = list(proxy.corrupted)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)["session_stats"]["source"]
    assert out.read_bytes()[:len(data)] == data
    print(f"{len(corrupted)} Data-In payloads corrupted; session stats {stats}")
    assert len(corrupted) >= 4 and all(op == DATA_IN for op, _, _ in corrupted)
    assert stats["reconnects"] == 0
    assert stats["digest_errors"] == len(corrupted)
    assert 1 <= stats["data_snacks"] <= len(corrupted) and stats["data_acks"] > 0
    seen = lio_snacks(t.log())
    assert (seen["data"], seen["data_ack"], seen["status"]) == (stats["data_snacks"], stats["data_acks"], 0)


def test_immediate_data_digest_errors_at_erl1_are_retried_with_the_same_cmdsn(lio, tmp_path):
    """``uiscsictl cp`` writes 8 MiB through a proxy corrupting the immediate data of one WRITE in three: LIO
    rejects it (reason data digest error) and drops the command, waiting for its CmdSN; we send the same
    command again. The LUN's image equals the file; no reconnect; LIO's kernel stays quiet."""
    t = lio(params={"ErrorRecoveryLevel": "1"})
    image(t, bytes(8 * MiB))
    src = tmp_path / "data.img"
    src.write_bytes(data := os.urandom(8 * MiB))
    with ResetProxy(t.host, t.port, corrupt_pdus={SCSI_CMD: 3}) as proxy:
        r = uiscsictl("cp", "--json", "--queue-depth", "4", str(src), proxy_url(proxy, t))
        corrupted = len(proxy.corrupted)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)["session_stats"]["destination"]
    assert image(t)[:len(data)] == data
    assert corrupted >= 2 and stats["reconnects"] == 0
    assert stats["target_digest_errors"] == stats["command_retries"] == corrupted
    log = t.log()
    assert log.count("ImmediateData CRC32C DataDigest") == corrupted and "WARNING" not in log


@pytest.mark.lio_last
def test_data_out_digest_errors_at_erl1_are_answered_by_the_recovery_r2t(lio):
    """Data-Out payloads corrupted on the way: LIO rejects each (data digest error) and asks for the data
    again with a recovery R2T, which we answer; the bytes land right with no reconnect.

    LIO 6.1 damages itself doing this: iscsit_check_post_dataout() passes the WRITE's own iscsi_cmd to
    iscsit_reject_cmd(), which turns it into a Reject and drops a reference while the WRITE goes on. The
    guest then logs "WARNING ... iscsit_release_cmd" and "refcount_t: underflow; use-after-free" (in
    iscsit_ack_from_expstatsn -> transport_generic_free_cmd) when the WRITE's status is acknowledged. A
    second digest error in the same WRITE (the recovery R2T's Data-Out hit again) finds the command's
    buffers gone ("Initial page entry out-of-bounds ... sg-list") and LIO resets the connection (our ERL 0
    recovery then completes the write). So one corruption only, and this test runs after every other LIO
    test and powers the guest off."""
    t = lio(params={"ErrorRecoveryLevel": "1"})
    data = os.urandom(4 * MiB)

    async def go():
        with ResetProxy(t.host, t.port, corrupt_pdus={DATA_OUT: 6}, max_corruptions=1) as proxy:
            s = await proxied_session(proxy, t, erl=1)
            try:
                for off in range(0, len(data), MiB):
                    cdb = bytes([0x2A, 0]) + (off // 512).to_bytes(4, "big") + b"\0\x08\0\0"
                    assert (await s.execute(0, cdb, data_out=memoryview(data)[off:off + MiB])).status == 0
                return s.stats, proxy.corruptions
            finally:
                await s.close()

    try:
        stats, corruptions = asyncio.run(asyncio.wait_for(go(), 60))
        assert image(t)[:len(data)] == data
        assert corruptions == 1 and stats.reconnects == 0 and stats.target_digest_errors == 1
        log = t.log()
        assert log.count("CRC32C DataDigest") == 1
        print("LIO's kernel after the recovery R2Ts:", *[line for line in log.splitlines()
                                                      if "WARNING" in line or "refcount_t" in line], sep="\n")
    finally:
        lio.retire()


def test_sense_data_that_fails_its_digest_comes_again_by_status_snack(lio):
    """A READ past the end gets CHECK CONDITION with sense data; the proxy corrupts that SCSI Response's
    payload, so we ask for the status again (Status SNACK) and get the sense intact."""
    t = lio(params={"ErrorRecoveryLevel": "1"})

    async def go():
        with ResetProxy(t.host, t.port, corrupt_pdus={SCSI_RSP: 1}, max_corruptions=1) as proxy:
            s = await proxied_session(proxy, t, erl=1)
            try:
                r = await s.execute(0, bytes([0x28, 0, 0x7F, 0, 0, 0, 0, 0, 8, 0]), read_len=4096)
                return r, s.stats, proxy.corruptions
            finally:
                await s.close()

    r, stats, corruptions = asyncio.run(asyncio.wait_for(go(), 60))
    assert corruptions == 1 and r.status == 2 and r.sense[2] & 0x0F == 5  # ILLEGAL REQUEST
    assert (stats.status_snacks, stats.digest_errors, stats.reconnects) == (1, 1, 0)
    assert lio_snacks(t.log())["status"] == 1


def test_erl_1_in_uiscsi_conf_reaches_the_daemon_and_its_stats_count_recovery(lio, tmp_path):
    t = lio(params={"ErrorRecoveryLevel": "1"})
    config = (f"initiatorname iqn.2026-11.test.bootkit:lio-erl1-conf\ntarget lio {{\n targetaddr 127.0.0.1 "
              f"port {t.port}\n targetname {t.iqn}\n header_digest crc32c; data_digest crc32c\n erl 1\n}}\n")
    with uiscsid_reloaded(tmp_path, config) as daemon:
        (session,) = ok_json("-s", daemon.sock, "show", "sessions")["sessions"]
        (stats,) = ok_json("-s", daemon.sock, "show", "stats")["stats"]
    assert session["negotiated"]["erl"] == 1
    assert {"digest_errors", "data_snacks", "status_snacks", "data_acks", "target_digest_errors",
            "command_retries"} <= set(stats["session"])


def test_erl1_recovery_that_keeps_failing_falls_back_to_session_recovery(lio):
    """Every Data-In corrupted, resent ones too, until one task has used up its SNACKs: the connection is
    dropped, the session logs in again (ERL 0 recovery) and the read completes with the right bytes."""
    t = lio(params={"ErrorRecoveryLevel": "1"})
    data = image(t, os.urandom(MiB))

    async def go():
        with ResetProxy(t.host, t.port, corrupt_pdus={DATA_IN: 1}, max_corruptions=40) as proxy:
            s = await proxied_session(proxy, t, erl=1)
            try:
                r = await s.execute(0, bytes([0x28, 0, 0, 0, 0, 0, 0, 0x08, 0, 0]), read_len=MiB)
                return bytes(r.data), s.stats, proxy.corruptions
            finally:
                await s.close()

    got, stats, corruptions = asyncio.run(asyncio.wait_for(go(), 90))
    print(f"{corruptions} corruptions; session stats {stats}")
    assert got == data and stats.reconnects == 1 and stats.data_snacks >= 8
