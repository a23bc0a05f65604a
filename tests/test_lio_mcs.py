"""MC/S against LIO: four connections in one session once LIO's MaxConnections allows four, counted on both
sides (LIO shows an explicit ACL's connections in ``acls/IQN/info``), and what happens at its default of 1: the
session runs on one, with a one-line notice and both counts (asked, granted) in the JSON."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from tests.initiator.ctl.helpers import ok_json, uiscsictl
from tests.lio_fixture import SessionParams, open_session, uiscsid_reloaded

pytestmark = [pytest.mark.vm, pytest.mark.target]

MiB = 1 << 20
INITIATOR = "iqn.2026-11.test.bootkit:lio-mcs"


def rw10(op: int, lba: int, blocks: int) -> bytes:
    return bytes([op, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"


async def both_sides(t, max_connections: int, data: bytes = b"") -> tuple[int, int, int, bytes]:
    """Log in asking for ``max_connections``; return (ours, negotiated, LIO's count, data read back)
    after writing ``data`` at LBA 0 in 256 KiB commands spread over the connections."""
    s = await open_session(SessionParams(t.host, t.port, INITIATOR, t.iqn, max_connections=max_connections,
                                         nop_interval=0, header_digest=True))
    try:
        lio_count = await asyncio.to_thread(t.connections, INITIATOR)
        chunk = 256 * 1024
        view = memoryview(data)

        async def write(off: int) -> None:
            r = await s.execute(0, rw10(0x2A, off // 512, chunk // 512), data_out=view[off:off + chunk])
            assert r.status == 0, r.sense
        await asyncio.gather(*(write(off) for off in range(0, len(data), chunk)))
        back = await s.execute(0, rw10(0x28, 0, len(data) // 512), read_len=len(data)) if data else None
        return s.connections, s.negotiated.max_connections, lio_count, bytes(back.data) if back else b""
    finally:
        await s.close()


def test_four_connections_in_one_session_once_lio_allows_four(lio):
    t = lio(params={"MaxConnections": "4"}, acls=(INITIATOR,))
    data = os.urandom(4 * MiB)
    ours, negotiated, theirs, back = asyncio.run(asyncio.wait_for(both_sides(t, 4, data), 120))
    assert (ours, negotiated, theirs) == (4, 4, 4)
    assert back == data
    with open(t.backing[0], "rb") as f:
        assert f.read(len(data)) == data


def test_at_lio_default_of_one_connection_asking_for_four_runs_on_one_and_says_so(lio):
    """The session runs on the one connection LIO grants; uiscsictl says so in one notice line on stderr
    and reports both counts in its JSON."""
    t = lio(acls=(INITIATOR,))
    assert asyncio.run(asyncio.wait_for(both_sides(t, 4), 60))[:3] == (1, 1, 1)
    r = uiscsictl("inquiry", "--json", t.url() + "?max_connections=4")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("uiscsictl: notice: "), r.stderr
    assert "granted 1 of the 4 connections asked (its MaxConnections is 1)" in r.stderr
    session = json.loads(r.stdout)["session"]
    assert (session["connections"], session["max_connections"]) == (1, 1)
    assert (session["connections_asked"], session["connections_granted"]) == (4, 1)


def test_no_notice_when_lio_grants_every_connection_asked(lio):
    t = lio(params={"MaxConnections": "4"})
    r = uiscsictl("inquiry", "--json", t.url() + "?max_connections=4")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    session = json.loads(r.stdout)["session"]
    assert (session["connections_asked"], session["connections_granted"], session["connections"]) == (4, 4, 4)


def test_uiscsid_logs_fewer_connections_once_and_shows_both_counts(lio, tmp_path):
    """``connections 4`` against LIO's default: one log line, even after LIO drops the session and it logs
    in again; ``show --json`` and ``show sessions --json`` give asked and granted."""
    t = lio()
    config = (f"initiatorname {INITIATOR}\ntarget lio {{\n targetaddr 127.0.0.1 port {t.port}\n"
              f" targetname {t.iqn}\n connections 4\n}}\n")
    with uiscsid_reloaded(tmp_path, config) as daemon:
        t.drop_sessions(down_for=0.5)
        deadline = time.monotonic() + 30
        while daemon.show("stats")["stats"][0]["session"]["reconnects"] < 1:  # the session logs in again
            assert time.monotonic() < deadline, "the session never logged in again"
            time.sleep(0.2)
        daemon.wait_for("lio", lambda x: x["state"] == "logged-in" and x["logins"] == 1)
        (summary,) = ok_json("-s", daemon.sock, "show")["targets"]
        (session,) = ok_json("-s", daemon.sock, "show", "sessions")["sessions"]
    for doc in (summary, session):
        assert (doc["connections_asked"], doc["connections_granted"], doc["connections"]) == (4, 1, 1)
    assert daemon.logtext().count("granted 1 of the 4 connections asked (its MaxConnections is 1)") == 1
