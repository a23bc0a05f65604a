"""The file block backend: aligned I/O only."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from initiator.kernel.backends import BlockError, FileBackend


def test_unaligned_io_is_refused_by_the_backend(tmp_path):
    img = tmp_path / "d.img"
    img.write_bytes(bytes(4096))
    b = FileBackend(str(img))
    with pytest.raises(BlockError) as e:
        asyncio.run(b.read(100, 512))
    assert e.value.errno == errno.EINVAL
    os.close(b.fd)
