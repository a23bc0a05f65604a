"""Serial-number arithmetic of the task record (RFC 1982, 32 bits)."""

from __future__ import annotations

from initiator.protocol.task import sn_le, sn_lt


def test_serial_number_comparison_wraps_around():
    assert sn_lt(0xFFFFFFFF, 0)
    assert sn_lt(5, 6) and not sn_lt(6, 5)
    assert sn_le(7, 7)
    assert not sn_lt(0, 0xFFFFFFFF)
