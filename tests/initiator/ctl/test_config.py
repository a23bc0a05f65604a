"""The /etc/uiscsi.conf language: good files parse to the right values, every bad one says file:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from initiator.ctl.config import ConfigError, parse_file
from tests.initiator.ctl.helpers import conf, secret

IQN = "iqn.2026-11.org.example:disk1"


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_file(path)
    return e.value.errors


def test_full_target_block_parses_to_every_value(tmp_path):
    secret(tmp_path, "i.secret", "initiator-secret")
    secret(tmp_path, "t.secret", "target-secret")
    p = conf(tmp_path, f"""
# a comment
host = "10.0.0.7"
initiatorname iqn.2026-11.org.example:host1
target data {{
    targetaddr $host port 3261   # trailing comment
    targetname {IQN}
    auth chap user host1 secret-file i.secret
    mutual user data secret-file "t.secret"
    header_digest crc32c; data_digest none
    connections 2
    replacement_timeout 30
    lun 1 2
    lun 300
    disabled
}}
""")
    cfg = parse_file(p)
    assert cfg.initiator_name == "iqn.2026-11.org.example:host1"
    (t,) = cfg.targets
    s = t.session
    assert (t.name, s.host, s.port, s.target_name) == ("data", "10.0.0.7", 3261, IQN)
    assert s.chap.user == "host1" and s.chap.secret == "initiator-secret"
    assert s.mutual.user == "data" and s.mutual.secret == "target-secret"
    assert s.header_digest and not s.data_digest
    assert (s.max_connections, s.replacement_timeout, t.luns, t.enabled) == (2, 30.0, (1, 2, 300), False)
    assert t.where == f"{p}:5"


def test_defaults_and_one_line_block(tmp_path):
    cfg = parse_file(conf(tmp_path, f"target a {{ targetaddr 127.0.0.1; targetname {IQN} }}\n"))
    t = cfg.target("a")
    s = t.session
    assert (s.port, s.max_connections, s.replacement_timeout, t.luns) == (3260, 1, 120.0, ())
    assert t.enabled and not t.discovery and s.chap is None and not s.header_digest
    assert cfg.initiator_name is None


def test_chap_algorithms_and_erl_are_read_in_the_order_given(tmp_path):
    secret(tmp_path, "i.secret")
    cfg = parse_file(conf(tmp_path, f"""target a {{
    targetaddr 127.0.0.1; targetname {IQN}
    auth chap user u secret-file i.secret algorithms sha256,MD5 sha3-256
    erl 1
}}
target b {{ targetaddr 127.0.0.1; targetname {IQN}; auth chap user u secret-file i.secret }}
"""))
    a, b = cfg.target("a").session, cfg.target("b").session
    assert (a.chap_algorithms, a.erl) == ((7, 5, 8), 1)
    assert (b.chap_algorithms, b.erl) == ((8, 6, 5), 0)


@pytest.mark.parametrize("clause, fragment", [
    ("auth chap user u secret-file i.secret algorithms sha512", "unknown CHAP algorithm 'sha512'"),
    ("auth chap user u secret-file i.secret algorithms md5,md5", "named twice"),
    ("auth chap user u secret-file i.secret algorithms", "no CHAP algorithm named"),
    ("erl 2", "ErrorRecoveryLevel from 0 to 1"),
])
def test_bad_algorithms_and_erl_clauses_name_file_and_line(tmp_path, clause, fragment):
    secret(tmp_path, "i.secret")
    p = conf(tmp_path, f"target a {{\n targetaddr 1.2.3.4\n targetname {IQN}\n {clause}\n}}\n")
    errs = errors_of(p)
    assert errs[0].startswith(f"{p}:4: ") and fragment in errs[0], errs


def test_discovery_target_needs_no_targetname(tmp_path):
    cfg = parse_file(conf(tmp_path, "target d {\n targetaddr 10.1.1.1\n discovery\n}\n"))
    assert cfg.target("d").discovery and cfg.target("d").session.target_name is None


def test_include_is_relative_to_the_including_file_and_sees_macros(tmp_path):
    sub = tmp_path / "conf.d"
    sub.mkdir()
    conf(sub, f"target b {{ targetaddr $addr; targetname {IQN} }}\n", "b.conf")
    cfg = parse_file(conf(tmp_path, 'addr = 192.0.2.1\ninclude "conf.d/b.conf"\n'))
    assert cfg.target("b").session.host == "192.0.2.1"
    assert len(cfg.files) == 2


def test_secret_file_readable_by_others_is_refused_naming_the_file(tmp_path):
    s = secret(tmp_path, "loose.secret", mode=0o644)
    p = conf(tmp_path, f"target a {{\n targetaddr 1.2.3.4\n targetname {IQN}\n"
                       " auth chap user u secret-file loose.secret\n}\n")
    (err,) = errors_of(p)
    assert err.startswith(f"{p}:4: ") and str(s) in err and "0644" in err and "chmod 600" in err


def test_secret_file_readable_by_group_is_refused(tmp_path):
    secret(tmp_path, "g.secret", mode=0o640)
    p = conf(tmp_path, f"target a {{ targetaddr 1.2.3.4; targetname {IQN}; "
                       "auth chap user u secret-file g.secret }\n")
    assert "accessible by group or others" in errors_of(p)[0]


def test_missing_and_empty_secret_files_are_errors(tmp_path):
    secret(tmp_path, "empty.secret", text="")
    p = conf(tmp_path, f"target a {{\n targetaddr 1.2.3.4\n targetname {IQN}\n"
                       " auth chap user u secret-file nope.secret\n"
                       " mutual user t secret-file empty.secret\n}\n")
    errs = errors_of(p)
    assert errs[0].startswith(f"{p}:4: cannot read secret file") and "nope.secret" in errs[0]
    assert errs[1].startswith(f"{p}:5: secret file") and errs[1].endswith("is empty")


@pytest.mark.parametrize("body, line, fragment", [
    ("target a {\n targetname @IQN@\n}\n", 1, "missing targetaddr"),
    ("target a {\n targetaddr 1.2.3.4\n}\n", 1, "missing targetname"),
    ("target a {\n targetaddr 1.2.3.4 port 70000\n targetname @IQN@\n}\n", 2, "port from 1 to 65535"),
    ("target a {\n targetaddr 1.2.3.4\n targetname IQN.bad\n}\n", 3, "is not an iSCSI name"),
    ("target a {\n targetaddr 1.2.3.4\n targetname @IQN@\n connections 0\n}\n", 4, "from 1 to 16"),
    ("target a {\n targetaddr 1.2.3.4\n targetname @IQN@\n header_digest md5\n}\n", 4, "crc32c or none"),
    ("target a {\n targetaddr 1.2.3.4\n targetname @IQN@\n lun x\n}\n", 4, "expected a LUN"),
    ("target a {\n targetaddr 1.2.3.4\n targetname @IQN@\n lun 16384\n}\n", 4, "from 0 to 16383"),
    ("target a {\n targetaddr 1.2.3.4\n targetname @IQN@\n frobnicate\n}\n", 4, "unknown target option"),
    ("target a {\n targetaddr $nowhere\n targetname @IQN@\n}\n", 2, "undefined macro $nowhere"),
    ("target a {\n targetaddr 1.2.3.4\n targetname @IQN@\n", 1, "missing '}'"),
    ("target a targetaddr 1.2.3.4\n", 1, "expected '{'"),
    ("bogus\n", 1, "unexpected 'bogus'"),
    ("target = 3\n", 1, "bad macro name"),
    ('x = "unterminated\n', 1, "unterminated quoted string"),
    ("initiatorname\n", 1, "expected an iSCSI name, got end of line"),
    ("initiatorname @IQN@ extra\n", 1, "unexpected 'extra' at the end of a statement"),
    ('include "missing.conf"\n', 1, "cannot read"),
    ("target d {\n targetaddr 1.1.1.1\n discovery\n lun 1\n}\n", 1, "a discovery target has no LUNs"),
    ("target a {\n targetaddr 1.2.3.4\n targetname @IQN@\n auth chap user u\n}\n", 4,
     "expected 'secret-file'"),
    ('include "a\0b.conf"\n', 1, "contains a NUL byte"),
    ("target a {\n targetaddr 1.2.3.4\n targetname @IQN@\n auth chap user u secret-file x\0y\n}\n", 4,
     "contains a NUL byte"),
])
def test_each_error_names_file_and_line(tmp_path, body, line, fragment):
    p = conf(tmp_path, body.replace("@IQN@", IQN))
    errs = errors_of(p)
    assert errs[0].startswith(f"{p}:{line}: "), errs
    assert fragment in errs[0], errs


def test_mutual_without_chap_is_an_error_on_the_mutual_line(tmp_path):
    secret(tmp_path, "t.secret")
    p = conf(tmp_path, f"target a {{\n targetaddr 1.2.3.4\n targetname {IQN}\n"
                       " mutual user t secret-file t.secret\n}\n")
    assert errors_of(p) == [f"{p}:4: target 'a': mutual needs an 'auth chap' line"]


def test_duplicate_target_names_are_refused(tmp_path):
    p = conf(tmp_path, f"target a {{ targetaddr 1.1.1.1; targetname {IQN} }}\n"
                       f"target a {{ targetaddr 2.2.2.2; targetname {IQN} }}\n")
    assert errors_of(p) == [f"{p}:2: target 'a' is defined twice"]


def test_all_errors_are_reported_together_and_nothing_is_returned(tmp_path):
    p = conf(tmp_path, f"target good {{ targetaddr 1.1.1.1; targetname {IQN} }}\n"
                       "target bad1 {\n targetaddr 1.1.1.1\n connections many\n}\n"
                       "oops\n"
                       "target bad2 {\n targetname nope\n}\n")
    errs = errors_of(p)
    assert [e.split(": ")[0] for e in errs] == [f"{p}:4", f"{p}:2", f"{p}:6", f"{p}:8", f"{p}:7", f"{p}:7"]


def test_error_in_included_file_names_that_file(tmp_path):
    inc = conf(tmp_path, "target a {\n  targetaddr 1.1.1.1\n  speed fast\n}\n", "inc.conf")
    p = conf(tmp_path, 'include "inc.conf"\n')
    assert errors_of(p)[0].startswith(f"{inc}:3: unknown target option 'speed'")


def test_include_loop_is_refused(tmp_path):
    conf(tmp_path, 'include "a.conf"\n', "b.conf")
    a = conf(tmp_path, 'include "b.conf"\n', "a.conf")
    errs = errors_of(a)
    assert len(errs) == 1 and "include loop" in errs[0] and errs[0].startswith(f"{tmp_path / 'b.conf'}:1: ")


def test_binary_and_oversized_files_are_refused_cleanly(tmp_path):
    b = tmp_path / "bin.conf"
    b.write_bytes(b"initiatorname x\n\xff\xfe\n")
    assert errors_of(b) == [f"{b}:2: not valid UTF-8"]
    big = tmp_path / "big.conf"
    big.write_bytes(b"#" * (1 << 20) + b"\n")
    assert "is larger than" in errors_of(big)[0]


def test_error_count_is_bounded(tmp_path):
    p = conf(tmp_path, "junk\n" * 500)
    errs = errors_of(p)
    assert len(errs) == 51 and errs[-1].endswith("too many errors, giving up")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list('ab$=;{}"# \n\\') + ["target", "lun", "include", "x=1", IQN]),
                max_size=40).map("".join))
def test_arbitrary_input_either_parses_or_raises_config_error(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("fuzz") / "f.conf"
    p.write_text(text)
    try:
        parse_file(p)
    except ConfigError as e:
        assert e.errors and all(line.startswith(f"{p}:") for line in e.errors)


def test_missing_top_level_file_is_one_clear_line(tmp_path):
    p = tmp_path / "absent.conf"
    assert errors_of(p) == [f"cannot read {p}: No such file or directory"]


def test_command_timeout_clauses_take_seconds_and_report_bad_values_by_line(tmp_path):
    cfg = parse_file(conf(tmp_path, f"target a {{\n targetaddr 10.0.0.1\n targetname {IQN}\n"
                                    " command_timeout 2.5; abort_timeout 1\n lu_reset_timeout 4\n}\n"))
    s = cfg.target("a").session
    assert (s.command_timeout, s.abort_timeout, s.lu_reset_timeout) == (2.5, 1.0, 4.0)
    s = parse_file(conf(tmp_path, f"target a {{ targetaddr 10.0.0.1; targetname {IQN}; command_timeout 0 }}\n",
                        "off.conf")).target("a").session
    assert (s.command_timeout, s.abort_timeout, s.lu_reset_timeout) == (0.0, 15.0, 30.0)
    p = conf(tmp_path, f"target a {{\n targetaddr 10.0.0.1\n targetname {IQN}\n abort_timeout 0\n"
                       " lu_reset_timeout 1e3\n command_timeout -1\n}\n", "bad.conf")
    with pytest.raises(ConfigError) as e:
        parse_file(p)
    assert e.value.errors == [
        f"{p}:4: abort_timeout: expected seconds from 0.1 to 86400, got '0'",
        f"{p}:5: lu_reset_timeout: expected seconds from 0.1 to 86400, got '1e3'",
        f"{p}:6: command_timeout: expected seconds from 0 to 86400, got '-1'"]
