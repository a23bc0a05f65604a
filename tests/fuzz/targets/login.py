"""Login: what the target sends during login, through the login framer into `LoginMachine`.

Input: byte 0 picks the login (bits 0-2, `PROFILES`: plain, CHAP, mutual CHAP, discovery, digests, a
second MC/S connection, CHAP with SHA-256, discovery with CHAP), how the stream is cut into reads (bits
3-5) and whether we offer ErrorRecoveryLevel 1 (bit 6); the rest is the target's byte stream. The driver
does what io.link and io.session do: our offers are io.session's (`Proposals` with its 1 MiB
MaxRecvDataSegmentLength and the ERL asked for); a `Framer` with the login limit frames PDUs, each is
decoded and queued, a framing error ends the queue; the login loop hands each Login Response to the machine
and encodes every request it answers with. When the login completes, the session core for what was
negotiated (`core_class`: `Erl1Core` at ERL 1) takes the connection as `Link.enter_ffp` does, and the
bytes after the final response go to its framer. Clean errors: TargetProtocolError (NegotiationError,
DigestError), ConnectionLost and LoginError (AuthenticationError, LoginRedirect). LocalProtocolError means
we misused our own API: a crash here.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import project as p
from . import Target, pieces
from .driver import SessionDriver

ISID = bytes.fromhex("80000042aa01")
MAX_RECV_DSL = 1 << 20  # what io.session declares
INITIATOR = "iqn.2026-11.test.bootkit:fuzz"
TARGET_NAME = "iqn.2026-11.test.bootkit:disk"
CHAP = {"chap_user": "fuzzuser", "chap_secret": "fuzz-secret-12"}
MUTUAL = {**CHAP, "mutual_user": "fuzztarget", "mutual_secret": "fuzz-target-secret"}
LEADING = p.Negotiated(max_connections=4, max_recv_dsl=262144, max_xmit_dsl=65536, tpgt=1)
PROFILES: tuple[dict, ...] = (
    {},
    CHAP,
    MUTUAL,
    {"target_name": None},
    {"header_digest": True, "data_digest": True},
    {"leading": False, "tsih": 0x100, "session": LEADING, "cid": 1},
    {**CHAP, "chap_algorithms": (7, 5)},
    {**CHAP, "target_name": None},
)
PROFILE_NAMES = ("plain", "chap", "mutual", "discovery", "digests", "mcs", "chap-sha256", "discovery-chap")


def params(profile: int, erl: int = 0) -> p.LoginParams:
    kw = {"target_name": TARGET_NAME, **PROFILES[profile & 7]}
    proposals = p.Proposals(max_connections=4, max_recv_dsl=MAX_RECV_DSL, erl=erl)
    return p.LoginParams(initiator_name=INITIATOR, isid=ISID, proposals=proposals, **kw)


def first_byte(profile: int, cut: int = 0, erl: int = 0) -> int:
    return (profile & 7) | (cut & 7) << 3 | (erl & 1) << 6


def one_input(data: bytes) -> None:
    if not data:
        return
    m = p.LoginMachine(params(data[0] & 7, (data[0] >> 6) & 1))
    conn = p.Connection(m.params.cid)
    conn.fire(p.ConnEvent.CONNECT)
    conn.fire(p.ConnEvent.CONNECTED)
    req = m.start()
    p.pdu.encode_bytes(req)
    queue: list = []

    def login_pdu(bhs: bytes, ahs: bytes, payload) -> None:  # Link._login_pdu
        rsp = p.pdu.decode_pdu(bhs, ahs, payload)
        if isinstance(rsp, p.pdu.LoginResponse) and rsp.transit and rsp.nsg == 3 and rsp.status_class == 0:
            framer.hold = True
        queue.append(rsp)

    framer = p.Framer(login_pdu, lambda b, n: None, p.pdu.LOGIN_MAX_DATA)
    try:
        for piece in pieces(data[1:], data[0] >> 3):
            framer.feed(piece)
    except p.ISCSIError as e:  # Link.abort, then connection_lost queues the error
        queue.append(e)
    for rsp in queue:  # Link.login
        if isinstance(rsp, p.ISCSIError):
            raise m.closed(rsp)
        if not isinstance(rsp, p.pdu.LoginResponse):
            raise p.TargetProtocolError(f"{type(rsp).__name__} during login")
        req = m.receive(rsp)
        if req is None:
            break
        p.pdu.encode_bytes(req)
    if req is not None:
        return  # the target went quiet: the login times out (CommandTimeout); nothing more to see
    conn.logged_in(m.result, (m.statsn + 1) & 0xFFFFFFFF)  # Link.login
    core = p.core_class(m.result)(m.result, m.expcmdsn, m.expcmdsn, m.maxcmdsn)  # Session._new_core
    core.attach(conn)
    SessionDriver(core, conn).feed(framer.take_rest())


def _rsp(pairs: list[tuple[str, str]], *, csg: int, nsg: int, transit: bool = True, statsn: int = 0,
         status: tuple[int, int] = (0, 0), tsih: int = 0x100, cont: bool = False, data: bytes | None = None) -> bytes:
    one = p.pdu.LoginResponse(itt=0, isid=ISID, csg=csg, nsg=nsg, transit=transit, cont=cont, tsih=tsih,
                              statsn=statsn, expcmdsn=1, maxcmdsn=32, status_class=status[0],
                              status_detail=status[1], data=p.encode_text(pairs) if data is None else data)
    return p.pdu.encode_bytes(one)


OPERATIONAL = [("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxConnections", "1"), ("InitialR2T", "Yes"),
               ("ImmediateData", "Yes"), ("MaxRecvDataSegmentLength", "8192"), ("MaxBurstLength", "262144"),
               ("FirstBurstLength", "65536"), ("DefaultTime2Wait", "2"), ("DefaultTime2Retain", "0"),
               ("MaxOutstandingR2T", "1"), ("DataPDUInOrder", "Yes"), ("DataSequenceInOrder", "Yes"),
               ("ErrorRecoveryLevel", "0")]


def seeds() -> Iterator[tuple[str, bytes]]:
    """Logins as a tgtd-like target answers them, built with our encoder (recorded ones are in seeds/login)."""
    sec = _rsp([("TargetPortalGroupTag", "1"), ("AuthMethod", "None")], csg=0, nsg=1)
    op = _rsp(OPERATIONAL, csg=1, nsg=3, statsn=1)
    yield "plain", bytes([first_byte(0)]) + sec + op
    erl1 = [(k, "1" if k == "ErrorRecoveryLevel" else v) for k, v in OPERATIONAL]
    yield "erl1", bytes([first_byte(4, erl=1)]) + sec + _rsp(
        [(k, "CRC32C" if k.endswith("Digest") else v) for k, v in erl1], csg=1, nsg=3, statsn=1)
    yield "plain-cut", bytes([first_byte(0, 7)]) + sec + op + p.pdu.encode_bytes(p.pdu.NopIn(ttt=5, statsn=2))
    chap = [_rsp([("TargetPortalGroupTag", "1"), ("AuthMethod", "CHAP")], csg=0, nsg=0, transit=False),
            _rsp([("CHAP_A", "5"), ("CHAP_I", "7"), ("CHAP_C", "0x" + "ab" * 16)], csg=0, nsg=0, transit=False),
            _rsp([], csg=0, nsg=1)]
    yield "chap", bytes([first_byte(1)]) + b"".join(chap) + op
    mutual = chap[:2] + [_rsp([("CHAP_N", "fuzztarget"), ("CHAP_R", "0x" + "cd" * 16)], csg=0, nsg=1)]
    yield "mutual", bytes([first_byte(2)]) + b"".join(mutual) + op
    disc_op = _rsp([("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxRecvDataSegmentLength", "8192"),
                    ("DefaultTime2Wait", "2"), ("DefaultTime2Retain", "0"), ("ErrorRecoveryLevel", "0")],
                   csg=1, nsg=3, statsn=1)
    yield "discovery", bytes([first_byte(3)]) + sec + disc_op
    digests = [(k, "CRC32C" if k.endswith("Digest") else v) for k, v in OPERATIONAL]
    yield "digests", bytes([first_byte(4)]) + sec + _rsp(digests, csg=1, nsg=3, statsn=1)
    yield "mcs", bytes([first_byte(5)]) + sec + _rsp(OPERATIONAL[:2] + [("MaxRecvDataSegmentLength", "8192")],
                                                       csg=1, nsg=3, statsn=1)
    yield "sha256", bytes([first_byte(6)]) + chap[0] + _rsp([("CHAP_A", "7"), ("CHAP_I", "1"),
                                                             ("CHAP_C", "0b" + "q83v" * 8)], csg=0, nsg=0,
                                                            transit=False)
    yield "discovery-chap", bytes([first_byte(7)]) + b"".join(chap) + disc_op
    yield "redirect", bytes([first_byte(0)]) + _rsp([("TargetAddress", "[::1]:3261,2")], csg=0, nsg=0,
                                                    transit=False, status=(1, 1))
    yield "refused", bytes([first_byte(1)]) + _rsp([], csg=0, nsg=0, transit=False, status=(2, 1))
    text = p.encode_text(OPERATIONAL)
    cont = [_rsp([], csg=1, nsg=0, transit=False, cont=True, data=text[:100], statsn=1),
            _rsp([], csg=1, nsg=3, data=text[100:], statsn=2)]
    yield "continue", bytes([first_byte(0)]) + sec + b"".join(cont)


# Key names and values a target sends, for libFuzzer to splice in (the text consumers use it too).
DICTIONARY = tuple(f"{k}=".encode() for k in p.KEY_NAMES) + tuple(w.encode() for w in (
    "CHAP_A=", "CHAP_I=", "CHAP_C=", "CHAP_N=", "CHAP_R=", "0x", "0b", "NotUnderstood", "Irrelevant", "Reject",
    "Yes", "No", "CRC32C", "None", "CHAP", "Normal", "Discovery", "RFC3720", "1~65535", "[::1]:3260,1",
    "fuzztarget", "4294967296", "-1")) + (b"\0",)

TARGET = Target(name="login", doc="Login Responses into the login state machine (keys, text, CHAP)",
                clean=(p.TargetProtocolError, p.ConnectionLost, p.LoginError), one_input=one_input, seeds=seeds, max_len=16384,
                dictionary=DICTIONARY)
