"""How RFC 7143 names and addresses things: iSCSI name shapes, and the one portal parser (host, port, tag)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.errors import TargetProtocolError
from initiator.protocol.addressing import DEFAULT_PORT, Portal, PortalError, parse_portal, valid_iscsi_name
from initiator.protocol.text import parse_sendtargets


@pytest.mark.parametrize("text,want", [
    ("10.0.0.1:3261,2", ("10.0.0.1", 3261, 2)),
    ("10.0.0.1", ("10.0.0.1", 3260, 1)),
    ("[fe80::1%eth0]:3262,7", ("fe80::1%eth0", 3262, 7)),
    ("[::1],3", ("::1", 3260, 3)),
    ("storage.example:3260", ("storage.example", 3260, 1)),
])
def test_portals_parse(text, want):
    assert parse_portal(text) == want


@pytest.mark.parametrize("text", ["", "h:0", "h:99999", "h:1,x", "::1:3260", "h:1,70000"])
def test_bad_portals_are_refused(text):
    with pytest.raises(PortalError):
        parse_portal(text)
    # what a target sends is the target's fault
    with pytest.raises(TargetProtocolError, match="malformed TargetAddress"):
        parse_sendtargets([("TargetName", "iqn.a"), ("TargetAddress", text)])


def test_iscsi_name_shapes():
    assert valid_iscsi_name("iqn.2026-11.org.example:a-b.c_d")
    assert valid_iscsi_name("eui.02004567A425678D")
    assert valid_iscsi_name("naa.52004567BA64678D")
    assert not valid_iscsi_name("iqn.26-11.org.example")
    assert not valid_iscsi_name("iqn.2026-11.Org.example")
    assert not valid_iscsi_name("iqn.2026-11.org.example:" + "x" * 223)


def test_the_default_port_is_the_well_known_one_and_a_portal_is_a_named_tuple():
    assert DEFAULT_PORT == 3260
    p = parse_portal("10.0.0.1")
    assert isinstance(p, Portal) and (p.host, p.port, p.tpgt) == ("10.0.0.1", 3260, 1)
    assert parse_portal("10.0.0.1,5", default_tpgt=9).tpgt == 5 and parse_portal("h", default_tpgt=9).tpgt == 9


@pytest.mark.parametrize("text,fragment", [
    ("[::1", "closing"), ("[::1]x", "after the IPv6 address"), ("a b", "not a host name"), ("h:3²", "port"),
    (":3260", "host is missing"), ("[]:3260", "host is missing"), ("[fe80::1/64]", "not an IPv6 address"),
])
def test_bad_portals_say_what_is_wrong(text, fragment):
    with pytest.raises(PortalError, match=fragment):
        parse_portal(text)


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_portal_error(text):
    try:
        p = parse_portal(text)
    except PortalError:
        return
    assert p.host and 1 <= p.port <= 65535 and 0 <= p.tpgt <= 65535
