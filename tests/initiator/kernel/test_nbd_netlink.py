"""NBD's generic netlink: attributes round-trip, and the family lookup works against the host kernel."""

from __future__ import annotations

import os
import struct

import pytest

from initiator.kernel import nbd_netlink as nl


def test_netlink_attributes_round_trip_with_padding_and_nesting():
    raw = nl.u32(1, 7) + nl.attr(10, b"iqn\0") + nl.nested(7, nl.nested(1, nl.u32(1, 5)))
    attrs = nl.parse_attrs(raw)
    assert attrs[1] == struct.pack("=I", 7) and attrs[10] == b"iqn\0"
    assert nl.parse_attrs(nl.parse_attrs(attrs[7])[1]) == {1: struct.pack("=I", 5)}
    assert nl.parse_attrs(b"\xff\x00\x01\x00junk") == {}         # a bad length ends the walk


def test_generic_netlink_family_lookup_against_the_host_kernel():
    with nl.Genl() as g:
        assert g.family("nlctrl") == nl.GENL_ID_CTRL
        if not os.path.exists("/sys/module/nbd"):
            with pytest.raises(nl.NetlinkError, match="no generic netlink family 'nbd'"):
                g.family("nbd")
