"""LIO, the kernel's iSCSI target (in the guest), as a peer: login, data both ways with CRC32C digests.

Every byte is checked by a reader that is not ours: libiscsi (``qemu-img``) through the same forwarded port,
and the LUN's raw image on the host, which LIO's iblock backstore writes through the guest's virtio disk.
LIO's default digest setting is ``CRC32C,None``: we offer CRC32C and get it, libiscsi offers None and gets
that, on the same target.
"""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from tests.initiator.ctl.helpers import ok_json, one_line_error, uiscsictl
from tests.lio_fixture import SessionParams, open_session

pytestmark = [pytest.mark.vm, pytest.mark.target]

MiB = 1 << 20
DIGESTS = "?header_digest=crc32c&data_digest=crc32c"
INITIATOR = "iqn.2026-11.test.bootkit:lio-data"


def on_host(t, length: int, offset: int = 0) -> bytes:
    """What the LUN's raw image on the host holds (LIO wrote it through the guest's /dev/vda)."""
    with open(t.backing[0], "rb") as f:
        f.seek(offset)
        return f.read(length)


def qemu_img(*args: str) -> None:
    r = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr


def test_inquiry_and_capacity_come_from_lio(lio):
    t = lio()
    doc = ok_json("inquiry", t.url())
    assert doc["vendor"] == "LIO-ORG" and doc["product"] == "IBLOCK", doc
    assert ok_json("capacity", t.url())["size"] == os.path.getsize(t.backing[0])


def test_lio_lists_our_session_while_we_are_logged_in(lio):
    t = lio()

    async def go():
        s = await open_session(SessionParams(t.host, t.port, INITIATOR, t.iqn, nop_interval=0))
        try:
            return await asyncio.to_thread(t.read, "dynamic_sessions")
        finally:
            await s.close()

    assert INITIATOR in asyncio.run(asyncio.wait_for(go(), 60))
    assert INITIATOR not in t.read("dynamic_sessions")


def test_data_we_write_with_digests_is_what_libiscsi_and_the_host_read(lio, tmp_path):
    t = lio()
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(8 * MiB))
    session = ok_json("inquiry", t.url() + DIGESTS)["session"]
    assert session["header_digest"] and session["data_digest"], session
    doc = ok_json("cp", str(src), t.url() + DIGESTS)
    assert doc["bytes"] == 8 * MiB
    assert on_host(t, 8 * MiB) == src.read_bytes()
    back = tmp_path / "libiscsi.img"
    qemu_img("dd", "-f", "raw", "-O", "raw", f"if={t.url()}", f"of={back}", "bs=1M", "count=8")
    assert back.read_bytes() == src.read_bytes()


def test_data_libiscsi_writes_is_what_we_read_with_digests(lio, tmp_path):
    t = lio()
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(8 * MiB))
    qemu_img("convert", "-n", "-f", "raw", "-O", "raw", str(src), t.url())
    assert on_host(t, 8 * MiB) == src.read_bytes()
    back = tmp_path / "back.img"
    r = uiscsictl("cp", "--json", t.url() + DIGESTS, str(back))
    assert r.returncode == 0, r.stderr
    whole = back.read_bytes()
    assert whole[:8 * MiB] == src.read_bytes()
    assert whole == on_host(t, len(whole)) and len(whole) == os.path.getsize(t.backing[0])


def test_lio_demanding_digests_refuses_a_login_without_them_in_one_line(lio, tmp_path):
    t = lio(params={"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})
    err = one_line_error(uiscsictl("capacity", t.url()))
    assert "refused" in err, err
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(4 * MiB))
    ok_json("cp", str(src), t.url() + DIGESTS)
    assert on_host(t, 4 * MiB) == src.read_bytes()
