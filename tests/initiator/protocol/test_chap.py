"""CHAP: algorithms, binary encodings, mutual verification, reflection, secrets kept out of messages."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.errors import AuthenticationError, LocalProtocolError, NegotiationError
from initiator.protocol.chap import (
    ALGORITHMS,
    DEFAULT_ALGORITHMS,
    ChapInitiator,
    algorithm_names,
    chap_response,
    decode_binary,
    encode_binary,
    parse_algorithms,
)

CHALLENGE = bytes(range(16))


def test_responses_match_vectors_computed_independently_with_openssl():
    # printf '\x01secret\x00\x01...\x0f' | openssl dgst -md5 / -sha3-256 (RFC 1994: H(id || secret || challenge))
    assert chap_response(5, 1, b"secret", CHALLENGE).hex() == "740e86463bda3a4d7017d6e0fba0699d"
    assert chap_response(8, 1, b"secret", CHALLENGE).hex() == (
        "bdceca071be509f41acf88309bb6d12e51526c23a2d18f22c2bb8ed199c36fd8")


@pytest.mark.parametrize("alg,size", [(5, 16), (6, 20), (7, 32), (8, 32)])
def test_every_algorithm_gives_its_digest_size(alg, size):
    assert len(chap_response(alg, 0, b"s", b"c")) == size == ALGORITHMS[alg][1]


@given(st.binary(min_size=1, max_size=300))
def test_hex_and_base64_forms_decode_to_the_same_bytes(data):
    assert decode_binary("K", encode_binary(data)) == data
    assert decode_binary("K", "0b" + base64.b64encode(data).decode()) == data
    assert decode_binary("K", "0X" + data.hex().upper()) == data


def test_odd_hex_digits_have_an_implied_leading_zero():
    assert decode_binary("K", "0xabc") == b"\x0a\xbc"


@pytest.mark.parametrize("text", ["abcd", "0x", "0xzz", "0b!!", "1234"])
def test_malformed_binary_values_are_refused(text):
    with pytest.raises(NegotiationError, match="K"):
        decode_binary("K", text)


def _target_challenge(alg=5, ident=7, challenge=CHALLENGE) -> dict[str, str]:
    return {"CHAP_A": str(alg), "CHAP_I": str(ident), "CHAP_C": encode_binary(challenge)}


def test_one_way_chap_answers_with_name_and_response():
    c = ChapInitiator("iuser", "isecret-0123")
    assert c.offer() == [("CHAP_A", "8,6,5")]
    out = dict(c.challenge(_target_challenge()))
    assert out["CHAP_N"] == "iuser"
    assert decode_binary("R", out["CHAP_R"]) == chap_response(5, 7, b"isecret-0123", CHALLENGE)
    assert "CHAP_C" not in out


def test_base64_challenge_from_the_target_is_accepted():
    c = ChapInitiator("u", "s3cret-000000", algorithms=(6,))
    keys = {"CHAP_A": "6", "CHAP_I": "0x10", "CHAP_C": "0b" + base64.b64encode(CHALLENGE).decode()}
    out = dict(c.challenge(keys))
    assert decode_binary("R", out["CHAP_R"]) == chap_response(6, 16, b"s3cret-000000", CHALLENGE)


def test_mutual_chap_verifies_the_target_response():
    c = ChapInitiator("iuser", "isecret-0123", algorithms=(8, 5), mutual_user="tuser", mutual_secret="tsecret-4567")
    out = dict(c.challenge(_target_challenge(alg=8, challenge=bytes(32))))
    ours = decode_binary("C", out["CHAP_C"])
    assert len(ours) >= 32 and ours != bytes(32)
    good = chap_response(8, int(out["CHAP_I"]), b"tsecret-4567", ours)
    c.verify({"CHAP_N": "tuser", "CHAP_R": encode_binary(good)})
    with pytest.raises(AuthenticationError, match="response is wrong"):
        c.verify({"CHAP_N": "tuser", "CHAP_R": encode_binary(bytes(32))})
    with pytest.raises(AuthenticationError, match="calls itself 'intruder'"):
        c.verify({"CHAP_N": "intruder", "CHAP_R": encode_binary(good)})
    with pytest.raises(AuthenticationError, match="did not answer our challenge"):
        c.verify({})


def test_target_reflecting_our_challenge_is_refused():
    a = ChapInitiator("iuser", "isecret-0123", mutual_user="tuser", mutual_secret="tsecret-4567")
    our_challenge = decode_binary("C", dict(a.challenge(_target_challenge()))["CHAP_C"])
    # A second connection (the attacker's) hands our own challenge back to us to compute.
    b = ChapInitiator("iuser", "isecret-0123", mutual_user="tuser", mutual_secret="tsecret-4567")
    with pytest.raises(AuthenticationError, match="reflection"):
        b.challenge(_target_challenge(challenge=our_challenge))


@pytest.mark.parametrize("keys,err,why", [
    ({"CHAP_A": "Reject"}, AuthenticationError, "none of the algorithms"),
    ({"CHAP_A": "7", "CHAP_I": "1", "CHAP_C": "0x00"}, NegotiationError, "did not offer"),
    ({"CHAP_A": "5", "CHAP_C": "0x00"}, NegotiationError, "no CHAP_I"),
    ({"CHAP_A": "5", "CHAP_I": "300", "CHAP_C": "0x00"}, NegotiationError, "outside 0..255"),
    ({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x" + "00" * 1025}, NegotiationError, "exceeds 1024"),
    ({}, NegotiationError, "no CHAP_A"),
])
def test_bad_target_chap_keys_are_refused(keys, err, why):
    with pytest.raises(err, match=why):
        ChapInitiator("u", "s3cret-000000").challenge(keys)


def test_algorithm_names_parse_in_the_order_given_and_back():
    assert parse_algorithms("sha3-256,MD5 sha256") == (8, 5, 7)
    assert algorithm_names((8, 5, 7)) == ["sha3-256", "md5", "sha256"]
    assert algorithm_names(DEFAULT_ALGORITHMS) == ["sha3-256", "sha1", "md5"]
    for text, why in (("", "no CHAP algorithm"), ("sha1,sha-1", "unknown CHAP algorithm 'sha-1'"),
                      ("md5,md5", "named twice")):
        with pytest.raises(ValueError, match=why):
            parse_algorithms(text)


def test_secrets_never_appear_in_repr_or_errors():
    c = ChapInitiator("iuser", "TOPSECRET-1", mutual_user="tuser", mutual_secret="TOPSECRET-2")
    assert "TOPSECRET" not in repr(c)
    c.challenge(_target_challenge())
    with pytest.raises(AuthenticationError) as ei:
        c.verify({"CHAP_N": "tuser", "CHAP_R": "0x00"})
    assert "TOPSECRET" not in str(ei.value)


def test_configuration_mistakes_are_refused_up_front():
    with pytest.raises(LocalProtocolError, match="must differ"):
        ChapInitiator("u", "same-secret-1", mutual_user="t", mutual_secret="same-secret-1")
    with pytest.raises(LocalProtocolError, match="unsupported"):
        ChapInitiator("u", "s", algorithms=(4,))
    with pytest.raises(LocalProtocolError, match="both"):
        ChapInitiator("u", "s", mutual_user="t")
