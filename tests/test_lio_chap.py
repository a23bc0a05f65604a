"""CHAP against LIO with each algorithm (MD5=5, SHA-1=6, SHA-256=7, SHA3-256=8), one-way and mutual, right
and wrong secrets; LIO's own log (dynamic debug, ``Got CHAP_A=N``) says which algorithm it used.

The algorithm is chosen through the sans-IO login (`LoginParams.chap_algorithms`) driven over a blocking
socket, as in test_login_targets: the session API and the URLs cannot choose it yet (issue 15), see the
strict-xfail test at the end. Every wait is bounded (4 s per socket call), so a refusal that hangs fails.
"""

from __future__ import annotations

import time

import pytest

from tests.initiator.ctl.helpers import ok_json, one_line_error, uiscsictl
from tests.initiator.protocol.test_login_targets import login, logout, params
from tests.lio_fixture import AuthenticationError, NegotiationError
from vm.lio import chap_algorithms_in

pytestmark = [pytest.mark.vm, pytest.mark.target]

ALGORITHMS = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3-256"}
CHAP = ("iuser", "lio-initiator-secret")
MUTUAL = ("tuser", "lio-target-secret")
MODES = {"one-way": None, "mutual": MUTUAL}


def chap_login(t, alg: int, secret: str = CHAP[1], mutual: tuple[str, str] | None = None):
    m_user, m_secret = mutual or (None, None)
    return login(t.portal, params(t.iqn, chap_user=CHAP[0], chap_secret=secret, chap_algorithms=(alg,),
                                  mutual_user=m_user, mutual_secret=m_secret))


def refused(call) -> tuple[str, float]:
    """Run ``call`` expecting an AuthenticationError: its one-line message and the seconds it took."""
    start = time.monotonic()
    with pytest.raises(AuthenticationError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message, message
    return message, time.monotonic() - start


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("alg", ALGORITHMS, ids=ALGORITHMS.values())
def test_right_secret_logs_in_and_lio_used_the_algorithm(lio, alg, mode):
    t = lio(chap=CHAP, mutual=MODES[mode])
    conn = chap_login(t, alg, mutual=MODES[mode])
    assert logout(conn).response == 0
    log = t.log()
    assert chap_algorithms_in(log) == [alg]
    assert "Digests match, CHAP connection successful" in log
    if mode == "mutual":  # LIO answered our challenge, and we checked its answer
        assert f"[server] Sending CHAP_N={MUTUAL[0]}" in log


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("alg", ALGORITHMS, ids=ALGORITHMS.values())
def test_wrong_initiator_secret_is_refused_in_one_line(lio, alg, mode):
    t = lio(chap=CHAP, mutual=MODES[mode])
    message, seconds = refused(lambda: chap_login(t, alg, secret="not-the-secret", mutual=MODES[mode]))
    assert "refused" in message and "CHAP" in message, message
    assert seconds < 4
    log = t.log()
    assert chap_algorithms_in(log) == [alg] and "Digests do not match" in log


@pytest.mark.parametrize("alg", ALGORITHMS, ids=ALGORITHMS.values())
def test_mutual_chap_with_a_wrong_target_secret_is_refused_by_us(lio, alg):
    t = lio(chap=CHAP, mutual=MUTUAL)
    message, seconds = refused(lambda: chap_login(t, alg, mutual=(MUTUAL[0], "not-the-target-secret")))
    assert message.startswith("mutual CHAP: the target's response is wrong"), message
    assert seconds < 4
    assert "Digests match, CHAP connection successful" in t.log()  # LIO accepted us; we refused LIO


def test_our_default_offer_gets_sha3_256_from_lio_through_uiscsictl(lio):
    t = lio(chap=CHAP, mutual=MUTUAL)
    url = t.url().replace("iscsi://", f"iscsi://{CHAP[0]}%{CHAP[1]}@")
    assert ok_json("capacity", f"{url}?target_user={MUTUAL[0]}&target_password={MUTUAL[1]}")["size"] > 0
    assert t.chap_algorithms() == [8]  # we offer 8,6,5; LIO takes the first it knows, in our order


def test_lio_takes_the_first_algorithm_of_our_offer_that_it_knows(lio):
    t = lio(chap=CHAP)
    for offer in ((5, 8), (6, 7, 8), (7, 5)):
        conn = login(t.portal, params(t.iqn, chap_user=CHAP[0], chap_secret=CHAP[1], chap_algorithms=offer))
        logout(conn)
    assert t.chap_algorithms() == [5, 6, 7]


def test_wrong_secret_through_uiscsictl_is_one_line(lio):
    t = lio(chap=CHAP)
    url = t.url().replace("iscsi://", f"iscsi://{CHAP[0]}%wrong-secret@")
    assert "CHAP credentials" in one_line_error(uiscsictl("capacity", url))


def test_lio_does_not_insist_on_mutual_chap_once_it_is_configured(lio):
    t = lio(chap=CHAP, mutual=MUTUAL)
    assert logout(chap_login(t, 8)).response == 0  # one-way against a target that has a mutual account
    assert "Initiator uses One way authentication" in t.log()


def test_chap_offered_to_lio_without_authentication_is_refused_in_one_line(lio):
    """LIO with ``authentication=0`` answers AuthMethod=CHAP to our ``CHAP,None`` yet leaves the security
    stage at once, with no CHAP exchange; we refuse that rather than log in unauthenticated. Whether to
    accept it instead (the target asked for no proof) is open."""
    t = lio()
    with pytest.raises(NegotiationError, match="left the security stage at once"):
        logout(chap_login(t, 8))


def test_no_credentials_against_lio_requiring_chap_fail_in_one_line_without_a_hang(lio):
    t = lio(chap=CHAP)
    start = time.monotonic()
    one_line_error(uiscsictl("capacity", t.url()))
    assert time.monotonic() - start < 15


@pytest.mark.xfail(strict=True, reason="LIO closes the connection without a Login Response; the message says "
                   "only 'connection 0 to the target closed' (wanted: a hint that CHAP may be required)")
def test_no_credentials_against_lio_requiring_chap_say_why(lio):
    t = lio(chap=CHAP)
    assert "CHAP" in one_line_error(uiscsictl("capacity", t.url()))


@pytest.mark.xfail(strict=True, reason="waits for the chap_algorithms URL argument (issue 15)")
def test_chap_algorithms_url_argument_chooses_the_algorithm(lio):
    t = lio(chap=CHAP)
    url = t.url().replace("iscsi://", f"iscsi://{CHAP[0]}%{CHAP[1]}@")
    assert ok_json("capacity", f"{url}?chap_algorithms=sha256")["size"] > 0
    assert t.chap_algorithms() == [7]
