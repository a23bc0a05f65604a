"""The one receive framer: bytes in, framed PDUs out, Data-In payloads placed where they belong. Sans-IO.

`Framer` is driven like asyncio.BufferedProtocol (``get_buffer`` / ``buffer_updated``) or by ``feed``. For a
Data-In PDU it asks ``sink`` where the payload goes, so the socket reads it straight into the caller's
buffer (no join, no extra copy): this is the data path. `PduReader` wraps it for whoever wants PDU objects
(the login phase, simple blocking drivers, tests), and with ``from_target=False`` it reads what an
initiator sends, as a target would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..errors import DigestError, TargetProtocolError
from .pdu import BHS_LEN, DIGEST_LEN, LOGIN_MAX_DATA, PDU, Op, classes_from, crc32c, decode_pdu, pad_len

# While large Data-In PDUs stream in, our own buffer takes at most this much per read (the next header and a
# little payload); the rest of each payload is read straight into its destination.
PEEK = 4096
# Below this many bytes still to come, a Data-In payload is read into our buffer and copied; above it the
# socket reads straight into the destination.
DIRECT_MIN = 16384

Sink = Callable[[bytes, int], "memoryview | None"]
Handler = Callable[[bytes, bytes, "bytes | memoryview | None"], None]


class Framer:
    """Receive buffer + PDU framing for one connection, driven like asyncio.BufferedProtocol.

    ``get_buffer()`` returns where the next bytes should land; ``buffer_updated(n)`` consumes them and
    calls ``handler(bhs, ahs, data)`` for each complete PDU. For a Data-In PDU with payload, ``sink(bhs,
    dsl)`` names the destination slice; the handler then gets ``data=None`` (the bytes are already in
    place, digest-checked). Lengths are checked against ``max_data`` before anything is buffered.
    """

    def __init__(self, handler: Handler, sink: Sink, max_data: int, header_digest: bool = False,
                 data_digest: bool = False, from_target: bool = True) -> None:
        self.handler = handler
        self._classes = classes_from(from_target)  # the opcodes the peer may send
        self._peer = "target" if from_target else "initiator"
        self.sink = sink
        self.max_data = max_data
        self.header_digest = header_digest
        self.data_digest = data_digest
        self._buf = bytearray(max(65536, max_data + BHS_LEN + 1024 + 16))
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        # current Data-In payload being placed into a caller's buffer
        self._dest: memoryview | None = None
        self._dpos = 0
        self._bhs = b""
        self._ahs = b""
        self._direct = False
        self._digest_payload: memoryview | None = None
        self._big = False
        self.hold = False  # stop framing (login done; the rest belongs to the next framer)
        # Called with (bhs, ahs) for a PDU whose data digest fails, which is then skipped (ERL 1 recovers it by
        # SNACK); None: a DigestError. A header digest error always raises: without markers the stream
        # cannot be framed again.
        self.on_bad_data: Callable[[bytes, bytes], None] | None = None

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        dest = self._dest
        if dest is not None and len(dest) - self._dpos >= DIRECT_MIN:
            self._direct = True
            return dest[self._dpos:]
        self._direct = False
        if self._start and len(self._buf) - self._end < 65536:
            self._compact()
        if self._big:  # large Data-In PDUs are streaming: read little more than the next header ourselves
            return self._mv[self._end:self._end + PEEK]
        return self._mv[self._end:]

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Push bytes that arrived by some other means (tests, a plain recv)."""
        data = memoryview(data)
        while len(data):
            buf = self.get_buffer()
            n = min(len(buf), len(data))
            buf[:n] = data[:n]
            data = data[n:]
            self.buffer_updated(n)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed into a PDU."""
        return self._end - self._start

    def take_rest(self) -> bytes:
        """Bytes received but not yet framed (handed to the next framer when login ends)."""
        rest = bytes(self._mv[self._start:self._end])
        self._start = self._end = 0
        return rest

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            self._direct = False
            self._dpos += nbytes
            if self._dpos == len(self._dest):
                self._payload_done()
                self._process()
            return
        self._end += nbytes
        self._process()

    def _compact(self) -> None:
        live = self._end - self._start
        if self._start:
            self._buf[:live] = self._buf[self._start:self._end]
            self._start, self._end = 0, live

    def _process(self) -> None:
        mv = self._mv
        while not self.hold:
            avail = self._end - self._start
            if self._dest is not None:  # copying a payload that arrived with other bytes
                n = min(avail, len(self._dest) - self._dpos)
                if n:
                    self._dest[self._dpos:self._dpos + n] = mv[self._start:self._start + n]
                    self._dpos += n
                    self._start += n
                if self._dpos < len(self._dest):
                    break
                self._payload_done()
                continue
            if self._bhs:  # payload done; wait for padding and data digest
                if not self._take_trailer():
                    break
                continue
            if avail < BHS_LEN:
                break
            p = self._start
            opcode = mv[p] & 0x3F
            ahs_len = mv[p + 4] * 4
            dsl = (mv[p + 5] << 16) | (mv[p + 6] << 8) | mv[p + 7]
            cls = self._classes.get(opcode)
            if cls is None:
                raise TargetProtocolError(f"unknown or misdirected opcode 0x{opcode:02x} from the {self._peer}")
            if dsl > self.max_data:
                raise TargetProtocolError(
                    f"{cls.__name__} announces a {dsl}-byte data segment; our MaxRecvDataSegmentLength is "
                    f"{self.max_data}")
            hd = DIGEST_LEN if self.header_digest else 0
            head = BHS_LEN + ahs_len
            if avail < head + hd:
                break
            if hd and int.from_bytes(mv[p + head:p + head + 4], "little") != crc32c(mv[p:p + head]):
                raise DigestError(f"header digest mismatch on a {cls.__name__}")
            dd = DIGEST_LEN if (self.data_digest and dsl) else 0
            total = head + hd + dsl + (-dsl & 3) + dd
            ds = p + head + hd
            self._big = opcode == Op.DATA_IN and dsl >= DIRECT_MIN
            if opcode == Op.DATA_IN and dsl:
                bhs = bytes(mv[p:p + BHS_LEN])
                dest = self.sink(bhs, dsl)
                if dest is None:
                    raise TargetProtocolError("Data-In for an unknown task or outside its buffer")
                if avail < total:  # the payload is still coming: place it as it arrives
                    self._start = ds
                    self._bhs, self._dest, self._dpos = bhs, dest, 0
                    if ahs_len:
                        self._ahs = bytes(mv[p + BHS_LEN:p + head])
                    continue
                dest[:] = mv[ds:ds + dsl]
                data = None
            else:
                if avail < total:
                    break
                data = bytes(mv[ds:ds + dsl])
            if data is not None:
                bhs = bytes(mv[p:p + BHS_LEN])
            ahs = bytes(mv[p + BHS_LEN:p + head]) if ahs_len else b""
            if dd:
                end = ds + dsl + pad_len(dsl)
                if int.from_bytes(mv[end:end + 4], "little") != crc32c(mv[ds:end]):
                    self._start += total
                    self._bad_data(cls.__name__, bhs, ahs)
                    continue
            self._start += total
            self.handler(bhs, ahs, data)
        if self._start == self._end:
            self._start = self._end = 0

    def _payload_done(self) -> None:
        """The whole Data-In payload is in its destination; padding and digest come through our buffer."""
        self._digest_payload, self._dest = self._dest, None

    def _take_trailer(self) -> bool:
        payload = self._digest_payload
        pad = pad_len(len(payload))
        dd = DIGEST_LEN if self.data_digest else 0
        if self._end - self._start < pad + dd:
            return False
        p = self._start
        bad = dd and int.from_bytes(self._mv[p + pad:p + pad + 4], "little") != crc32c(payload, self._mv[p:p + pad])
        self._start += pad + dd
        bhs, ahs, self._bhs, self._ahs, self._digest_payload = self._bhs, self._ahs, b"", b"", None
        if bad:
            self._bad_data("DataIn", bhs, ahs)
        else:
            self.handler(bhs, ahs, None)
        return True

    def _bad_data(self, name: str, bhs: bytes, ahs: bytes) -> None:
        """A PDU (already consumed) failed its data digest: report it, or raise when nobody recovers."""
        if self.on_bad_data is None:
            raise DigestError(f"data digest mismatch on a {name}")
        self.on_bad_data(bhs, ahs)

    __slots__ = ("_ahs", "_bhs", "_big", "_buf", "_classes", "_dest", "_digest_payload", "_direct", "_dpos", "_end",
                 "_mv", "_peer", "_start", "data_digest", "handler", "header_digest", "hold", "max_data", "on_bad_data",
                 "sink")


class PduReader:
    """The framer, giving `pdu.PDU` objects: ``feed(bytes)``, then ``next_pdu()`` until it returns None.

    Data-In payloads land in a fresh buffer per PDU (this is not the data path: the session core gives the
    framer the caller's buffers instead). ``on_pdu``, when given, is called with each PDU as soon as it is
    framed instead of queueing it. Errors surface from ``feed``, where the bad bytes arrive.
    """

    def __init__(self, max_data: int = LOGIN_MAX_DATA, header_digest: bool = False, data_digest: bool = False,
                 from_target: bool = True, on_pdu: Callable[[PDU], None] | None = None) -> None:
        self.from_target = from_target
        self.framer = Framer(self._framed, self._sink, max_data, header_digest, data_digest, from_target)
        self._pdus: deque[PDU] = deque()
        self._on_pdu = on_pdu if on_pdu is not None else self._pdus.append
        self._payload: bytearray | None = None

    def _sink(self, bhs: bytes, dsl: int) -> memoryview:
        self._payload = bytearray(dsl)
        return memoryview(self._payload)

    def _framed(self, bhs: bytes, ahs: bytes, data: bytes | memoryview | None) -> None:
        if data is None:  # a Data-In payload, placed in the buffer _sink gave
            data, self._payload = bytes(self._payload or b""), None
        self._on_pdu(decode_pdu(bhs, ahs, data, self.from_target))

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.framer.feed(data)

    def next_pdu(self) -> PDU | None:
        return self._pdus.popleft() if self._pdus else None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed into a PDU."""
        return self.framer.buffered

    @property
    def max_data(self) -> int:
        """The largest data segment accepted (our MaxRecvDataSegmentLength)."""
        return self.framer.max_data
