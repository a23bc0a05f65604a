"""libiscsi-form iSCSI URLs and discovery portals."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.ctl.url import URLError, chap_from_env, parse_discovery_portal, parse_url
from initiator.io.params import Chap

IQN = "iqn.2026-11.test.bootkit:disk"


def test_plain_url_gives_host_port_target_and_lun():
    u = parse_url(f"iscsi://127.0.0.1:3261/{IQN}/1", env={})
    s = u.session
    assert (s.host, s.port, s.target_name, u.lun) == ("127.0.0.1", 3261, IQN, 1)
    assert s.chap is None and not s.header_digest and s.max_connections == 1


def test_default_port_is_3260():
    assert parse_url(f"iscsi://host.example/{IQN}/0", env={}).session.port == 3260


def test_user_and_percent_secret_are_split_at_the_first_percent():
    u = parse_url(f"iscsi://alice%s3cr%et@10.0.0.1/{IQN}/2", env={})
    assert u.session.chap == Chap("alice", "s3cr%et")
    assert u.redacted() == f"iscsi://alice%***@10.0.0.1:3260/{IQN}/2"


def test_query_arguments_set_digests_mutual_chap_and_connections():
    u = parse_url(f"iscsi://u%p@h:1/{IQN}/1?header_digest=crc32c&data_digest=none&target_user=t"
                  "&target_password=tp&max_connections=4", env={})
    s = u.session
    assert s.header_digest and not s.data_digest and s.max_connections == 4
    assert s.mutual == Chap("t", "tp")


def test_chap_algorithms_and_erl_arguments_keep_the_order_given():
    s = parse_url(f"iscsi://u%p@h/{IQN}/1?chap_algorithms=md5,sha3-256,SHA256&erl=1", env={}).session
    assert (s.chap_algorithms, s.erl) == ((5, 8, 7), 1)
    assert parse_url(f"iscsi://u%p@h/{IQN}/1", env={}).session.chap_algorithms == (8, 6, 5)


@pytest.mark.parametrize("query, fragment", [
    ("chap_algorithms=sha512", "unknown CHAP algorithm 'sha512'; use some of md5, sha1, sha256, sha3-256"),
    ("chap_algorithms=md5,,md5", "named twice"),
    ("erl=2", "use 0 or 1"),
])
def test_bad_chap_algorithms_and_erl_arguments_say_why(query, fragment):
    with pytest.raises(URLError, match=fragment):
        parse_url(f"iscsi://u%p@h/{IQN}/1?{query}", env={})


def test_chap_algorithms_without_credentials_is_refused():
    with pytest.raises(URLError, match="chap_algorithms needs CHAP credentials"):
        parse_url(f"iscsi://h/{IQN}/1?chap_algorithms=md5", env={})


def test_libiscsi_digest_preference_spellings_are_accepted():
    assert parse_url(f"iscsi://h/{IQN}/1?header_digest=none-crc32c", env={}).session.header_digest


def test_ipv6_portal_in_brackets():
    u = parse_url(f"iscsi://[::1]:3262/{IQN}/3", env={})
    assert (u.session.host, u.session.port, u.portal) == ("::1", 3262, "[::1]:3262")


def test_environment_supplies_secrets_the_url_leaves_out():
    env = {"LIBISCSI_CHAP_USERNAME": "eu", "LIBISCSI_CHAP_PASSWORD": "ep",
           "LIBISCSI_CHAP_TARGET_USERNAME": "tu", "LIBISCSI_CHAP_TARGET_PASSWORD": "tp"}
    u = parse_url(f"iscsi://h/{IQN}/1", env=env)
    assert (u.session.chap, u.session.mutual) == (Chap("eu", "ep"), Chap("tu", "tp"))


def test_url_secret_wins_over_environment():
    env = {"LIBISCSI_CHAP_USERNAME": "eu", "LIBISCSI_CHAP_PASSWORD": "ep"}
    u = parse_url(f"iscsi://uu%up@h/{IQN}/1", env=env)
    assert u.session.chap == Chap("uu", "up")


def test_user_in_url_with_secret_from_environment():
    u = parse_url(f"iscsi://uu@h/{IQN}/1", env={"LIBISCSI_CHAP_PASSWORD": "ep"})
    assert u.session.chap == Chap("uu", "ep")


def test_the_url_builds_the_session_parameters_with_chap_and_mutual():
    u = parse_url(f"iscsi://u%p@h:5/{IQN}/1?target_user=t&target_password=tp", env={})
    kw = u.session
    assert kw.chap.user == "u" and kw.chap.secret == "p" and kw.mutual.user == "t"
    assert kw.target_name == IQN and kw.port == 5 and kw.mutual.secret == "tp"


@pytest.mark.parametrize(("text", "message"), [
    ("http://h/iqn/1", "not an iSCSI URL"),
    ("iscsi://h", "target name and LUN are missing"),
    ("iscsi://h/", "target name and LUN are missing"),
    ("iscsi://h/1", "expected /IQN/LUN"),
    (f"iscsi://h/{IQN}/x", "LUN 'x'"),
    (f"iscsi://h/{IQN}/", "LUN ''"),
    (f"iscsi://h/{IQN}/99999", "0..16383"),
    (f"iscsi://h:0/{IQN}/1", "1..65535"),
    (f"iscsi://h:port/{IQN}/1", "1..65535"),
    (f"iscsi://:3260/{IQN}/1", "host is missing"),
    (f"iscsi://::1/{IQN}/1", "IPv6"),
    (f"iscsi://[::1/{IQN}/1", "closing"),
    (f"iscsi://h/{IQN}/1?bogus=1", "unknown argument 'bogus'"),
    (f"iscsi://h/{IQN}/1?header_digest=md5", "crc32c or none"),
    (f"iscsi://h/{IQN}/1?max_connections=0", "1..16"),
    (f"iscsi://h/{IQN}/1?target_user=t", "both target_user and target_password"),
    (f"iscsi://u%p@h/{IQN}/1?target_user", "needs a value"),
    (f"iscsi://u@h/{IQN}/1", "has no secret"),
    (f"iscsi://u%@h/{IQN}/1", "empty secret"),
    (f"iscsi://%p@h/{IQN}/1", "empty user"),
    (f"iscsi://h/{IQN}/1?target_user=t&target_password=p", "needs one-way CHAP"),
])
def test_bad_urls_get_a_clear_message(text, message):
    with pytest.raises(URLError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_url(text, env={})


def test_error_messages_never_show_the_secret():
    with pytest.raises(URLError) as e:
        parse_url("iscsi://u%hunter2@h/1", env={})
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.1", ("10.0.0.1", 3260)),
    ("127.0.0.1:3999", ("127.0.0.1", 3999)),
    ("[fe80::1]:4000", ("fe80::1", 4000)),
    ("iscsi://host:3270", ("host", 3270)),
    ("iscsi://host/", ("host", 3260)),
])
def test_discovery_portals(text, expected):
    assert parse_discovery_portal(text) == expected


def test_discovery_portal_rejects_other_schemes_and_credentials():
    with pytest.raises(URLError, match="only iscsi://"):
        parse_discovery_portal("http://h")
    with pytest.raises(URLError, match="LIBISCSI_CHAP"):
        parse_discovery_portal("iscsi://u%p@h")


@given(st.text(max_size=80))
def test_any_text_either_parses_or_raises_url_error(text):
    try:
        parse_url(text, env={})
    except URLError:
        pass
    try:
        parse_discovery_portal(text)
    except URLError:
        pass


def test_non_ascii_digits_are_not_a_port_or_lun():
    with pytest.raises(URLError):
        parse_url(f"iscsi://h:3²/{IQN}/1", env={})
    with pytest.raises(URLError):
        parse_url(f"iscsi://h/{IQN}/²", env={})


def test_discovery_chap_comes_from_the_environment_only():
    env = {"LIBISCSI_CHAP_USERNAME": "du", "LIBISCSI_CHAP_PASSWORD": "dp"}
    assert chap_from_env(env) == {"chap": Chap("du", "dp"), "mutual": None}
    with pytest.raises(URLError, match="no user name"):
        chap_from_env({"LIBISCSI_CHAP_PASSWORD": "dp"})


def test_lun_may_be_left_out_where_a_tool_does_not_need_one():
    u = parse_url(f"iscsi://h:7/{IQN}", env={}, lun_required=False)
    assert (u.session.target_name, u.lun) == (IQN, 0)
    assert parse_url(f"iscsi://h:7/{IQN}/", env={}, lun_required=False).session.target_name == IQN
    assert parse_url(f"iscsi://h:7/{IQN}/5", env={}, lun_required=False).lun == 5
