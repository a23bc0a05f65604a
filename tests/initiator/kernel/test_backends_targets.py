"""The iSCSI LUN block backend (what /dev/nbdN is served from) against a real tgtd, checked on its file."""

from __future__ import annotations

import asyncio
import errno
import os
import threading

import pytest

from initiator.io.params import SessionParams
from initiator.io.session import open_session
from initiator.kernel.backends import BlockError, IscsiLun

pytestmark = pytest.mark.target
HOST_IQN = "iqn.2026-11.test.bootkit:host"


def session_config(t, **kw) -> SessionParams:
    return SessionParams(host="127.0.0.1", port=t.port, initiator_name=HOST_IQN, target_name=t.iqn, **kw)


def test_reads_writes_fua_and_flush_land_on_the_target(tgtd):
    t = tgtd(size_mb=16)
    pattern = os.urandom(1 << 20)

    async def main() -> None:
        s = await open_session(session_config(t))
        try:
            lun = await IscsiLun.open(s, 1)
            assert (lun.block_size, lun.size, lun.can_trim) == (512, 16 << 20, False)
            await asyncio.gather(lun.write(4096, pattern), lun.write(8 << 20, pattern[:4096], fua=True))
            await lun.flush()
            assert bytes(await lun.read(4096, len(pattern))) == pattern
            got = await asyncio.gather(*(lun.read(4096 + i * 65536, 65536) for i in range(16)))
            assert b"".join(bytes(g) for g in got) == pattern
            with pytest.raises(BlockError) as e:
                await lun.read((16 << 20) - 512, 1024)
            assert e.value.errno == errno.ENOSPC
            with pytest.raises(BlockError) as e:
                await lun.write(100, b"x" * 512)
            assert e.value.errno == errno.EINVAL
            with pytest.raises(BlockError) as e:
                await lun.trim(0, 4096)
            assert e.value.errno == errno.EOPNOTSUPP
        finally:
            await s.close()

    asyncio.run(main())
    with open(t.backing[0], "rb") as f:
        f.seek(4096)
        assert f.read(len(pattern)) == pattern
        f.seek(8 << 20)
        assert f.read(4096) == pattern[:4096]


def test_a_target_restart_during_writes_gives_the_writer_no_error(tgtd):
    t = tgtd(size_mb=16)
    slots = 64
    last: dict[int, bytes] = {}

    async def main() -> int:
        s = await open_session(session_config(t, replacement_timeout=30))
        try:
            lun = await IscsiLun.open(s, 1)
            restart = threading.Thread(target=t.restart, kwargs={"down_for": 1.0})
            after = None
            for i in range(100_000):                # bounded; ends 64 writes after the relogin
                if i == 16:
                    restart.start()                 # tgtd is SIGKILLed and relaunched while we write
                chunk = os.urandom(65536)
                await lun.write(i % slots * 65536, chunk)
                last[i % slots] = chunk
                if after is None and s.stats.reconnects >= 1:
                    after = i
                if after is not None and i >= after + slots:
                    break
            await lun.flush()
            restart.join(30)
            assert after is not None, "the writes never saw the restart"
            return s.stats.reconnects
        finally:
            await s.close()

    assert asyncio.run(main()) >= 1
    with open(t.backing[0], "rb") as f:
        assert f.read(slots * 65536) == b"".join(last[i] for i in range(slots))
