"""The iSCSI login state machine (RFC 7143 6.3, 11.12, 11.13), sans-IO.

Everything that affects login state transitions lives here: `TRANSITIONS` maps (state, event) to
the next state, where the event is what a complete Login Response says (continue, stay, transit,
status class). The few rules that do not fit the table sit beside it in `LoginMachine`: the CHAP
steps inside the security stage, both directions of the continue bit, and the checks that every
response belongs to this login.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..errors import (
    AuthenticationError,
    ISCSIError,
    LocalProtocolError,
    LoginError,
    LoginRedirect,
    NegotiationError,
    TargetProtocolError,
)
from . import pdu
from .addressing import PortalError, parse_portal
from .chap import DEFAULT_ALGORITHMS, ChapInitiator
from .keys import KEYS, MAX_DSL, Negotiated, Negotiator, Proposals, check_answer, parse_number
from .text import decode_text, encode_text, split_chunks

__all__ = ["TRANSITIONS", "Event", "LoginMachine", "LoginParams", "Negotiated", "Stage", "State"]

MAX_ROUNDS = 32  # login request/response round trips before we call it a stall


class Stage(enum.IntEnum):
    """CSG/NSG values."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3


class State(enum.Enum):
    SECURITY = "security negotiation"
    OPERATIONAL = "operational negotiation"
    FULL_FEATURE = "full feature phase"
    FAILED = "failed"


class Event(enum.Enum):
    CONTINUE = "C=1: more text of this response follows"
    STAY = "T=0: the target stays in the current stage"
    TO_OPERATIONAL = "T=1, NSG=1"
    TO_FULL = "T=1, NSG=3"
    REDIRECT = "status class 1"
    INITIATOR_ERROR = "status class 2"
    TARGET_ERROR = "status class 3"


_S, _O, _F, _X = State.SECURITY, State.OPERATIONAL, State.FULL_FEATURE, State.FAILED
TRANSITIONS: dict[tuple[State, Event], State] = {
    (_S, Event.CONTINUE): _S, (_S, Event.STAY): _S, (_S, Event.TO_OPERATIONAL): _O, (_S, Event.TO_FULL): _F,
    (_O, Event.CONTINUE): _O, (_O, Event.STAY): _O, (_O, Event.TO_FULL): _F,
    **{(s, e): _X for s in (_S, _O) for e in (Event.REDIRECT, Event.INITIATOR_ERROR, Event.TARGET_ERROR)},
}
_STAGE_OF = {State.SECURITY: Stage.SECURITY, State.OPERATIONAL: Stage.OPERATIONAL}

_INITIATOR_ERRORS = {
    0x00: "initiator error (miscellaneous)",
    0x01: "authentication failed: the target refused our CHAP credentials",
    0x02: "authorization failure: this initiator may not access the target (check the target's ACL)",
    0x03: "target not found: no target of that name at this portal",
    0x04: "target removed",
    0x05: "unsupported iSCSI version",
    0x06: "too many connections for this session",
    0x07: "missing parameter",
    0x08: "cannot include this connection in the session",
    0x09: "session type not supported",
    0x0A: "session does not exist",
    0x0B: "invalid request during login",
}
_TARGET_ERRORS = {0x00: "target error", 0x01: "service unavailable", 0x02: "out of resources"}


@dataclass
class LoginParams:
    """What to log in as and to. ``target_name`` None means a discovery session."""

    initiator_name: str
    target_name: str | None
    isid: bytes
    tsih: int = 0
    cid: int = 0
    itt: int = 0
    cmdsn: int = 1
    expstatsn: int = 0
    chap_user: str | None = None
    chap_secret: str | None = None
    mutual_user: str | None = None
    mutual_secret: str | None = None
    chap_algorithms: tuple[int, ...] = DEFAULT_ALGORITHMS
    header_digest: bool = False
    data_digest: bool = False
    leading: bool = True
    proposals: Proposals = field(default_factory=Proposals)
    session: Negotiated | None = None  # non-leading connections: the leading connection's result

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return (f"LoginParams(initiator_name={self.initiator_name!r}, target_name={self.target_name!r}, "
                f"isid={self.isid.hex()}, tsih={self.tsih}, cid={self.cid}, chap_user={self.chap_user!r}, "
                f"mutual_user={self.mutual_user!r}, leading={self.leading})")


class LoginMachine:
    """Drives one connection's login: start() gives the first request, receive() the next (None = done)."""

    def __init__(self, params: LoginParams) -> None:
        if len(params.isid) != 6:
            raise LocalProtocolError("ISID must be 6 bytes")
        if not params.leading and (params.tsih == 0 or params.session is None):
            raise LocalProtocolError("a non-leading connection needs the session's TSIH and Negotiated")
        if (params.chap_user is None) != (params.chap_secret is None):
            raise LocalProtocolError("CHAP needs both chap_user and chap_secret")
        if params.mutual_user is not None and params.chap_user is None:
            raise LocalProtocolError("mutual CHAP needs the initiator's own chap_user/chap_secret too")
        self.params = params
        self.state = State.SECURITY
        self.result: Negotiated | None = None
        self.tsih = params.tsih
        self.statsn = self.expcmdsn = self.maxcmdsn = 0
        self.send_limit = pdu.LOGIN_MAX_DATA  # login PDUs carry at most 8192 bytes (RFC 7143 13.12)
        self.chap = None
        if params.chap_user is not None:
            self.chap = ChapInitiator(params.chap_user, params.chap_secret or "", algorithms=params.chap_algorithms,
                                      mutual_user=params.mutual_user, mutual_secret=params.mutual_secret)
        self.negotiator = Negotiator(params.proposals, discovery=params.target_name is None,
                                     header_digest=params.header_digest, data_digest=params.data_digest,
                                     base=None if params.leading else params.session)
        self.auth_offer = ("CHAP" if self.chap.mutual else "CHAP,None") if self.chap else "None"
        self.auth_step = "method"  # method -> chap_a -> chap_r -> done
        self.declared: dict[str, str] = {}  # target declarations in the security stage
        self._expstatsn = params.expstatsn
        self._inbox = bytearray()  # text of a multi-PDU (C=1) response being reassembled
        self._outbox: list[bytes] = []  # our text still to send (C=1 requests)
        self._plan: tuple[bool, Stage] = (False, Stage.SECURITY)  # T and NSG of our last chunk
        self._last: tuple[bool, Stage, Stage] | None = None  # (T, CSG, NSG) of the request in flight
        self._rounds = 0
        self.transcript: list[tuple[str, str, list[tuple[str, str]]]] = []  # (sent/received, stage, pairs)

    # ------------------------------------------------------------------ requests

    def start(self) -> pdu.LoginRequest:
        if self._last is not None:
            raise LocalProtocolError("LoginMachine.start() called twice")
        p = self.params
        pairs = [("InitiatorName", p.initiator_name)]
        if p.leading:
            pairs.append(("SessionType", "Discovery" if p.target_name is None else "Normal"))
        if p.target_name is not None:
            pairs.append(("TargetName", p.target_name))
        pairs.append(("AuthMethod", self.auth_offer))
        transit = "None" in self.auth_offer.split(",")  # CHAP-only must stay in the stage for the exchange
        return self._send(pairs, transit, Stage.OPERATIONAL if transit else Stage.SECURITY)

    def _note(self, direction: str, pairs: list[tuple[str, str]]) -> None:
        """Keep a transcript for logs; CHAP values are reduced to their length (they invite offline guessing)."""
        shown = [(k, f"<{len(v)} chars>" if k in ("CHAP_R", "CHAP_C") else v) for k, v in pairs]
        self.transcript.append((direction, self.state.value, shown))

    def _send(self, pairs: list[tuple[str, str]], transit: bool, nsg: Stage) -> pdu.LoginRequest:
        self._note("sent", pairs)
        self._outbox = split_chunks(encode_text(pairs), self.send_limit)
        self._plan = (transit, nsg)
        return self._next_chunk()

    def _next_chunk(self) -> pdu.LoginRequest:
        data = self._outbox.pop(0)
        more = bool(self._outbox)
        csg = _STAGE_OF[self.state]
        transit, nsg = (False, Stage.SECURITY) if more else self._plan  # T=1 only on the last piece
        if not transit:
            nsg = Stage.SECURITY  # NSG is reserved when T=0
        return self._request(transit, more, csg, nsg, data)

    def _request(self, transit: bool, cont: bool, csg: Stage, nsg: Stage, data: bytes,
                 ack: bool = False) -> pdu.LoginRequest:
        if not ack:  # an empty acknowledgement of a C=1 response keeps the intent of our last real request
            self._last = (transit, csg, nsg)
        self._rounds += 1
        if self._rounds > MAX_ROUNDS:
            raise TargetProtocolError(f"login made no progress after {MAX_ROUNDS} round trips "
                                      f"(stuck in {self.state.value})")
        p = self.params
        return pdu.LoginRequest(itt=p.itt, transit=transit, cont=cont, csg=csg, nsg=nsg, isid=p.isid,
                                tsih=p.tsih, cid=p.cid, cmdsn=p.cmdsn, expstatsn=self._expstatsn, data=data)

    # ------------------------------------------------------------------ responses

    def _event(self, rsp: pdu.LoginResponse) -> Event:
        if rsp.status_class == 1:
            return Event.REDIRECT
        if rsp.status_class == 2:
            return Event.INITIATOR_ERROR
        if rsp.status_class != 0:
            return Event.TARGET_ERROR
        if rsp.cont:
            return Event.CONTINUE
        if not rsp.transit:
            return Event.STAY
        if rsp.nsg == Stage.OPERATIONAL:
            return Event.TO_OPERATIONAL
        if rsp.nsg == Stage.FULL_FEATURE:
            return Event.TO_FULL
        raise TargetProtocolError(f"Login Response with T=1 and an illegal NSG {rsp.nsg}")

    def _check(self, rsp: pdu.LoginResponse) -> None:
        p = self.params
        if not isinstance(rsp, pdu.LoginResponse):
            raise TargetProtocolError(f"expected a Login Response during login, got {type(rsp).__name__}")
        if rsp.itt != p.itt:
            raise TargetProtocolError(f"Login Response for ITT 0x{rsp.itt:08x}, ours is 0x{p.itt:08x}")
        if rsp.status_class == 0:
            if rsp.isid != p.isid:
                raise TargetProtocolError(f"Login Response for ISID {rsp.isid.hex()}, ours is {p.isid.hex()}")
            if rsp.version_active != 0:
                raise TargetProtocolError(f"target chose iSCSI version {rsp.version_active}; we speak 0")
            if rsp.csg != _STAGE_OF[self.state]:
                raise TargetProtocolError(f"Login Response for stage {rsp.csg} while we are in {self.state.value}")
            transit, _, nsg = self._last or (False, 0, 0)
            if rsp.transit and (not transit or rsp.nsg != nsg):
                raise TargetProtocolError(f"target moved to stage {rsp.nsg} without our request (our T="
                                          f"{int(transit)}, NSG={int(nsg)})")
            if rsp.transit and rsp.cont:
                raise TargetProtocolError("Login Response with both T and C bits set")

    def receive(self, rsp: pdu.LoginResponse) -> pdu.LoginRequest | None:
        """Feed the target's Login Response; returns our next request, or None when login is complete."""
        if self._last is None or self.state in (State.FULL_FEATURE, State.FAILED):
            raise LocalProtocolError(f"LoginMachine.receive() in state {self.state.value}")
        try:
            return self._receive(rsp)
        except ISCSIError:
            self.state = State.FAILED  # a login that broke a rule cannot be resumed: the caller drops the TCP
            raise

    def _receive(self, rsp: pdu.LoginResponse) -> pdu.LoginRequest | None:
        self._check(rsp)
        event = self._event(rsp)
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise TargetProtocolError(f"Login Response event '{event.value}' is illegal in {self.state.value}")
        self.statsn, self.expcmdsn, self.maxcmdsn = rsp.statsn, rsp.expcmdsn, rsp.maxcmdsn
        self._expstatsn = (rsp.statsn + 1) & 0xFFFFFFFF
        if nxt is State.FAILED:
            self.state = State.FAILED
            raise self._failure(rsp)
        if len(self._inbox) + len(rsp.data) > 1 << 20:
            raise TargetProtocolError("Login Response text longer than 1 MiB")
        self._inbox += rsp.data
        if self._outbox:  # we are mid-way through a multi-PDU request: the target acks with empty PDUs
            if event is not Event.STAY or rsp.data:
                raise TargetProtocolError("target answered before our multi-PDU login text was complete")
            self._inbox.clear()
            return self._next_chunk()
        if event is Event.CONTINUE:  # answer each C=1 response with an empty request (RFC 7143 11.12.2)
            stage = _STAGE_OF[self.state]
            return self._request(False, False, stage, Stage.SECURITY, b"", ack=True)
        pairs = decode_text(self._inbox)
        self._inbox.clear()
        self._note("received", pairs)
        if self.state is State.SECURITY:
            return self._security(pairs, nxt, rsp)
        return self._operational(pairs, nxt, rsp)

    def closed(self, error: ISCSIError) -> ISCSIError:
        """The error to report when the connection closed mid-login. A target that requires CHAP may close
        a login that offered none without any Login Response (LIO does): say so, with the same type."""
        if (self.chap is None and self.state is State.SECURITY and self._rounds == 1
                and not any(d == "received" for d, _, _ in self.transcript)):
            return type(error)(f"{error}: the target closed the login without answering it; it may require "
                               "CHAP, and no CHAP credentials were given")
        return error

    def _failure(self, rsp: pdu.LoginResponse) -> LoginError:
        cls, det = rsp.status_class, rsp.status_detail
        code = f"(status 0x{cls:02x}{det:02x})"
        if cls == 1:
            pairs = dict(decode_text(rsp.data)) if rsp.data else {}
            addr = pairs.get("TargetAddress", "")
            portal = None
            if addr:
                try:
                    portal = parse_portal(addr)
                except PortalError:
                    portal = None
            kind = {1: "temporarily", 2: "permanently"}.get(det, "")
            return LoginRedirect(f"target moved {kind} to {addr or '(no TargetAddress given)'} {code}",
                                 det, addr, portal)
        if cls == 2:
            what = _INITIATOR_ERRORS.get(det, "initiator error")
            target = self.params.target_name or "(discovery)"
            if self.chap is not None and self.chap.algorithm == 7 and self.auth_step == "chap_r":
                what += ("; the target chose CHAP_A=7 (SHA-256), which tgt wrongly computes as SHA-1: "
                         "leave 7 out of chap_algorithms")
            if det == 0x01:
                if self.chap is None:
                    what = "authentication failed: the target requires CHAP and no credentials were given"
                return AuthenticationError(f"login to {target} refused: {what} {code}", cls, det)
            return LoginError(f"login to {target} refused: {what} {code}", cls, det)
        what = _TARGET_ERRORS.get(det, "target error")
        return LoginError(f"target failed the login: {what}; retry later {code}", cls, det)

    # ------------------------------------------------------------------ stages

    def _security(self, pairs: list[tuple[str, str]], nxt: State, rsp: pdu.LoginResponse) -> pdu.LoginRequest | None:
        keys: dict[str, str] = {}
        replies: list[tuple[str, str]] = []
        for k, v in pairs:
            if k in ("TargetPortalGroupTag", "TargetAlias", "TargetAddress"):
                self.declared[k] = v
            elif k == "AuthMethod" or k.startswith("CHAP_"):
                keys[k] = v
            elif k not in KEYS and v not in ("NotUnderstood", "Irrelevant", "Reject"):
                replies.append((k, "NotUnderstood"))
        if "AuthMethod" in keys:
            if self.auth_step != "method":
                raise NegotiationError(f"AuthMethod={keys['AuthMethod']!r} answered twice")
            if keys["AuthMethod"] == "Reject":
                raise AuthenticationError(f"the target rejected AuthMethod={self.auth_offer}: "
                                          + ("it requires CHAP; give chap_user/chap_secret" if not self.chap
                                             else "it does not accept CHAP"), 2, 1)
            method = check_answer(KEYS["AuthMethod"], self.auth_offer, keys["AuthMethod"])
            if method == "CHAP":
                self.auth_step = "chap_a"
                if nxt is not State.SECURITY:
                    raise NegotiationError("target chose AuthMethod=CHAP and left the security stage at once")
                return self._send(replies + self.chap.offer(), False, Stage.SECURITY)  # type: ignore[union-attr]
            self.auth_step = "done"
        elif self.auth_step == "method" and nxt is State.SECURITY:
            raise NegotiationError(f"the target did not answer AuthMethod (we offered {self.auth_offer})")
        elif self.auth_step == "chap_a" and self.chap:
            if nxt is not State.SECURITY:
                raise AuthenticationError("the target left the security stage before the CHAP exchange", 2, 1)
            self.auth_step = "chap_r"
            return self._send(replies + self.chap.challenge(keys), True, Stage.OPERATIONAL)
        elif self.auth_step == "chap_r" and self.chap and self.chap.mutual and (
                "CHAP_R" in keys or nxt is not State.SECURITY):
            self.chap.verify(keys)
            self.auth_step = "done"
        if nxt is State.SECURITY:  # the target stays: keep asking to move on
            return self._send(replies, True, Stage.OPERATIONAL)
        if self.chap and self.chap.mutual and self.auth_step != "done":
            raise AuthenticationError("mutual CHAP: the target never proved its identity", 2, 1)
        if self.chap and self.auth_step == "chap_r":
            self.auth_step = "done"
        self.state = nxt
        if nxt is State.FULL_FEATURE:
            self._complete(rsp)
            return None
        return self._send(self.negotiator.offers(), True, Stage.FULL_FEATURE)

    def _operational(self, pairs: list[tuple[str, str]], nxt: State,
                     rsp: pdu.LoginResponse) -> pdu.LoginRequest | None:
        security = [(k, v) for k, v in pairs if k == "AuthMethod" or k.startswith("CHAP_")]
        if security:
            raise NegotiationError(f"{security[0][0]}={security[0][1]!r} in the operational stage")
        replies = self.negotiator.receive(pairs)
        declared = self.negotiator.declared.get("MaxRecvDataSegmentLength")
        if declared:  # never send the target more than it declared it can receive
            self.send_limit = min(self.send_limit, parse_number("MaxRecvDataSegmentLength", declared, 512, MAX_DSL))
        if nxt is State.FULL_FEATURE:
            self.state = nxt
            self._complete(rsp)
            return None
        return self._send(replies, True, Stage.FULL_FEATURE)

    def _complete(self, rsp: pdu.LoginResponse) -> None:
        p = self.params
        if p.leading and rsp.tsih == 0:
            raise TargetProtocolError("final Login Response carries TSIH 0")
        if not p.leading and rsp.tsih != p.tsih:
            raise TargetProtocolError(f"final Login Response has TSIH {rsp.tsih}, our session is {p.tsih}")
        self.tsih = rsp.tsih
        declared = {k: v for k, v in self.declared.items() if k != "TargetAddress"}
        self.result = self.negotiator.result("Discovery" if p.target_name is None else "Normal", p.target_name,
                                             declared)
