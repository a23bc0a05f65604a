"""Command timeouts against a real tgtd behind `tests.stall_proxy.StallProxy`, which stalls chosen commands while
NOPs, logins and every other command flow: each rung of the ladder is seen to clear the stall it should.

- a WRITE lost on the way: the ABORT TASK is answered "Function complete" (RFC 7143 11.5.1 (b)), the write is
  sent again under a new ITT and lands;
- a WRITE the target never answers once: tgtd answers the abort "Task does not exist", the LU reset clears it,
  the write is sent again and lands;
- a WRITE the target never answers at all: abort, LU reset, reinstatement, then CommandTimeout for it alone
  within `Timeouts.bound`, while a write elsewhere on the LUN completes; once the target is healthy the same
  blocks can be written again.
The data is checked in tgtd's backing file.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from initiator.errors import CommandTimeout
from initiator.io.params import SessionParams
from initiator.io.session import open_session
from initiator.io.timeouts import timeouts_of
from initiator.protocol.escalation import Counts
from initiator.scsi import commands as scsi
from initiator.scsi.describe import WRITES
from tests.stall_proxy import Match, StallProxy

pytestmark = pytest.mark.target
BS = 512
FAST = {"command_timeout": 1.0, "abort_timeout": 1.0, "lu_reset_timeout": 1.0, "replacement_timeout": 2.0}


def _params(proxy: StallProxy, iqn: str) -> SessionParams:
    return SessionParams(proxy.host, proxy.port, "iqn.2026-11.test.bootkit:faults", iqn, nop_interval=0.5,
                         nop_timeout=2.0, **FAST)


def _on_disk(path, lba: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(lba * BS)
        return f.read(n)


async def _write_through(proxy: StallProxy, iqn: str, lba: int, data: bytes) -> tuple[float, Counts, int]:
    counts = Counts()
    s = await open_session(_params(proxy, iqn), counts)
    try:
        start = time.monotonic()
        await scsi.write(s, 1, lba, data, BS)
        return time.monotonic() - start, counts, s.stats.reconnects
    finally:
        await s.close()


def test_a_lost_write_is_aborted_and_sent_again(tgtd):
    t = tgtd(size_mb=4)
    data = os.urandom(8 * BS)
    with StallProxy(*t.portal) as proxy:
        proxy.stall(Match(ops=WRITES, lba=(100, 100)), mode="lose", count=1)
        took, counts, reconnects = asyncio.run(_write_through(proxy, t.iqn, 100, data))
        kinds = [e.kind for e in proxy.events if e.kind != "login"]
    assert kinds == ["lose", "abort", "hole-filled", "tmf-rewritten"], kinds
    assert (counts.command_timeouts, counts.aborts, counts.aborts_complete, counts.retries) == (1, 1, 1, 1)
    assert counts.lu_resets == counts.reinstatements == counts.failed == reconnects == 0
    assert 1.0 <= took < 3.0, took
    assert _on_disk(t.backing[0], 100, len(data)) == data


def test_a_write_the_target_never_answers_once_is_cleared_by_a_lu_reset(tgtd):
    t = tgtd(size_mb=4)
    data = os.urandom(8 * BS)
    with StallProxy(*t.portal) as proxy:
        proxy.stall(Match(ops=WRITES, lba=(200, 200)), mode="hang", count=1)
        took, counts, reconnects = asyncio.run(_write_through(proxy, t.iqn, 200, data))
    assert (counts.aborts, counts.aborts_complete, counts.lu_resets, counts.lu_resets_complete) == (1, 0, 1, 1)
    assert counts.retries == 1 and counts.reinstatements == counts.failed == reconnects == 0
    assert 1.0 <= took < 4.0, took
    assert _on_disk(t.backing[0], 200, len(data)) == data


def test_a_write_the_target_never_answers_fails_alone_within_the_bound(tgtd):
    t = tgtd(size_mb=4)
    stuck, other, later = os.urandom(8 * BS), os.urandom(8 * BS), os.urandom(8 * BS)
    bound = timeouts_of(SessionParams("", **FAST)).bound

    async def run(proxy: StallProxy):
        counts = Counts()
        s = await open_session(_params(proxy, t.iqn), counts)
        try:
            start = time.monotonic()
            w = asyncio.ensure_future(scsi.write(s, 1, 300, stuck, BS))
            await asyncio.sleep(0.3)
            await asyncio.wait_for(scsi.write(s, 1, 900, other, BS), 10)   # the LUN still works meanwhile
            with pytest.raises(CommandTimeout, match="no answer after ABORT TASK"):
                await w
            took = time.monotonic() - start
            proxy.heal()
            await asyncio.wait_for(scsi.write(s, 1, 300, later, BS), 10)   # healthy again: same blocks
            return took, counts, s.stats.reconnects
        finally:
            await s.close()

    with StallProxy(*t.portal) as proxy:
        proxy.stall(Match(ops=WRITES, lba=(300, 300)), mode="hang")
        took, counts, reconnects = asyncio.run(run(proxy))
    assert (counts.aborts, counts.lu_resets, counts.reinstatements, counts.failed) == (1, 1, 1, 1), counts
    assert reconnects == 1
    assert 4.0 <= took <= bound + 1.0, (took, bound)
    assert _on_disk(t.backing[0], 900, len(other)) == other
    assert _on_disk(t.backing[0], 300, len(later)) == later
