"""CHAP for iSCSI login (RFC 1994, RFC 7143 12.1.3): one-way and mutual, MD5/SHA-1/SHA-256/SHA3-256.

Sans-IO: `ChapInitiator` turns the target's CHAP keys into ours. Secrets never appear in messages,
reprs or logs. A challenge the target sends us that equals one we issued is refused (a reflection
attack: the target would use us to compute the answer to our own challenge).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import secrets

from ..errors import AuthenticationError, LocalProtocolError, NegotiationError

# CHAP_A value -> (hashlib name, digest size). RFC 7143 12.1.3 and the IANA CHAP algorithm registry.
ALGORITHMS: dict[int, tuple[str, int]] = {5: ("md5", 16), 6: ("sha1", 20), 7: ("sha256", 32), 8: ("sha3_256", 32)}
ALGORITHM_NAMES = {5: "MD5", 6: "SHA-1", 7: "SHA-256", 8: "SHA3-256"}
# How users name them (URL ``chap_algorithms=``, uiscsi.conf ``algorithms``), as open-iscsi's chap_algs does.
ALGORITHM_IDS = {"md5": 5, "sha1": 6, "sha256": 7, "sha3-256": 8}
# Our offer when none is configured. SHA-256 (7) is left out on purpose: tgt (1.0.85 and earlier) answers
# CHAP_A=7 but computes SHA-1, and MD5 is mandatory for every target, so a 7 after 5 could never be chosen
# anyway. Opt in explicitly.
DEFAULT_ALGORITHMS = (8, 6, 5)
MAX_CHALLENGE = 1024  # bytes; RFC 7143 allows large binary values, we bound them

# Challenges this process issued recently (bounded), to spot one reflected back at us.
_issued: collections.deque[bytes] = collections.deque(maxlen=4096)


def encode_binary(data: bytes) -> str:
    """A binary value in the 0x hex form every target accepts."""
    return "0x" + data.hex()


def decode_binary(key: str, text: str) -> bytes:
    """Decode a binary value: 0x/0X hex or 0b/0B base64 (RFC 7143 6.1)."""
    prefix, body = text[:2], text[2:]
    try:
        if prefix in ("0x", "0X"):
            if len(body) % 2:
                body = "0" + body  # RFC 7143 6.1: an odd number of hex digits has an implied leading 0
            data = bytes.fromhex(body)
        elif prefix in ("0b", "0B"):
            data = base64.b64decode(body, validate=True)
        else:
            raise ValueError
    except (ValueError, binascii.Error):
        raise NegotiationError(f"{key}: {text[:40]!r} is not a 0x-hex or 0b-base64 binary value") from None
    if not data:
        raise NegotiationError(f"{key}: empty binary value")
    return data


def parse_algorithms(text: str) -> tuple[int, ...]:
    """``md5,sha1,sha256,sha3-256`` (any order, commas or spaces) -> CHAP_A values in that order.

    ValueError names an unknown or repeated algorithm and lists the known names."""
    words = [w for w in text.replace(",", " ").split() if w]
    if not words:
        raise ValueError(f"no CHAP algorithm named; use some of {', '.join(ALGORITHM_IDS)}")
    out: list[int] = []
    for word in words:
        alg = ALGORITHM_IDS.get(word.lower())
        if alg is None:
            raise ValueError(f"unknown CHAP algorithm {word!r}; use some of {', '.join(ALGORITHM_IDS)}")
        if alg in out:
            raise ValueError(f"CHAP algorithm {word!r} named twice")
        out.append(alg)
    return tuple(out)


def algorithm_names(algorithms: tuple[int, ...]) -> list[str]:
    """The user-facing names of CHAP_A values (the inverse of `parse_algorithms`)."""
    names = {v: k for k, v in ALGORITHM_IDS.items()}
    return [names[a] for a in algorithms]


def chap_response(algorithm: int, identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 response: H(identifier || secret || challenge)."""
    h = hashlib.new(ALGORITHMS[algorithm][0])
    h.update(bytes([identifier]))
    h.update(secret)
    h.update(challenge)
    return h.digest()


def _number(key: str, text: str, high: int) -> int:
    try:
        n = int(text, 16) if text[:2] in ("0x", "0X") else int(text, 10)
    except ValueError:
        raise NegotiationError(f"{key}={text!r}: not a number") from None
    if not 0 <= n <= high:
        raise NegotiationError(f"{key}={text!r}: outside 0..{high}")
    return n


class ChapInitiator:
    """The initiator side of the CHAP exchange.

    offer() -> [CHAP_A]; then challenge(target keys) -> [CHAP_N, CHAP_R (, CHAP_I, CHAP_C)]; then, for
    mutual CHAP, verify(target keys) checks the target's CHAP_N/CHAP_R.
    """

    def __init__(self, user: str, secret: str, *, algorithms: tuple[int, ...] = DEFAULT_ALGORITHMS,
                 mutual_user: str | None = None, mutual_secret: str | None = None) -> None:
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise LocalProtocolError(f"unsupported CHAP algorithms {unknown or '(none)'}; known: {sorted(ALGORITHMS)}")
        if (mutual_user is None) != (mutual_secret is None):
            raise LocalProtocolError("mutual CHAP needs both a target user name and a target secret")
        if mutual_secret is not None and mutual_secret == secret:
            raise LocalProtocolError("RFC 7143 12.1.3: the target's CHAP secret must differ from the initiator's")
        self.user = user
        self._secret = secret.encode()
        self.algorithms = tuple(algorithms)
        self.mutual_user = mutual_user
        self._mutual_secret = mutual_secret.encode() if mutual_secret is not None else None
        self.algorithm: int | None = None
        self._ours: tuple[int, bytes] | None = None  # (identifier, challenge) we sent in mutual mode

    def __repr__(self) -> str:
        return f"ChapInitiator(user={self.user!r}, algorithms={self.algorithms}, mutual={self.mutual})"

    @property
    def mutual(self) -> bool:
        return self._mutual_secret is not None

    def offer(self) -> list[tuple[str, str]]:
        return [("CHAP_A", ",".join(str(a) for a in self.algorithms))]

    def challenge(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        """Answer the target's CHAP_A/CHAP_I/CHAP_C with CHAP_N/CHAP_R (and our own challenge if mutual)."""
        offered = ",".join(map(str, self.algorithms))
        chosen = keys.get("CHAP_A")
        if chosen is None:
            raise NegotiationError("CHAP: the target sent no CHAP_A after we offered " + offered)
        if chosen in ("Reject", "NotUnderstood", "Irrelevant"):
            names = ", ".join(ALGORITHM_NAMES[a] for a in self.algorithms)
            raise AuthenticationError(f"CHAP: the target supports none of the algorithms we offered ({names}); "
                                      f"it answered CHAP_A={chosen}", 2, 1)
        alg = _number("CHAP_A", chosen, 255)
        if alg not in self.algorithms:
            raise NegotiationError(f"CHAP_A: the target chose {chosen!r}, which we did not offer ({offered})")
        for key in ("CHAP_I", "CHAP_C"):
            if key not in keys:
                raise NegotiationError(f"CHAP: the target chose CHAP_A={alg} but sent no {key}")
        ident = _number("CHAP_I", keys["CHAP_I"], 255)
        challenge = decode_binary("CHAP_C", keys["CHAP_C"])
        if len(challenge) > MAX_CHALLENGE:
            raise NegotiationError(f"CHAP_C: a {len(challenge)}-byte challenge exceeds {MAX_CHALLENGE} bytes")
        if challenge in _issued:
            raise AuthenticationError("CHAP: the target sent back a challenge we issued (reflection attack); "
                                      "refusing to answer it", 2, 1)
        self.algorithm = alg
        out = [("CHAP_N", self.user),
               ("CHAP_R", encode_binary(chap_response(alg, ident, self._secret, challenge)))]
        if self.mutual:
            size = max(ALGORITHMS[alg][1], 16)
            ours = secrets.token_bytes(size)
            while ours == challenge:
                ours = secrets.token_bytes(size)
            our_id = secrets.randbelow(256)
            self._ours = (our_id, ours)
            _issued.append(ours)
            out += [("CHAP_I", str(our_id)), ("CHAP_C", encode_binary(ours))]
        return out

    def verify(self, keys: dict[str, str]) -> None:
        """Check the target's answer to our challenge (mutual CHAP); AuthenticationError if wrong."""
        if self._ours is None or self.algorithm is None or self._mutual_secret is None:
            raise NegotiationError("CHAP: the target sent CHAP_N/CHAP_R but we did not challenge it")
        if "CHAP_R" not in keys or "CHAP_N" not in keys:
            raise AuthenticationError("mutual CHAP: the target did not answer our challenge (no CHAP_N/CHAP_R); "
                                      "is its outgoing account configured?", 2, 1)
        if keys["CHAP_N"] != self.mutual_user:
            raise AuthenticationError(f"mutual CHAP: the target calls itself {keys['CHAP_N']!r}, "
                                      f"expected {self.mutual_user!r}", 2, 1)
        got = decode_binary("CHAP_R", keys["CHAP_R"])
        ident, challenge = self._ours
        want = chap_response(self.algorithm, ident, self._mutual_secret, challenge)
        if not hmac.compare_digest(got, want):
            raise AuthenticationError("mutual CHAP: the target's response is wrong (its secret differs from "
                                      "the one we were given)", 2, 1)
