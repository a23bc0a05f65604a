"""The 8-byte LUN field: peripheral addressing below 256, flat addressing up to 16383."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.errors import LocalProtocolError
from initiator.scsi.lun import lun_from_wire, lun_to_wire


def test_luns_use_peripheral_then_flat_addressing():
    assert lun_to_wire(1) == 1 << 48
    assert lun_to_wire(300) == (0x4000 | 300) << 48
    with pytest.raises(LocalProtocolError):
        lun_to_wire(20000)


@given(st.integers(0, 16383))
def test_lun_field_round_trips(lun):
    wire = lun_to_wire(lun)
    assert lun_from_wire(wire) == lun
    assert lun_from_wire(wire.to_bytes(8, "big")) == lun


def test_lun_field_uses_peripheral_form_below_256_and_flat_space_above():
    assert lun_to_wire(1) == 0x0001 << 48
    assert lun_to_wire(300) == (0x4000 | 300) << 48
    with pytest.raises(LocalProtocolError):
        lun_to_wire(16384)
