"""What uiscsictl sends uiscsid: a configured target's JSON form (secrets inline, no file names, the address
resolved), and the daemon side refusing anything malformed.
"""

from __future__ import annotations

import pytest

from initiator.ctl.config import parse_file
from initiator.daemon.wire import discover_from_wire, from_wire, to_wire
from tests.initiator.ctl.helpers import conf, secret

IQN = "iqn.2026-11.org.example:disk1"


def test_wire_form_has_secrets_and_resolved_address_but_no_file_names(tmp_path):
    secret(tmp_path, "i.secret", "abc")
    cfg = parse_file(conf(tmp_path, f"target a {{\n targetaddr disk.example\n targetname {IQN}\n"
                                    " auth chap user u secret-file i.secret\n}\n"))
    wire = to_wire(cfg.target("a"), "10.9.9.9", "iqn.2026-11.org.example:me")
    assert wire["address"] == "10.9.9.9" and wire["chap"] == {"user": "u", "secret": "abc"}
    assert wire["initiator_name"] == "iqn.2026-11.org.example:me"
    assert "i.secret" not in repr(wire)


def test_wire_form_round_trips_into_the_same_target(tmp_path):
    secret(tmp_path, "i.secret", "abc")
    cfg = parse_file(conf(tmp_path, f"target a {{\n targetaddr 10.0.0.1 port 3270\n targetname {IQN}\n"
                                    " auth chap user u secret-file i.secret\n connections 3\n lun 4 5\n}\n"))
    t = cfg.target("a")
    back = from_wire(to_wire(t, "10.0.0.1", "iqn.2026-11.org.example:me"))
    s = back.session
    assert s.chap.secret == "abc" and s.chap.secret_file == ""
    assert (s.port, s.max_connections, back.luns, s.initiator_name) == (
        3270, 3, (4, 5), "iqn.2026-11.org.example:me")


def test_chap_algorithms_and_erl_go_by_name_and_come_back(tmp_path):
    secret(tmp_path, "i.secret", "abc")
    cfg = parse_file(conf(tmp_path, f"target a {{\n targetaddr 10.0.0.1\n targetname {IQN}\n"
                                    " auth chap user u secret-file i.secret algorithms sha1,sha3-256\n erl 1\n}\n"))
    wire = to_wire(cfg.target("a"), "10.0.0.1", IQN)
    assert (wire["chap_algorithms"], wire["erl"]) == (["sha1", "sha3-256"], 1)
    s = from_wire(wire).session
    assert (s.chap_algorithms, s.erl) == ((6, 8), 1)


@pytest.mark.parametrize("change, fragment", [
    ({"address": "disk.example"}, "not an IP address"),
    ({"port": 0}, "out of range"),
    ({"port": True}, "bad 'port'"),
    ({"luns": [1, "2"]}, "LUNs must be integers"),
    ({"initiator_name": "me"}, "bad initiator_name"),
    ({"target_name": None}, "bad target_name"),
    ({"chap": {"user": "u", "secret": ""}}, "non-empty 'secret'"),
    ({"name": ""}, "needs a 'name'"),
    ({"chap_algorithms": ["sha512"]}, "unknown CHAP algorithm"),
    ({"chap_algorithms": "md5"}, "list of names"),
    ({"erl": 2}, "bad 'erl'"),
])
def test_daemon_side_refuses_bad_wire_targets(change, fragment):
    good = {"name": "a", "address": "127.0.0.1", "target_name": IQN, "initiator_name": IQN}
    from_wire(good)
    with pytest.raises(ValueError, match=fragment):
        from_wire({**good, **change})


def test_command_timeouts_travel_to_the_daemon_and_are_range_checked(tmp_path):
    cfg = parse_file(conf(tmp_path, f"target a {{ targetaddr 10.0.0.1; targetname {IQN}; command_timeout 3;"
                                    " abort_timeout 0.5; lu_reset_timeout 2 }\n"))
    s = from_wire(to_wire(cfg.target("a"), "10.0.0.1", IQN)).session
    assert (s.command_timeout, s.abort_timeout, s.lu_reset_timeout) == (3.0, 0.5, 2.0)
    good = {"name": "a", "address": "127.0.0.1", "target_name": IQN, "initiator_name": IQN}
    assert from_wire(good).session.command_timeout == 30.0
    for key, bad in (("command_timeout", -1), ("abort_timeout", 0), ("lu_reset_timeout", 1e9),
                     ("command_timeout", "3"), ("abort_timeout", 10**400), ("command_timeout", float("nan"))):
        with pytest.raises(ValueError, match=key):
            from_wire({**good, key: bad})


def test_discover_arguments_are_checked_as_a_target_is():
    good = {"address": "127.0.0.1", "port": 3261, "initiator_name": IQN, "chap": None, "timeout": 2.5}
    s = discover_from_wire(good)
    assert (s.host, s.port, s.target_name, s.login_timeout) == ("127.0.0.1", 3261, None, 2.5)
    assert discover_from_wire({k: v for k, v in good.items() if k != "timeout"}).login_timeout == 20.0
    for change, fragment in (({"timeout": "x"}, "bad 'timeout'"), ({"timeout": []}, "bad 'timeout'"),
                             ({"timeout": True}, "bad 'timeout'"), ({"timeout": 0}, "outside"),
                             ({"timeout": float("nan")}, "outside"), ({"timeout": 10**400}, "outside"),
                             ({"address": "disk.example"}, "not an IP address"),
                             ({"initiator_name": None}, "bad initiator_name")):
        with pytest.raises(ValueError, match=fragment):
            discover_from_wire({**good, **change})
