"""key=value text, the Text exchange machine and SendTargets parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initiator.errors import ISCSIError, LocalProtocolError, TargetProtocolError
from initiator.protocol import pdu
from initiator.protocol.text import (
    DiscoveredTarget,
    TextMachine,
    decode_text,
    encode_text,
    parse_sendtargets,
    split_chunks,
)

keys_st = st.from_regex(r"[A-Za-z][A-Za-z0-9.\-+@_]{0,40}", fullmatch=True)
values_st = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=80)
pairs_st = st.lists(st.tuples(keys_st, values_st), max_size=12)


@given(pairs_st)
def test_text_round_trips_including_utf8_and_equals_signs(pairs):
    assert decode_text(encode_text(pairs)) == pairs


def test_decode_tolerates_padding_and_keeps_repeated_keys():
    data = b"TargetName=a\0TargetAddress=h:1,1\0TargetAddress=h:2,1\0\0\0"
    assert decode_text(data) == [("TargetName", "a"), ("TargetAddress", "h:1,1"), ("TargetAddress", "h:2,1")]


@pytest.mark.parametrize("data,why", [
    (b"novalue\0", "malformed"), (b"=x\0", "malformed"), (b"1Key=x\0", "malformed"),
    (b"K=\xff\xfe\0", "UTF-8"), (b"K" * 64 + b"=x\0", "malformed"), (b"K=" + b"v" * 8193 + b"\0", "over 8192"),
])
def test_malformed_target_text_is_refused(data, why):
    with pytest.raises(TargetProtocolError, match=why):
        decode_text(data)


@pytest.mark.parametrize("pair", [("bad key", "v"), ("K", "a\0b"), ("", "v"), ("K" * 64, "v")])
def test_illegal_local_text_is_a_local_error(pair):
    with pytest.raises(LocalProtocolError):
        encode_text([pair])


@given(st.binary(max_size=400))
def test_random_bytes_decode_or_raise_a_protocol_error(data):
    try:
        decode_text(data)
    except ISCSIError:
        pass


@given(pairs_st.filter(bool), st.integers(1, 120))
def test_chunks_rejoin_exactly_and_respect_the_limit(pairs, limit):
    data = encode_text(pairs)
    chunks = split_chunks(data, limit)
    assert b"".join(chunks) == data and all(0 < len(c) <= limit for c in chunks)
    for c in chunks[:-1]:  # a chunk ends inside a pair only when that pair alone exceeds the limit
        if not c.endswith(b"\0"):
            assert len(c) == limit


def test_sendtargets_groups_addresses_under_their_target():
    pairs = [("TargetName", "iqn.a"), ("TargetAddress", "10.0.0.1:3260,1"), ("TargetAddress", "[::1]:3261,2"),
             ("TargetName", "iqn.b")]
    assert parse_sendtargets(pairs) == [
        DiscoveredTarget("iqn.a", [("10.0.0.1", 3260, 1), ("::1", 3261, 2)]), DiscoveredTarget("iqn.b", [])]
    with pytest.raises(TargetProtocolError, match="before any TargetName"):
        parse_sendtargets([("TargetAddress", "h:1,1")])


def _rsp(data=b"", final=True, cont=False, ttt=pdu.RESERVED_TAG, itt=9) -> pdu.TextResponse:
    return pdu.TextResponse(itt=itt, data=data, final=final, cont=cont, ttt=ttt)


def test_text_exchange_pulls_a_long_answer_with_the_target_transfer_tag():
    tm = TextMachine([("SendTargets", "All")], itt=9)
    req = tm.start()
    assert (req.final, req.cont, req.ttt, decode_text(req.data)) == (True, False, pdu.RESERVED_TAG,
                                                                     [("SendTargets", "All")])
    answer = encode_text([("TargetName", "iqn.a"), ("TargetAddress", "h:3260,1")])
    req = tm.receive(_rsp(answer[:10], final=False, cont=True, ttt=0x77))
    assert (req.ttt, req.final, req.data) == (0x77, True, b"")
    assert tm.receive(_rsp(answer[10:])) is None
    assert tm.pairs == [("TargetName", "iqn.a"), ("TargetAddress", "h:3260,1")]


def test_text_exchange_sends_long_text_with_the_continue_bit():
    pairs = [(f"X-k{i}", "v" * 20) for i in range(10)]
    tm = TextMachine(pairs, itt=9, max_send=64)
    req = tm.start()
    sent = []
    while req.cont:
        assert not req.final and len(req.data) <= 64
        sent.append(req.data)
        req = tm.receive(_rsp(final=False, ttt=0x5))
        assert req.ttt == 0x5
    sent.append(req.data)
    assert req.final and decode_text(b"".join(sent)) == pairs
    assert tm.receive(_rsp(encode_text([(k, "NotUnderstood") for k, _ in pairs]))) is None


@pytest.mark.parametrize("rsp,why", [
    (_rsp(itt=8), "ITT"), (_rsp(final=True, cont=True), "both F and C"),
    (_rsp(final=False), "without a Target Transfer Tag"),
])
def test_bad_text_responses_are_refused(rsp, why):
    tm = TextMachine([("SendTargets", "All")], itt=9)
    tm.start()
    with pytest.raises(TargetProtocolError, match=why):
        tm.receive(rsp)


def test_an_endless_text_answer_is_bounded():
    tm = TextMachine([("SendTargets", "All")], itt=9, max_total=1000)
    req = tm.start()
    with pytest.raises(TargetProtocolError, match="bound of 1000"):
        for _ in range(10):
            req = tm.receive(_rsp(b"K=" + b"v" * 200 + b"\0", final=False, ttt=1))
    assert req.ttt == 1
