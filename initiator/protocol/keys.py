"""RFC 7143 login/text keys as a declarative table, and the negotiation that applies it.

Each `KeyRule` says how a key is negotiated (its result function), where it may appear (security or
operational stage, leading connection only, login only) and its legal values. `Negotiator` runs one
login's operational negotiation with these rules: it builds our offers, checks the target's answers
(refusing illegal ones with a `NegotiationError` that names the key and the values), answers the
target's own offers and finally folds everything into a `Negotiated`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace

from ..errors import NegotiationError

MAX_DSL = (1 << 24) - 1
SPECIAL = ("NotUnderstood", "Irrelevant", "Reject")


class Kind(enum.Enum):
    """Result functions (RFC 7143 6.2)."""

    AND = "boolean AND"
    OR = "boolean OR"
    MIN = "numerical min"
    MAX = "numerical max"
    DECL = "declarative"
    LIST = "list"
    RANGE = "numeric range"


@dataclass(frozen=True)
class KeyRule:
    """How one key is negotiated. ``default`` is the RFC default in wire form."""

    name: str
    kind: Kind
    default: str | None = None
    leading_only: bool = False  # session-wide: negotiated on the leading connection only (LO)
    login_only: bool = True  # IO: only during login; False = also in full feature phase (ALL)
    security: bool = False  # belongs to the security negotiation stage
    low: int = 0
    high: int = 0
    values: tuple[str, ...] = ()  # LIST: the values we support, our preference first
    sender: str = "both"  # declarative keys: "initiator", "target" or "both"
    reject_ok: bool = True  # is "Reject" a legal answer to our offer (not when every peer MUST accept it)
    ffpo: bool = False  # full feature phase only (SendTargets)


_B = ("Yes", "No")
KEYS: dict[str, KeyRule] = {r.name: r for r in (
    KeyRule("AuthMethod", Kind.LIST, "None", security=True, values=("CHAP", "None")),
    KeyRule("HeaderDigest", Kind.LIST, "None", values=("CRC32C", "None"), reject_ok=False),
    KeyRule("DataDigest", Kind.LIST, "None", values=("CRC32C", "None"), reject_ok=False),
    KeyRule("MaxConnections", Kind.MIN, "1", leading_only=True, low=1, high=65535),
    KeyRule("SendTargets", Kind.DECL, login_only=False, sender="initiator", ffpo=True),
    KeyRule("TargetName", Kind.DECL, login_only=False),
    KeyRule("InitiatorName", Kind.DECL, sender="initiator"),
    KeyRule("TargetAlias", Kind.DECL, login_only=False, sender="target"),
    KeyRule("InitiatorAlias", Kind.DECL, login_only=False, sender="initiator"),
    KeyRule("TargetAddress", Kind.DECL, login_only=False, sender="target"),
    KeyRule("TargetPortalGroupTag", Kind.DECL, sender="target", low=0, high=65535),
    KeyRule("InitialR2T", Kind.OR, "Yes", leading_only=True, values=_B),
    KeyRule("ImmediateData", Kind.AND, "Yes", leading_only=True, values=_B),
    KeyRule("MaxRecvDataSegmentLength", Kind.DECL, "8192", login_only=False, low=512, high=MAX_DSL),
    KeyRule("MaxBurstLength", Kind.MIN, "262144", leading_only=True, low=512, high=MAX_DSL),
    KeyRule("FirstBurstLength", Kind.MIN, "65536", leading_only=True, low=512, high=MAX_DSL),
    KeyRule("DefaultTime2Wait", Kind.MAX, "2", leading_only=True, low=0, high=3600),
    KeyRule("DefaultTime2Retain", Kind.MIN, "20", leading_only=True, low=0, high=3600),
    KeyRule("MaxOutstandingR2T", Kind.MIN, "1", leading_only=True, low=1, high=65535),
    KeyRule("DataPDUInOrder", Kind.OR, "Yes", leading_only=True, values=_B),
    KeyRule("DataSequenceInOrder", Kind.OR, "Yes", leading_only=True, values=_B),
    KeyRule("ErrorRecoveryLevel", Kind.MIN, "0", leading_only=True, low=0, high=2),
    KeyRule("SessionType", Kind.DECL, "Normal", leading_only=True, sender="initiator",
            values=("Normal", "Discovery")),
    KeyRule("TaskReporting", Kind.LIST, "RFC3720", leading_only=True, values=("RFC3720",)),
    KeyRule("iSCSIProtocolLevel", Kind.MIN, "1", leading_only=True, low=0, high=31),
    # Obsolete marker keys (RFC 7143 13.25): answer No / Reject, never NotUnderstood.
    KeyRule("OFMarker", Kind.AND, "No", values=_B),
    KeyRule("IFMarker", Kind.AND, "No", values=_B),
    KeyRule("OFMarkInt", Kind.RANGE, "2048", low=1, high=65535),
    KeyRule("IFMarkInt", Kind.RANGE, "2048", low=1, high=65535),
)}

# Keys that are irrelevant in a discovery session (RFC 7143 13.x "Irrelevant when: SessionType=Discovery").
DISCOVERY_IRRELEVANT = frozenset({
    "MaxConnections", "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength",
    "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder", "TaskReporting", "iSCSIProtocolLevel"})


def parse_number(key: str, text: str, low: int, high: int) -> int:
    """A numerical value (decimal or 0x hex) within [low, high], else NegotiationError."""
    try:
        n = int(text, 16) if text[:2] in ("0x", "0X") else int(text, 10)
    except ValueError:
        raise NegotiationError(f"{key}={text!r}: not a number") from None
    if text.startswith(("-", "+")) or not low <= n <= high:
        raise NegotiationError(f"{key}={text!r}: outside the legal range {low}..{high}")
    return n


def _check_bool(rule: KeyRule, value: str) -> bool:
    if value not in _B:
        raise NegotiationError(f"{rule.name}={value!r}: must be Yes or No")
    return value == "Yes"


def check_answer(rule: KeyRule, offered: str, answer: str) -> str:
    """The negotiated value (wire form) of our offer ``offered`` given the target's ``answer``.

    NotUnderstood/Irrelevant give the RFC default; Reject too, unless the rule says every target MUST
    accept our offer. Anything the result function does not allow raises NegotiationError.
    """
    key = rule.name
    bad = f"{key}: the target answered {answer!r} to our offer {offered!r}"
    if answer in ("NotUnderstood", "Irrelevant"):
        return rule.default or ""
    if answer == "Reject":
        if not rule.reject_ok:
            raise NegotiationError(f"{bad}, but every target must accept one of those values")
        return rule.default or ""
    if rule.kind is Kind.AND:
        if _check_bool(rule, answer) and offered == "No":
            raise NegotiationError(f"{bad}: AND with our No can only be No")
        return answer
    if rule.kind is Kind.OR:
        if not _check_bool(rule, answer) and offered == "Yes":
            raise NegotiationError(f"{bad}: OR with our Yes can only be Yes")
        return answer
    if rule.kind in (Kind.MIN, Kind.MAX):
        ours = parse_number(key, offered, rule.low, rule.high)
        got = parse_number(key, answer, rule.low, rule.high)
        if rule.kind is Kind.MIN and got > ours:
            raise NegotiationError(f"{bad}: the result is the minimum, it cannot exceed {ours}")
        if rule.kind is Kind.MAX and got < ours:
            raise NegotiationError(f"{bad}: the result is the maximum, it cannot be below {ours}")
        return str(got)
    if rule.kind is Kind.LIST:
        if answer not in offered.split(","):
            raise NegotiationError(f"{bad}: the answer must be one of the values we offered")
        return answer
    if rule.kind is Kind.RANGE:
        lo, _, hi = offered.partition("~")
        got = parse_number(key, answer, rule.low, rule.high)
        if not int(lo) <= got <= int(hi or lo):
            raise NegotiationError(f"{bad}: outside the offered range")
        return str(got)
    raise NegotiationError(f"{key}: declarative, the target should not answer it (got {answer!r})")


def respond(rule: KeyRule, offer: str, ours: str | None) -> tuple[str, str]:
    """Our (answer, negotiated value) to a key the target offered; ``ours`` is our preference or None."""
    key = rule.name
    if offer in SPECIAL:
        raise NegotiationError(f"{key}={offer}: a target may not offer that value")
    if rule.kind is Kind.AND:
        mine = ours if ours is not None else rule.default or "No"
        result = "Yes" if _check_bool(rule, offer) and mine == "Yes" else "No"
        return result, result
    if rule.kind is Kind.OR:
        mine = ours if ours is not None else rule.default or "No"
        result = "Yes" if _check_bool(rule, offer) or mine == "Yes" else "No"
        return result, result
    if rule.kind in (Kind.MIN, Kind.MAX):
        theirs = parse_number(key, offer, rule.low, rule.high)
        mine_n = parse_number(key, ours if ours is not None else rule.default or offer, rule.low, rule.high)
        result = str(min(theirs, mine_n) if rule.kind is Kind.MIN else max(theirs, mine_n))
        return result, result
    if rule.kind is Kind.LIST:
        prefs = ours.split(",") if ours else list(rule.values)
        offered = offer.split(",")
        for value in offered:  # RFC 7143 6.2.1: the responder picks the first of the offerer's values it supports
            if value in prefs:
                return value, value
        return "Reject", rule.default or ""
    if rule.kind is Kind.RANGE:  # RFC 7143 13.25: obsolete marker intervals are always rejected
        return "Reject", rule.default or ""
    raise NegotiationError(f"{key}: declarative key offered by the target as a negotiation")


@dataclass(frozen=True)
class Proposals:
    """Our operational offers. Defaults favour throughput; the target's answers cut them down."""

    max_recv_dsl: int = 262144
    max_burst: int = 16776192
    first_burst: int = 262144
    immediate_data: bool = True
    initial_r2t: bool = False
    max_outstanding_r2t: int = 8
    max_connections: int = 1
    erl: int = 0
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    default_time2wait: int = 2
    default_time2retain: int = 20

    def with_overrides(self, **overrides: object) -> Proposals:
        return replace(self, **overrides)


# Proposals field -> key; the order is the order we send them in.
_PROPOSAL_KEYS = {
    "max_connections": "MaxConnections", "initial_r2t": "InitialR2T", "immediate_data": "ImmediateData",
    "max_recv_dsl": "MaxRecvDataSegmentLength", "max_burst": "MaxBurstLength", "first_burst": "FirstBurstLength",
    "default_time2wait": "DefaultTime2Wait", "default_time2retain": "DefaultTime2Retain",
    "max_outstanding_r2t": "MaxOutstandingR2T", "data_pdu_in_order": "DataPDUInOrder",
    "data_sequence_in_order": "DataSequenceInOrder", "erl": "ErrorRecoveryLevel",
}


def wire(value: object) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return str(value)


@dataclass(frozen=True)
class Negotiated:
    """The operational parameters in force after login (see INITIATOR-CONTRACTS.md)."""

    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_recv_dsl: int = 8192  # what WE declared: the target may send us up to this
    max_xmit_dsl: int = 8192  # the target's MaxRecvDataSegmentLength: we may send up to this
    max_burst: int = 262144
    first_burst: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    erl: int = 0
    tpgt: int | None = None
    target_alias: str | None = None
    session_type: str = "Normal"
    target_name: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


_RESULT_FIELDS = {v: k for k, v in _PROPOSAL_KEYS.items() if k != "max_recv_dsl"}
_RESULT_FIELDS.update({"HeaderDigest": "header_digest", "DataDigest": "data_digest"})


class Negotiator:
    """One connection's operational-stage negotiation (RFC 7143 6.2): offers, answers, results.

    ``base`` is the leading connection's `Negotiated` when this connection joins an existing session:
    session-wide keys are then neither offered nor taken from the target (tgt wrongly re-sends them).
    """

    def __init__(self, proposals: Proposals, *, discovery: bool = False, header_digest: bool = False,
                 data_digest: bool = False, base: Negotiated | None = None) -> None:
        self.proposals = proposals
        self.discovery = discovery
        self.base = base
        self.offered: dict[str, str] = {}
        self.values: dict[str, str] = {}  # negotiated (wire form), ours or answered
        self.declared: dict[str, str] = {}  # the target's declarations
        self.ignored: dict[str, str] = {}  # session-wide keys a non-leading connection got anyway
        self._digests = {"HeaderDigest": "CRC32C,None" if header_digest else "None",
                         "DataDigest": "CRC32C,None" if data_digest else "None"}

    def _skip(self, rule: KeyRule) -> bool:
        return (self.base is not None and rule.leading_only) or (
            self.discovery and rule.name in DISCOVERY_IRRELEVANT)

    def offers(self) -> list[tuple[str, str]]:
        """Our operational keys, in order; remembered so the answers can be checked."""
        pairs = list(self._digests.items())
        for name, key in _PROPOSAL_KEYS.items():
            if not self._skip(KEYS[key]):
                pairs.append((key, wire(getattr(self.proposals, name))))
        for key, value in pairs:
            if KEYS[key].kind is not Kind.DECL:
                self.offered[key] = value
            else:
                self.values[key] = value
        return pairs

    def _ours(self, key: str) -> str | None:
        if key in self._digests:
            return self._digests[key]
        for name, k in _PROPOSAL_KEYS.items():
            if k == key:
                return wire(getattr(self.proposals, name))
        return None

    def receive(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Apply the target's keys; returns our answers to the keys it offered itself."""
        replies: list[tuple[str, str]] = []
        for key, value in pairs:
            rule = KEYS.get(key)
            if rule is None:
                if value not in SPECIAL:
                    replies.append((key, "NotUnderstood"))
                continue
            if rule.security or rule.ffpo:
                raise NegotiationError(f"{key}={value!r}: not allowed in the operational stage")
            if self._skip(rule):
                self.ignored[key] = value
                if self.base is None and rule.kind is not Kind.DECL and value not in SPECIAL:
                    replies.append((key, "Irrelevant"))  # a discovery session has no use for it
                continue
            if rule.kind is Kind.DECL:
                self._declare(rule, value)
            elif key in self.offered and key not in self.values:
                self.values[key] = check_answer(rule, self.offered[key], value)
            elif key in self.values:
                if value != self.values[key]:
                    raise NegotiationError(f"{key}: the target renegotiated it as {value!r} after "
                                           f"{self.values[key]!r}")
            else:
                answer, result = respond(rule, value, self._ours(key))
                self.values[key] = result
                replies.append((key, answer))
        return replies

    def _declare(self, rule: KeyRule, value: str) -> None:
        if rule.sender == "initiator":
            raise NegotiationError(f"{rule.name}={value!r}: only the initiator declares this key")
        if value in SPECIAL:
            return
        if rule.high:
            parse_number(rule.name, value, rule.low, rule.high)
        self.declared[rule.name] = value

    def result(self, session_type: str, target_name: str | None,
               security_declared: dict[str, str] | None = None) -> Negotiated:
        """Fold offers, answers and declarations into a `Negotiated` (unanswered offers keep the default)."""
        declared = {**(security_declared or {}), **self.declared}
        vals: dict[str, object] = {}
        for key, attr in _RESULT_FIELDS.items():
            rule = KEYS[key]
            text = self.values.get(key, rule.default or "")
            if rule.kind is Kind.LIST:
                vals[attr] = text == "CRC32C"
            elif rule.kind in (Kind.AND, Kind.OR):
                vals[attr] = text == "Yes"
            else:
                vals[attr] = int(text)
        vals["max_recv_dsl"] = self.proposals.max_recv_dsl
        vals["max_xmit_dsl"] = parse_number("MaxRecvDataSegmentLength",
                                            declared.get("MaxRecvDataSegmentLength", "8192"), 512, MAX_DSL)
        # RFC 7143 13.14: FirstBurstLength <= MaxBurstLength; sending less is always safe.
        vals["first_burst"] = min(vals["first_burst"], vals["max_burst"])  # type: ignore[type-var]
        if self.base is not None:
            session_wide = {f.name for f in fields(Negotiated)} - {
                "header_digest", "data_digest", "max_recv_dsl", "max_xmit_dsl", "extra"}
            vals.update({k: getattr(self.base, k) for k in session_wide})
        else:
            tpgt = declared.get("TargetPortalGroupTag")
            vals.update(tpgt=parse_number("TargetPortalGroupTag", tpgt, 0, 65535) if tpgt else None, target_alias=declared.get("TargetAlias"),
                        session_type=session_type, target_name=target_name)
        known = set(_RESULT_FIELDS) | {"MaxRecvDataSegmentLength", "TargetPortalGroupTag", "TargetAlias"}
        extra = {k: v for k, v in {**declared, **self.values}.items() if k not in known}
        return Negotiated(**vals, extra=extra)  # type: ignore[arg-type]
