"""iSCSI key=value text (RFC 7143 6.1) and the Text Request/Response exchange (11.10, 11.11).

`encode_text`/`decode_text` convert between pairs and the NUL-separated UTF-8 data segment with
validation and bounds. `TextMachine` runs one Text exchange with the continue bit and Target Transfer
Tag continuation, sans-IO; `parse_sendtargets` turns a SendTargets answer into targets and portals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import LocalProtocolError, TargetProtocolError
from . import pdu
from .addressing import Portal, PortalError, parse_portal

MAX_KEY = 63  # RFC 7143 6.1: key names up to 63 bytes
MAX_VALUE = 8192  # individual values are 255 bytes; binary CHAP values and lists may be longer: bounded here
MAX_TEXT = 1 << 20  # a whole (reassembled) text response; SendTargets of many targets fits easily
_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9.\-+@_#]*\Z")


def encode_text(pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> bytes:
    """``key=value\\0`` for each pair; refuses names and values RFC 7143 forbids."""
    out = bytearray()
    for key, value in pairs:
        if not _KEY_RE.match(key) or len(key) > MAX_KEY:
            raise LocalProtocolError(f"illegal key name {key!r}")
        raw = value.encode("utf-8")
        if b"\0" in raw or len(raw) > MAX_VALUE:
            raise LocalProtocolError(f"illegal value for {key}: NUL byte or longer than {MAX_VALUE}")
        out += key.encode("ascii") + b"=" + raw + b"\0"
    return bytes(out)


def decode_text(data: bytes | bytearray | memoryview) -> list[tuple[str, str]]:
    """The target's text as validated pairs, in order (duplicates kept: SendTargets repeats keys)."""
    if len(data) > MAX_TEXT:
        raise TargetProtocolError(f"text of {len(data)} bytes exceeds our bound of {MAX_TEXT}")
    pairs: list[tuple[str, str]] = []
    for item in bytes(data).split(b"\0"):
        if not item:
            continue  # trailing NUL or padding
        key_b, sep, val_b = item.partition(b"=")
        try:
            key, value = key_b.decode("ascii"), val_b.decode("utf-8")
        except UnicodeDecodeError:
            raise TargetProtocolError(f"text key or value is not valid UTF-8: {item[:60]!r}") from None
        if not sep or not _KEY_RE.match(key) or len(key) > MAX_KEY:
            raise TargetProtocolError(f"malformed key=value text from the target: {item[:60]!r}")
        if len(val_b) > MAX_VALUE:
            raise TargetProtocolError(f"value of {key} is {len(val_b)} bytes, over {MAX_VALUE}")
        pairs.append((key, value))
    return pairs


def split_chunks(data: bytes, limit: int) -> list[bytes]:
    """Cut text into PDU-sized pieces, at pair boundaries where possible.

    RFC 7143 6.1 lets a pair straddle two PDUs, but some targets (tgt) parse each PDU on its own, so a
    pair is cut only when it alone is longer than ``limit``.
    """
    if limit < 1:
        raise LocalProtocolError("chunk limit must be positive")
    chunks: list[bytes] = []
    cur = b""
    for item in re.findall(rb"[^\0]*\0|[^\0]+\Z", data):
        if len(cur) + len(item) <= limit:
            cur += item
            continue
        if cur:
            chunks.append(cur)
        cur = b""
        while len(item) > limit:
            chunks.append(item[:limit])
            item = item[limit:]
        cur = item
    if cur or not chunks:
        chunks.append(cur)
    return chunks


@dataclass
class DiscoveredTarget:
    name: str
    portals: list[Portal] = field(default_factory=list)


def parse_sendtargets(pairs: list[tuple[str, str]]) -> list[DiscoveredTarget]:
    """SendTargets answer -> targets; each TargetAddress belongs to the TargetName before it."""
    targets: list[DiscoveredTarget] = []
    for key, value in pairs:
        if key == "TargetName":
            targets.append(DiscoveredTarget(value))
        elif key == "TargetAddress":
            if not targets:
                raise TargetProtocolError(f"SendTargets: TargetAddress={value!r} before any TargetName")
            try:
                targets[-1].portals.append(parse_portal(value))
            except PortalError as e:
                raise TargetProtocolError(f"malformed TargetAddress {value!r}: {e}") from None
    return targets


class TextMachine:
    """One Text Request/Response exchange, sans-IO.

    start() and receive() return TextRequests whose ``cmdsn``/``expstatsn`` the caller stamps (it owns
    the CmdSN window); receive() returns None once the final response arrived, then ``pairs`` holds
    the reassembled answer. Our text is split over several requests (C bit) when it exceeds
    ``max_send`` (the target's MaxRecvDataSegmentLength); a long answer is pulled with empty requests
    that echo the Target Transfer Tag.
    """

    def __init__(self, pairs: list[tuple[str, str]], *, itt: int, lun: int = 0, max_send: int = 8192,
                 max_total: int = MAX_TEXT) -> None:
        self.itt = itt
        self.lun = lun
        self.max_total = max_total
        self._out = split_chunks(encode_text(pairs), max_send)
        self._buf = bytearray()
        self.pairs: list[tuple[str, str]] | None = None
        self.started = False

    @property
    def done(self) -> bool:
        return self.pairs is not None

    def _request(self, ttt: int) -> pdu.TextRequest:
        data = self._out.pop(0) if self._out else b""
        more = bool(self._out)
        return pdu.TextRequest(itt=self.itt, lun=self.lun, ttt=ttt, final=not more, cont=more, data=data)

    def start(self) -> pdu.TextRequest:
        if self.started:
            raise LocalProtocolError("TextMachine.start() called twice")
        self.started = True
        return self._request(pdu.RESERVED_TAG)

    def receive(self, rsp: pdu.TextResponse) -> pdu.TextRequest | None:
        if not self.started or self.done:
            raise LocalProtocolError("TextMachine.receive() outside an exchange")
        if rsp.itt != self.itt:
            raise TargetProtocolError(f"Text Response for ITT 0x{rsp.itt:08x}, expected 0x{self.itt:08x}")
        if rsp.final and rsp.cont:
            raise TargetProtocolError("Text Response with both F and C bits set")
        if self._out:  # we are still sending: the target acknowledges each piece with an empty response
            if rsp.data or rsp.final:
                raise TargetProtocolError("Text Response with data or F=1 before our text was complete")
            return self._request(rsp.ttt)
        if len(self._buf) + len(rsp.data) > self.max_total:
            raise TargetProtocolError(f"Text Response longer than our bound of {self.max_total} bytes")
        self._buf += rsp.data
        if rsp.final:
            self.pairs = decode_text(self._buf)
            return None
        if rsp.ttt == pdu.RESERVED_TAG:
            raise TargetProtocolError("non-final Text Response without a Target Transfer Tag")
        return pdu.TextRequest(itt=self.itt, lun=self.lun, ttt=rsp.ttt, final=True)
