"""SCSI commands against a real tgtd: UNMAP only where advertised, and errors that read as sentences."""

from __future__ import annotations

import pytest

from initiator.io.params import SessionParams
from initiator.io.session import open_session
from initiator.scsi import commands as scsi
from initiator.scsi import sense

pytestmark = pytest.mark.target
INITIATOR = "iqn.2026-11.test.bootkit:scsi"



async def _with_session(t, body):
    s = await open_session(SessionParams("127.0.0.1", t.port, INITIATOR, t.iqn))
    try:
        for _ in range(3):  # the first command of a new I_T nexus may report UNIT ATTENTION
            try:
                await scsi.test_unit_ready(s, 1)
                break
            except scsi.SCSIError as e:
                if not sense.is_unit_attention(e.status, e.sense_data):
                    raise
        return await body(s)
    finally:
        await s.close()


def test_unmap_is_used_only_where_advertised_and_frees_the_blocks(tgtd):
    import asyncio
    import os

    thick, thin = tgtd(size_mb=4), tgtd(size_mb=4)
    thin.adm("--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", "1",
             "--params", "thin_provisioning=1")

    async def on_thick(s):
        assert (await scsi.read_capacity(s, 1)).lbpme is False
        return await scsi.unmap_support(s, 1)

    async def on_thin(s):
        support = await scsi.unmap_support(s, 1)
        assert support is not None
        await scsi.write(s, 1, 0, os.urandom(1 << 20), 512)
        await scsi.sync_cache(s, 1)
        before = os.stat(thin.backing[0]).st_blocks
        await scsi.unmap(s, 1, [(0, 2048)], support)
        return before, await scsi.read(s, 1, 0, 2048, 512)

    assert asyncio.run(_with_session(thick, on_thick)) is None
    before, data = asyncio.run(_with_session(thin, on_thin))
    assert before >= 2048 and os.stat(thin.backing[0]).st_blocks < before
    assert bytes(data) == bytes(1 << 20)
    with open(thin.backing[0], "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)


def test_scsi_error_from_a_real_target_reads_as_a_sentence(tgtd):
    import asyncio

    t = tgtd(size_mb=1)

    async def past_the_end(s):
        with pytest.raises(scsi.SCSIError) as e:
            await scsi.read(s, 1, 4096, 8, 512)
        return e.value

    err = asyncio.run(_with_session(t, past_the_end))
    assert err.key == sense.ILLEGAL_REQUEST
    assert "logical block address out of range" in str(err)
