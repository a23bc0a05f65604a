"""Text: key=value text from the target into each of its consumers.

Input: byte 0 bits 0-1 pick the consumer, bits 2-5 a variant; the rest is the target's bytes.
  0  Text Response PDUs (framed, decoded) into a SendTargets `TextMachine`, as Session.send_targets runs
     it, then `parse_sendtargets` on the answer; variant bit 0 makes our own text span several requests.
  1  a data segment into the operational `Negotiator` after our offers, as the login's operational stage
     feeds it: answers checked, our replies encoded, the result folded (variant: discovery, digests, MC/S,
     ErrorRecoveryLevel 1 offered).
  2  a data segment into `ChapInitiator`: the target's CHAP_A/CHAP_I/CHAP_C, then (mutual) its
     CHAP_N/CHAP_R.
  3  a data segment into `parse_sendtargets` and `parse_portal`.
Clean errors: TargetProtocolError (NegotiationError) and LoginError (AuthenticationError).
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import project as p
from . import Target, pieces
from .login import DICTIONARY, LEADING, MUTUAL, OPERATIONAL

ITT = 6


def _send_targets(variant: int, stream: bytes) -> None:
    ours = [("SendTargets", "All")] + ([("X-org.example.pad", "x" * 40)] if variant & 1 else [])
    m = p.TextMachine(ours, itt=ITT, max_send=16 if variant & 1 else 8192)
    responses: list = []

    def handler(bhs: bytes, ahs: bytes, data) -> None:
        one = p.pdu.decode_pdu(bhs, ahs, data)
        if isinstance(one, p.pdu.TextResponse):  # the session core routes the others elsewhere
            responses.append(one)

    framer = p.Framer(handler, lambda b, n: None, 8192)
    req = m.start()
    p.pdu.encode_bytes(req)
    for piece in pieces(stream, variant >> 1):
        framer.feed(piece)
        while responses and req is not None:
            req = m.receive(responses.pop(0))
            if req is not None:
                p.pdu.encode_bytes(req)
    if m.done:
        p.parse_sendtargets(m.pairs or [])


def _negotiate(variant: int, text: bytes) -> None:
    pairs = p.decode_text(text)
    neg = p.Negotiator(p.Proposals(max_connections=4, erl=(variant >> 3) & 1), discovery=bool(variant & 1),
                       header_digest=bool(variant & 2), data_digest=bool(variant & 2),
                       base=LEADING if variant & 4 else None)
    p.encode_text(neg.offers())
    p.encode_text(neg.receive(pairs))
    neg.result("Discovery" if variant & 1 else "Normal", None if variant & 1 else "iqn.2026-11.test.bootkit:disk",
               {"TargetPortalGroupTag": "1"})


def _chap(variant: int, text: bytes) -> None:
    keys = dict(p.decode_text(text))
    algorithms = ((8, 6, 5), (7, 5), (5,), (6,))[variant & 3]
    chap = p.ChapInitiator("fuzzuser", "fuzz-secret-12", algorithms=algorithms,
                           **({k: MUTUAL[k] for k in ("mutual_user", "mutual_secret")} if variant & 4 else {}))
    p.encode_text(chap.offer())
    p.encode_text(chap.challenge(keys))
    if chap.mutual:
        chap.verify(keys)


def _portals(variant: int, text: bytes) -> None:
    pairs = p.decode_text(text)
    p.parse_sendtargets(pairs)
    for key, value in pairs:
        if key == "TargetAddress":
            p.parse_portal(value, default_tpgt=variant & 7)


_CONSUMERS = (_send_targets, _negotiate, _chap, _portals)


def one_input(data: bytes) -> None:
    if data:
        _CONSUMERS[data[0] & 3]((data[0] >> 2) & 15, data[1:])


def _text_rsp(pairs: list[tuple[str, str]], *, final: bool = True, ttt: int = p.pdu.RESERVED_TAG) -> bytes:
    return p.pdu.encode_bytes(p.pdu.TextResponse(itt=ITT, final=final, ttt=ttt, statsn=1, expcmdsn=2, maxcmdsn=9,
                                                 data=p.encode_text(pairs)))


def seeds() -> Iterator[tuple[str, bytes]]:
    targets = [("TargetName", "iqn.2026-11.test.bootkit:disk"), ("TargetAddress", "127.0.0.1:3261,1"),
               ("TargetAddress", "[fe80::1%eth0]:3260,2"), ("TargetName", "iqn.2026-11.test.bootkit:other"),
               ("TargetAddress", "10.0.2.2,1")]
    yield "sendtargets", bytes([0]) + _text_rsp(targets)
    yield "sendtargets-long", bytes([0]) + _text_rsp(targets[:2], final=False, ttt=9) + _text_rsp(targets[2:])
    yield "sendtargets-split-request", bytes([0b100]) + _text_rsp([], final=False, ttt=3) * 4 + _text_rsp(targets)
    yield "operational", bytes([1]) + p.encode_text(OPERATIONAL)
    yield "operational-target-offers", bytes([1]) + p.encode_text(
        [("MaxRecvDataSegmentLength", "65536"), ("OFMarker", "No"), ("IFMarkInt", "1~65535"),
         ("TaskReporting", "RFC3720"), ("X-com.example.vendor", "1"), ("iSCSIProtocolLevel", "1")])
    yield "discovery", bytes([1 | 1 << 2]) + p.encode_text(OPERATIONAL)
    yield "mcs", bytes([1 | 4 << 2]) + p.encode_text(OPERATIONAL)
    erl1 = [(k, "1" if k == "ErrorRecoveryLevel" else v) for k, v in OPERATIONAL]
    yield "erl1", bytes([1 | 8 << 2]) + p.encode_text(erl1)
    chap = [("CHAP_A", "5"), ("CHAP_I", "200"), ("CHAP_C", "0x" + "5a" * 16)]
    yield "chap", bytes([2]) + p.encode_text(chap)
    yield "chap-base64", bytes([2 | 3 << 2]) + p.encode_text([("CHAP_A", "6"), ("CHAP_I", "0x1f"),
                                                            ("CHAP_C", "0bAAECAwQFBgcICQoLDA0ODw==")])
    yield "chap-mutual", bytes([2 | 6 << 2]) + p.encode_text(chap + [("CHAP_N", "fuzztarget"),
                                                                     ("CHAP_R", "0x" + "00" * 16)])
    yield "portals", bytes([3]) + p.encode_text(targets)


TARGET = Target(name="text", doc="key=value text into SendTargets, the negotiator and CHAP",
                clean=(p.TargetProtocolError, p.LoginError), one_input=one_input, seeds=seeds, max_len=8192,
                dictionary=DICTIONARY)
