"""SCSI commands without a target: UNMAP splitting within the advertised limits, and no UNMAP unadvertised."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.errors import LocalProtocolError
from initiator.scsi import commands as scsi


@given(st.lists(st.tuples(st.integers(0, 1 << 40), st.integers(1, 1 << 14)), min_size=1, max_size=20),
       st.integers(64, 1 << 16), st.integers(1, 8))
def test_unmap_split_respects_advertised_limits_and_covers_every_block(extents, max_lba, max_desc):
    support = scsi.UnmapSupport(max_lba_count=max_lba, max_descriptors=max_desc)
    commands = scsi.split_unmap(extents, support)
    for command in commands:
        assert len(command) <= max_desc and sum(n for _, n in command) <= max_lba
    assert sum(n for c in commands for _, n in c) == sum(n for _, n in extents)


async def _no_session_needed():
    await scsi.unmap(None, 1, [(0, 8)], None)


def test_unmap_is_refused_when_the_target_does_not_advertise_it():
    import asyncio

    with pytest.raises(LocalProtocolError, match="does not advertise UNMAP"):
        asyncio.run(_no_session_needed())
