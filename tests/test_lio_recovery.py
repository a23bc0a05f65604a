"""ERL0 recovery against LIO dropping the session mid-transfer, and the ErrorRecoveryLevel LIO agrees to.

LIO drops every session when its TPG is disabled and refuses logins until it is enabled again, which is
how a target restart looks from the wire. The transfer must go on by itself (relogin, reissue, the UNIT
ATTENTION retried) and every byte must arrive, checked against the LUN's image on the host.
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from tests.lio_fixture import SessionParams, open_session

pytestmark = [pytest.mark.vm, pytest.mark.target]

MiB = 1 << 20
INITIATOR = "iqn.2026-11.test.bootkit:lio-recovery"


def rw10(op: int, lba: int, blocks: int) -> bytes:
    return bytes([op, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"


async def transfer(s, t, buf: bytearray | bytes, write: bool, drop_at: int, down_for: float = 0.5) -> int:
    """Move ``buf`` to or from LBA 0 in 1 MiB commands, 8 in flight; once ``drop_at`` bytes are done, LIO
    drops the session (and lets logins in ``down_for`` s later), and commands not yet sent wait for that.
    Returns the bytes done when the drop had happened, so the caller can check it came mid-transfer."""
    done = 0
    dropped_at: list[int] = []
    sem = asyncio.Semaphore(8)
    view = memoryview(buf)
    drop: asyncio.Future | None = None

    async def one(off: int) -> None:
        nonlocal done, drop
        async with sem:
            if drop is not None:  # the drop was asked for: what is not in flight yet waits until it happened,
                await asyncio.shield(drop)  # so the drop comes mid-transfer even when the guest is slow
            cdb = rw10(0x2A if write else 0x28, off // 512, MiB // 512)
            if write:
                r = await s.execute(0, cdb, data_out=view[off:off + MiB])
            else:
                r = await s.execute(0, cdb, read_into=view[off:off + MiB])
            assert r.status == 0, r.sense
            done += MiB
            if done >= drop_at and drop is None:
                drop = asyncio.ensure_future(asyncio.to_thread(disable_then_enable))

    def disable_then_enable() -> None:
        t.set_enabled(False)
        dropped_at.append(done)
        threading.Timer(down_for, t.set_enabled, (True,)).start()

    await asyncio.gather(*(one(off) for off in range(0, len(buf), MiB)))
    if drop is not None:
        await drop
    await asyncio.sleep(down_for + 0.5)  # the timer's enable has run before the next step
    return dropped_at[0] if dropped_at else len(buf)


def test_erl0_recovery_when_lio_drops_the_session_mid_write_and_mid_read(lio):
    t = lio()
    size = 24 * MiB
    data = os.urandom(size)
    back = bytearray(size)

    async def go():
        s = await open_session(SessionParams(t.host, t.port, INITIATOR, t.iqn, nop_interval=0, header_digest=True,
                                             data_digest=True, login_timeout=10, replacement_timeout=60))
        try:
            w = await transfer(s, t, data, write=True, drop_at=4 * MiB)
            r = await transfer(s, t, back, write=False, drop_at=4 * MiB)
            return w, r, s.stats.reconnects
        finally:
            await s.close()

    w, r, reconnects = asyncio.run(asyncio.wait_for(go(), 150))
    print(f"LIO dropped the session after {w // MiB} MiB written and {r // MiB} MiB read of {size // MiB} MiB; "
          f"{reconnects} reconnects")
    assert w < size and r < size, f"the drops came after the transfers ({w}, {r} of {size} bytes)"
    assert reconnects >= 2
    assert bytes(back) == data
    with open(t.backing[0], "rb") as f:
        assert f.read(size) == data


@pytest.mark.parametrize("lio_erl", [0, 1, 2])
def test_the_erl_agreed_with_lio_is_the_lower_offer_and_data_flows_at_it(lio, lio_erl):
    """LIO takes ErrorRecoveryLevel from the ACL's default_erl (vm.lio sets it with the parameter)."""
    t = lio(params={"ErrorRecoveryLevel": str(lio_erl)})
    data = os.urandom(MiB)

    async def go():
        got = []
        for offer in (0, 1, 2):
            s = await open_session(SessionParams(t.host, t.port, INITIATOR, t.iqn, nop_interval=0,
                                                 header_digest=True, data_digest=True, proposals={"erl": offer}))
            try:
                assert (await s.execute(0, rw10(0x2A, 2048, 2048), data_out=data)).status == 0
                r = await s.execute(0, rw10(0x28, 2048, 2048), read_len=len(data))
                assert r.status == 0 and bytes(r.data) == data
                got.append(s.negotiated.erl)
            finally:
                await s.close()
        return got

    assert asyncio.run(asyncio.wait_for(go(), 60)) == [min(offer, lio_erl) for offer in (0, 1, 2)]
