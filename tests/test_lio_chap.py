"""CHAP against LIO with each algorithm (MD5, SHA-1, SHA-256, SHA3-256), one-way and mutual, right and wrong
secrets, through the public surface: uiscsictl URLs (``chap_algorithms=``) and uiscsi.conf (``auth chap ...
algorithms``) read by uiscsid. LIO's own log (dynamic debug, ``Got CHAP_A=N``) says which algorithm it used.

Each test runs its uiscsictl calls a few at a time (they spend most of their time waiting for the TCG guest);
every call is bounded (``--timeout``), so a refusal that hangs fails.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.initiator.ctl.helpers import ok_json, one_line_error, uiscsictl
from tests.initiator.protocol.test_login_targets import login, params
from tests.lio_fixture import NegotiationError, uiscsid_reloaded
from vm.lio import chap_algorithms_in

pytestmark = [pytest.mark.vm, pytest.mark.target]

ALGORITHMS = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3-256"}
CHAP = ("iuser", "lio-initiator-secret")
MUTUAL = ("tuser", "lio-target-secret")
MODES = {"one-way": None, "mutual": MUTUAL}
WRONG = "not-the-secret"


def chap_url(t, secret: str = CHAP[1], mutual: tuple[str, str] | None = None, **args: str) -> str:
    url = t.url().replace("iscsi://", f"iscsi://{CHAP[0]}%{secret}@")
    if mutual:
        args = {"target_user": mutual[0], "target_password": mutual[1], **args}
    return url + ("?" + "&".join(f"{k}={v}" for k, v in args.items()) if args else "")


def in_parallel(calls: dict) -> dict:
    """Run ``{key: (args...)}`` uiscsictl calls four at a time; their CompletedProcess by key."""
    with ThreadPoolExecutor(4) as pool:
        futures = {key: pool.submit(uiscsictl, *args, "--timeout", "15") for key, args in calls.items()}
        return {key: f.result() for key, f in futures.items()}


@pytest.mark.parametrize("mode", MODES)
def test_each_algorithm_through_the_url_right_and_wrong_secrets(lio, mode):
    """chap_algorithms=NAME makes LIO use that algorithm; the right secret logs in (the JSON names the
    algorithm), a wrong one is refused in one line, and in mutual mode a wrong target secret is refused by us."""
    mutual = MODES[mode]
    t = lio(chap=CHAP, mutual=mutual)
    calls = {}
    for alg, name in ALGORITHMS.items():
        calls["right", alg] = ("inquiry", "--json", chap_url(t, mutual=mutual, chap_algorithms=name))
        calls["wrong", alg] = ("capacity", chap_url(t, WRONG, mutual=mutual, chap_algorithms=name))
        if mutual:
            calls["wrong target", alg] = ("capacity", chap_url(t, mutual=(MUTUAL[0], WRONG), chap_algorithms=name))
    start = time.monotonic()
    results = in_parallel(calls)
    print(f"{len(calls)} uiscsictl logins in {time.monotonic() - start:.1f} s")
    for (kind, alg), r in results.items():
        if kind == "right":
            assert r.returncode == 0, (alg, r.stderr)
            assert json.loads(r.stdout)["session"]["chap_algorithm"] == ALGORITHMS[alg]
        elif kind == "wrong":
            assert "refused our CHAP credentials" in one_line_error(r), alg
        else:
            assert "mutual CHAP: the target's response is wrong" in one_line_error(r), alg
    log = t.log()
    per_alg = 3 if mutual else 2
    assert Counter(chap_algorithms_in(log)) == {alg: per_alg for alg in ALGORITHMS}
    assert log.count("Digests match, CHAP connection successful") == len(ALGORITHMS) * (per_alg - 1)
    assert log.count("Digests do not match") == len(ALGORITHMS)
    if mutual:  # LIO answered our challenge, and we checked its answer
        assert f"[server] Sending CHAP_N={MUTUAL[0]}" in log


def test_each_algorithm_through_uiscsi_conf_and_uiscsid(lio, tmp_path):
    """The ``algorithms`` clause of ``auth chap`` reaches the daemon: right secrets log in with the algorithm
    named (``show sessions --json``), wrong ones fail with the reason, one-way and mutual."""
    t = lio(chap=CHAP, mutual=MUTUAL)
    files = {"i": CHAP[1], "t": MUTUAL[1], "wrong": WRONG}
    for name, text in files.items():
        (tmp_path / f"{name}.secret").write_text(text + "\n")
        os.chmod(tmp_path / f"{name}.secret", 0o600)
    blocks, expect = [], {}
    for name in ALGORITHMS.values():
        for mode, (mine, theirs) in {"one": ("i", None), "mutual": ("i", "t"), "bad": ("wrong", None),
                                     "badmutual": ("i", "wrong")}.items():
            block = f"target {mode}-{name} {{\n targetaddr 127.0.0.1 port {t.port}\n targetname {t.iqn}\n"
            block += f" auth chap user {CHAP[0]} secret-file {mine}.secret algorithms {name}\n"
            if theirs:
                block += f" mutual user {MUTUAL[0]} secret-file {theirs}.secret\n"
            blocks.append(block + "}\n")
            expect[f"{mode}-{name}"] = (mode, name)
    config = "initiatorname iqn.2026-11.test.bootkit:lio-conf\n" + "".join(blocks)
    with uiscsid_reloaded(tmp_path, config, expect_rc=1) as daemon:  # 1: the wrong secrets fail
        targets = {x["name"]: x for x in json.loads(uiscsictl("-s", daemon.sock, "show", "--json").stdout)["targets"]}
        sessions = {x["name"]: x for x in ok_json("-s", daemon.sock, "show", "sessions")["sessions"]}
    for target, (mode, name) in expect.items():
        state, error = targets[target]["state"], targets[target]["error"] or ""
        if mode in ("one", "mutual"):
            assert state == "logged-in", (target, error)
            assert sessions[target]["chap_algorithm"] == name
        else:
            assert state == "failed", target
            assert ("refused our CHAP credentials" if mode == "bad" else "the target's response is wrong") in error
    assert set(chap_algorithms_in(t.log())) == set(ALGORITHMS)


def test_our_default_offer_gets_sha3_256_from_lio_through_uiscsictl(lio):
    t = lio(chap=CHAP, mutual=MUTUAL)
    assert ok_json("capacity", chap_url(t, mutual=MUTUAL))["size"] > 0
    assert t.chap_algorithms() == [8]  # we offer 8,6,5; LIO takes the first it knows, in our order


def test_lio_takes_the_first_algorithm_of_our_offer_that_it_knows(lio):
    t = lio(chap=CHAP)
    for offer in ("md5,sha3-256", "sha1,sha256,sha3-256", "sha256,md5"):
        assert ok_json("capacity", chap_url(t, chap_algorithms=offer))["size"] > 0
    assert t.chap_algorithms() == [5, 6, 7]


def test_lio_does_not_insist_on_mutual_chap_once_it_is_configured(lio):
    t = lio(chap=CHAP, mutual=MUTUAL)
    assert ok_json("capacity", chap_url(t))["size"] > 0  # one-way against a target that has a mutual account
    assert "Initiator uses One way authentication" in t.log()


def test_chap_offered_to_lio_without_authentication_is_refused_in_one_line(lio):
    """LIO with ``authentication=0`` answers AuthMethod=CHAP to our ``CHAP,None`` yet leaves the security
    stage at once, with no CHAP exchange; we refuse that rather than log in unauthenticated. Whether to
    accept it instead (the target asked for no proof) is open."""
    t = lio()
    with pytest.raises(NegotiationError, match="left the security stage at once"):
        login(t.portal, params(t.iqn, chap_user=CHAP[0], chap_secret=CHAP[1]))
    assert "left the security stage at once" in one_line_error(uiscsictl("capacity", chap_url(t)))


def test_no_credentials_against_lio_requiring_chap_say_why_in_one_line_without_a_hang(lio):
    """LIO closes the connection without a Login Response; the one line says CHAP may be required."""
    t = lio(chap=CHAP)
    start = time.monotonic()
    message = one_line_error(uiscsictl("capacity", t.url()))
    assert time.monotonic() - start < 15
    assert "it may require CHAP, and no CHAP credentials were given" in message
