"""The one session-parameters type: defaults, the portal it names, secrets kept out of its repr."""

from __future__ import annotations

import dataclasses

import pytest

from initiator.io.params import Chap, SessionParams, new_isid


def test_defaults_are_a_normal_session_on_the_well_known_port():
    p = SessionParams("10.0.0.1", initiator_name="iqn.2026-11.org.example:me", target_name="iqn.2026-11.x:d")
    assert (p.port, p.max_connections, p.replacement_timeout, p.isid) == (3260, 1, 120.0, None)
    assert not p.discovery and SessionParams("10.0.0.1").discovery


def test_the_portal_puts_ipv6_in_brackets():
    assert SessionParams("::1", 3261).portal == "[::1]:3261" and SessionParams("h").portal == "h:3260"


def test_it_is_frozen_and_variants_come_from_replace():
    p = SessionParams("h")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.port = 1  # type: ignore[misc]
    assert dataclasses.replace(p, port=3261).port == 3261 and p.port == 3260


def test_secrets_stay_out_of_the_repr():
    p = SessionParams("h", chap=Chap("u", "TOPSECRET-1"), mutual=Chap("t", "TOPSECRET-2"))
    assert "TOPSECRET" not in repr(p) and "'u'" in repr(p)


def test_a_random_isid_has_the_random_type_and_a_zero_qualifier():
    isid = new_isid()
    assert len(isid) == 6 and isid[0] == 0x80 and isid[4:] == b"\0\0"
