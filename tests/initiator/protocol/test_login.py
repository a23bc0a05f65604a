"""The login state machine, sans-IO: scripted target responses exercise every transition and rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from initiator.errors import (
    AuthenticationError,
    ISCSIError,
    LocalProtocolError,
    LoginError,
    LoginRedirect,
    NegotiationError,
    TargetProtocolError,
)
from initiator.protocol import pdu
from initiator.protocol.chap import chap_response, decode_binary, encode_binary
from initiator.protocol.keys import Negotiated
from initiator.protocol.login import MAX_ROUNDS, TRANSITIONS, Event, LoginMachine, LoginParams, State
from initiator.protocol.text import decode_text, encode_text

ISID = bytes.fromhex("80000042aa01")


def make(target: str | None = "iqn.t", **kw) -> LoginMachine:
    return LoginMachine(LoginParams(initiator_name="iqn.i", target_name=target, isid=ISID, itt=5, **kw))


def answer(req: pdu.LoginRequest, pairs=(), *, transit=None, cont=False, nsg=None, status=(0, 0), tsih=0x100,
           statsn=10, data: bytes | None = None, **kw) -> pdu.LoginResponse:
    """The response a cooperative target would send to ``req`` (follows its T/NSG unless told otherwise)."""
    transit = req.transit if transit is None else transit
    kw.setdefault("isid", req.isid)
    return pdu.LoginResponse(itt=req.itt, csg=req.csg, transit=transit, cont=cont,
                             nsg=req.nsg if nsg is None else nsg, status_class=status[0], status_detail=status[1],
                             tsih=tsih, statsn=statsn, expcmdsn=1, maxcmdsn=32,
                             data=encode_text(list(pairs)) if data is None else data, **kw)


def echo(req: pdu.LoginRequest) -> list[tuple[str, str]]:
    """Accept every offer as made (the last value of a list)."""
    return [(k, v.split(",")[-1]) for k, v in decode_text(req.data) if k not in ("MaxRecvDataSegmentLength",)]


def test_a_login_closed_before_any_answer_hints_at_chap_only_when_none_was_offered():
    """LIO closes a login that offers no CHAP to a target requiring it, without a Login Response."""
    from initiator.errors import ConnectionLost
    m = make()
    m.start()
    hinted = m.closed(ConnectionLost("connection 0 to the target closed"))
    assert type(hinted) is ConnectionLost and "may require CHAP" in str(hinted)
    with_chap = make(chap_user="u", chap_secret="s3cret-000000")
    with_chap.start()
    plain = ConnectionLost("connection 0 to the target closed")
    assert with_chap.closed(plain) is plain
    later = make()
    later.receive(answer(later.start(), [("AuthMethod", "None")], transit=True))
    assert later.closed(plain) is plain  # the target answered: something else went wrong


def test_plain_login_walks_security_operational_full_feature():
    m = make()
    req = m.start()
    assert (req.csg, req.nsg, req.transit, req.cont, req.tsih, req.itt) == (0, 1, True, False, 0, 5)
    assert decode_text(req.data) == [("InitiatorName", "iqn.i"), ("SessionType", "Normal"),
                                     ("TargetName", "iqn.t"), ("AuthMethod", "None")]
    req = m.receive(answer(req, [("TargetPortalGroupTag", "2"), ("AuthMethod", "None")], statsn=10))
    assert (req.csg, req.nsg, req.transit) == (1, 3, True) and req.expstatsn == 11
    assert m.state is State.OPERATIONAL
    assert m.receive(answer(req, echo(req) + [("MaxRecvDataSegmentLength", "65536")], statsn=11)) is None
    assert m.state is State.FULL_FEATURE and m.tsih == 0x100 and m.statsn == 11 and m.maxcmdsn == 32
    r = m.result
    assert r.tpgt == 2 and r.max_xmit_dsl == 65536 and r.max_recv_dsl == 262144 and r.session_type == "Normal"


def test_target_staying_in_a_stage_is_asked_again_with_its_offers_answered():
    m = make()
    req = m.receive(answer(m.start(), [("AuthMethod", "None")]))
    req2 = m.receive(answer(req, echo(req) + [("IFMarker", "Yes")], transit=False))
    assert (req2.csg, req2.nsg, req2.transit) == (1, 3, True)
    assert decode_text(req2.data) == [("IFMarker", "No")]
    assert m.receive(answer(req2, [])) is None


def test_multi_pdu_response_is_reassembled_with_empty_requests():
    m = make()
    req = m.receive(answer(m.start(), [("AuthMethod", "None")]))
    text = encode_text(echo(req) + [("TargetAlias", "a-fairly-long-alias")])
    pieces = [text[i:i + 37] for i in range(0, len(text), 37)]  # cuts pairs in the middle
    for piece in pieces[:-1]:
        req = m.receive(answer(req, data=piece, cont=True, transit=False))
        assert (req.data, req.cont, req.transit, req.csg) == (b"", False, False, 1)
    assert m.receive(answer(req, data=pieces[-1], transit=True, nsg=3)) is None
    assert m.result.target_alias == "a-fairly-long-alias"


def test_long_request_is_split_with_the_continue_bit():
    m = make()
    m.send_limit = 24
    req = m.start()
    sent = []
    while req.cont:
        assert not req.transit and len(req.data) <= 24
        sent.append(req.data)
        req = m.receive(answer(req, transit=False))  # the target acknowledges each piece empty
    sent.append(req.data)
    assert req.transit and req.nsg == 1
    assert decode_text(b"".join(sent))[-1] == ("AuthMethod", "None") and len(sent) > 2


def test_target_answering_before_our_text_is_complete_is_refused():
    m = make()
    m.send_limit = 40
    req = m.start()
    with pytest.raises(TargetProtocolError, match="multi-PDU login text was complete"):
        m.receive(answer(req, [("AuthMethod", "None")], transit=False))


def test_redirect_surfaces_the_new_portal():
    m = make()
    with pytest.raises(LoginRedirect, match=r"moved temporarily to 10\.0\.0\.9:3261,4") as ei:
        m.receive(answer(m.start(), [("TargetAddress", "10.0.0.9:3261,4")], status=(1, 1), transit=False))
    assert ei.value.portal == ("10.0.0.9", 3261, 4) and not ei.value.permanent and ei.value.status_class == 1
    assert m.state is State.FAILED


@pytest.mark.parametrize("status,exc,why", [
    ((2, 1), AuthenticationError, "requires CHAP and no credentials"),
    ((2, 2), LoginError, "authorization failure"),
    ((2, 3), LoginError, "target not found"),
    ((2, 6), LoginError, "too many connections"),
    ((3, 1), LoginError, "service unavailable; retry later"),
    ((3, 0x7f), LoginError, "target error; retry later"),
])
def test_status_classes_become_actionable_errors(status, exc, why):
    m = make()
    with pytest.raises(exc, match=why) as ei:
        m.receive(answer(m.start(), status=status, transit=False, isid=bytes(6)))
    assert (ei.value.status_class, ei.value.status_detail) == status


def _target_chap(req: pdu.LoginRequest, secret: bytes, challenge: bytes) -> None:
    keys = dict(decode_text(req.data))
    assert decode_binary("R", keys["CHAP_R"]) == chap_response(5, 9, secret, challenge)


def test_mutual_chap_exchange_step_by_step():
    m = make(chap_user="iu", chap_secret="isecret-0123", mutual_user="tu", mutual_secret="tsecret-4567")
    req = m.start()
    assert dict(decode_text(req.data))["AuthMethod"] == "CHAP" and not req.transit  # mutual insists on CHAP
    req = m.receive(answer(req, [("AuthMethod", "CHAP")]))
    assert decode_text(req.data) == [("CHAP_A", "8,6,5")] and not req.transit
    challenge = bytes(range(20))
    req = m.receive(answer(req, [("CHAP_A", "5"), ("CHAP_I", "9"), ("CHAP_C", encode_binary(challenge))]))
    assert req.transit and req.nsg == 1
    _target_chap(req, b"isecret-0123", challenge)
    keys = dict(decode_text(req.data))
    ours = decode_binary("C", keys["CHAP_C"])
    proof = chap_response(5, int(keys["CHAP_I"]), b"tsecret-4567", ours)
    req = m.receive(answer(req, [("CHAP_N", "tu"), ("CHAP_R", encode_binary(proof))]))
    assert m.state is State.OPERATIONAL and req.csg == 1
    assert m.receive(answer(req, echo(req))) is None


def test_target_that_skips_proving_itself_fails_mutual_chap():
    m = make(chap_user="iu", chap_secret="isecret-0123", mutual_user="tu", mutual_secret="tsecret-4567")
    req = m.receive(answer(m.start(), [("AuthMethod", "CHAP")]))
    req = m.receive(answer(req, [("CHAP_A", "5"), ("CHAP_I", "9"), ("CHAP_C", "0x" + "11" * 16)]))
    with pytest.raises(AuthenticationError, match="did not answer our challenge"):
        m.receive(answer(req, []))


def test_auth_method_none_when_mutual_was_required_is_refused():
    m = make(chap_user="iu", chap_secret="isecret-0123", mutual_user="tu", mutual_secret="tsecret-4567")
    with pytest.raises(NegotiationError, match="AuthMethod.*'None'.*'CHAP'"):
        m.receive(answer(m.start(), [("AuthMethod", "None")], transit=False))


def test_one_way_chap_accepts_a_target_that_needs_no_auth():
    m = make(chap_user="iu", chap_secret="isecret-0123")
    req = m.start()
    assert dict(decode_text(req.data))["AuthMethod"] == "CHAP,None" and req.transit
    req = m.receive(answer(req, [("AuthMethod", "None")]))
    assert req.csg == 1


@pytest.mark.parametrize("field,value,why", [
    ("itt", 6, "ITT"), ("isid", bytes(6), "ISID"), ("version_active", 1, "version"), ("csg", 1, "stage 1"),
])
def test_responses_that_belong_elsewhere_are_refused(field, value, why):
    m = make()
    rsp = answer(m.start(), [("AuthMethod", "None")])
    setattr(rsp, field, value)
    with pytest.raises(TargetProtocolError, match=why):
        m.receive(rsp)


def test_transit_without_our_request_is_refused():
    m = make(chap_user="iu", chap_secret="isecret-0123", mutual_user="tu", mutual_secret="tsecret-4567")
    with pytest.raises(TargetProtocolError, match="without our request"):
        m.receive(answer(m.start(), [("AuthMethod", "CHAP")], transit=True, nsg=1))


def test_final_response_without_a_tsih_is_refused():
    m = make()
    req = m.receive(answer(m.start(), [("AuthMethod", "None")]))
    with pytest.raises(TargetProtocolError, match="TSIH 0"):
        m.receive(answer(req, echo(req), tsih=0))


def test_a_target_that_never_moves_on_is_a_bounded_failure():
    m = make()
    req = m.start()
    req = m.receive(answer(req, [("AuthMethod", "None")]))
    with pytest.raises(TargetProtocolError, match="no progress"):
        for _ in range(MAX_ROUNDS + 1):
            req = m.receive(answer(req, transit=False))


def test_discovery_login_sends_no_target_name():
    m = make(target=None)
    pairs = dict(decode_text(m.start().data))
    assert pairs["SessionType"] == "Discovery" and "TargetName" not in pairs


def test_added_connection_keeps_tsih_and_negotiates_only_connection_keys():
    session = Negotiated(max_burst=65536, max_connections=4, target_name="iqn.t", tpgt=1)
    m = make(tsih=0x100, cid=2, leading=False, session=session)
    req = m.start()
    assert req.tsih == 0x100 and req.cid == 2 and "SessionType" not in dict(decode_text(req.data))
    req = m.receive(answer(req, [("AuthMethod", "None")]))
    assert {k for k, _ in decode_text(req.data)} == {"HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength"}
    assert m.receive(answer(req, echo(req) + [("MaxBurstLength", "262144")])) is None
    assert m.result.max_burst == 65536 and m.result.max_connections == 4


def test_added_connection_refuses_a_different_tsih():
    m = make(tsih=0x100, leading=False, session=Negotiated())
    req = m.receive(answer(m.start(), [("AuthMethod", "None")]))
    with pytest.raises(TargetProtocolError, match="TSIH 512"):
        m.receive(answer(req, echo(req), tsih=0x200))


def test_transition_table_covers_every_event_of_the_negotiation_states():
    for state in (State.SECURITY, State.OPERATIONAL):
        for event in Event:
            if (state, event) == (State.OPERATIONAL, Event.TO_OPERATIONAL):
                assert (state, event) not in TRANSITIONS  # no way back to an earlier stage
            else:
                assert (state, event) in TRANSITIONS


def test_misuse_is_a_local_error_and_params_hide_secrets():
    with pytest.raises(LocalProtocolError):
        make(chap_user="u")
    with pytest.raises(LocalProtocolError):
        make(leading=False)
    m = make(chap_user="u", chap_secret="TOPSECRET-1")
    assert "TOPSECRET" not in repr(m.params)
    with pytest.raises(LocalProtocolError):
        m.receive(answer(pdu.LoginRequest(itt=5, isid=ISID)))


_FUZZ_KEYS = ["AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R", "HeaderDigest", "MaxBurstLength",
              "MaxRecvDataSegmentLength", "ImmediateData", "TargetPortalGroupTag", "TargetAddress", "X-odd",
              "SendTargets", "OFMarkInt", "SessionType"]
_FUZZ_VALUES = ["None", "CHAP", "5", "7", "0x00ff", "0b", "0x", "Yes", "No", "Reject", "Irrelevant", "NotUnderstood",
                "CRC32C", "99999999999", "-1", "1~2", "", "h:1,1", "tu"]


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(
    st.lists(st.tuples(st.sampled_from(_FUZZ_KEYS), st.sampled_from(_FUZZ_VALUES)), max_size=5),
    st.booleans(), st.booleans(), st.integers(0, 3), st.sampled_from([(0, 0), (0, 0), (0, 0), (1, 1), (2, 1), (3, 0)]),
    st.booleans(), st.integers(0, 0xFFFF)), min_size=1, max_size=8),
    mutual=st.booleans())
def test_arbitrary_target_responses_raise_only_iscsi_errors(steps, mutual):
    kw = {"chap_user": "iu", "chap_secret": "isecret-0123"}
    if mutual:
        kw.update(mutual_user="tu", mutual_secret="tsecret-4567")
    m = make(**kw)
    req = m.start()
    try:
        for pairs, transit, cont, nsg, status, same_csg, tsih in steps:
            rsp = answer(req, pairs, transit=transit, cont=cont, nsg=nsg, status=status, tsih=tsih)
            if not same_csg:
                rsp.csg = 1 - req.csg if req.csg in (0, 1) else 0
            req = m.receive(rsp)
            if req is None:
                assert m.result is not None and m.state is State.FULL_FEATURE
                break
    except ISCSIError:
        assert m.state is State.FAILED


def test_transcript_records_the_exchange_without_chap_values():
    m = make(chap_user="iu", chap_secret="isecret-0123")
    req = m.receive(answer(m.start(), [("AuthMethod", "CHAP")], transit=False))
    m.receive(answer(req, [("CHAP_A", "5"), ("CHAP_I", "9"), ("CHAP_C", "0x" + "ab" * 16)]))
    assert m.transcript[0][0:2] == ("sent", "security negotiation")
    flat = repr(m.transcript)
    assert "CHAP_N" in flat and "abab" not in flat and "isecret" not in flat and "<34 chars>" in flat
