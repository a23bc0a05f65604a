"""One iSCSI connection, sans-IO: its state machine (RFC 7143 8.1.3, initiator side) and its receive framer.

Everything that changes a connection's state lives in `TRANSITIONS`; `Connection.fire()` is the only
writer of `Connection.state`. `Framer` turns received bytes into PDUs and, for Data-In, asks where the
payload belongs so the socket can read it straight into the caller's buffer (no join, no extra copy).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from ..errors import DigestError, LocalProtocolError, TargetProtocolError
from .pdu import BHS_LEN, DIGEST_LEN, PDU_CLASSES, Op, crc32c, pad_len


class State(enum.Enum):
    """Initiator connection states; S3 (XPT_UP) is target-only and absent here."""

    FREE = "S1"
    XPT_WAIT = "S2"
    IN_LOGIN = "S4"
    LOGGED_IN = "S5"
    IN_LOGOUT = "S6"
    LOGOUT_REQUESTED = "S7"
    CLEANUP_WAIT = "S8"


class Event(enum.Enum):
    CONNECT = "transport connect requested"
    CONNECTED = "transport connection established, login started"
    LOGIN_OK = "final login response, status class 0"
    FAIL = "transport reset/timeout, login refused, or protocol violation"
    LOGOUT_REQUESTED = "target asked for a logout (Async Message event 1)"
    LOGOUT = "logout request sent"
    LOGOUT_OK = "logout response received"
    DROPPED = "target dropped the connection or session (Async Message event 2/3)"
    CLEANED = "outstanding tasks handed to session recovery"


S, E = State, Event
# (state, event) -> next state.  A pair missing here is a local misuse: fire() raises.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.FREE, E.CONNECT): S.XPT_WAIT,                       # T1
    (S.XPT_WAIT, E.CONNECTED): S.IN_LOGIN,                 # T4
    (S.XPT_WAIT, E.FAIL): S.FREE,                          # T2
    (S.IN_LOGIN, E.LOGIN_OK): S.LOGGED_IN,                 # T5
    (S.IN_LOGIN, E.FAIL): S.FREE,                          # T7
    (S.LOGGED_IN, E.LOGOUT): S.IN_LOGOUT,
    (S.LOGGED_IN, E.LOGOUT_REQUESTED): S.LOGOUT_REQUESTED,
    (S.LOGOUT_REQUESTED, E.LOGOUT): S.IN_LOGOUT,
    (S.IN_LOGOUT, E.LOGOUT_OK): S.FREE,
    (S.LOGGED_IN, E.FAIL): S.CLEANUP_WAIT,
    (S.LOGGED_IN, E.DROPPED): S.CLEANUP_WAIT,
    (S.LOGOUT_REQUESTED, E.FAIL): S.CLEANUP_WAIT,
    (S.LOGOUT_REQUESTED, E.DROPPED): S.CLEANUP_WAIT,
    (S.IN_LOGOUT, E.FAIL): S.CLEANUP_WAIT,
    (S.IN_LOGOUT, E.DROPPED): S.CLEANUP_WAIT,
    (S.CLEANUP_WAIT, E.CLEANED): S.FREE,
    (S.CLEANUP_WAIT, E.FAIL): S.CLEANUP_WAIT,              # a late reset while cleaning up changes nothing
    (S.FREE, E.FAIL): S.FREE,
}


class Connection:
    """Per-connection protocol state: FSM, ExpStatSN, negotiated limits, digests, load."""

    __slots__ = ("cid", "commands", "data_digest", "expstatsn", "header_digest", "history", "max_recv_dsl",
                 "max_xmit_dsl", "outstanding", "state")

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self.state = State.FREE
        self.expstatsn = 0
        self.header_digest = False
        self.data_digest = False
        self.max_xmit_dsl = 8192
        self.max_recv_dsl = 8192
        self.outstanding = 0  # SCSI tasks allegiant to this connection (MC/S scheduling)
        self.commands = 0  # SCSI commands issued here, for stats
        self.history: list[tuple[State, Event, State]] = []

    def fire(self, event: Event) -> State:
        """Apply ``event``; raises LocalProtocolError when the table has no such transition."""
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"connection {self.cid}: event {event.name} is not valid in {self.state.name}")
        self.history.append((self.state, event, nxt))
        del self.history[:-16]
        self.state = nxt
        return nxt

    @property
    def usable(self) -> bool:
        """New commands may be scheduled here."""
        return self.state is State.LOGGED_IN

    def logged_in(self, negotiated, expstatsn: int) -> None:
        """Adopt the login's results (a login.Negotiated) and enter the full-feature phase."""
        self.header_digest = negotiated.header_digest
        self.data_digest = negotiated.data_digest
        self.max_xmit_dsl = negotiated.max_xmit_dsl
        self.max_recv_dsl = negotiated.max_recv_dsl
        self.expstatsn = expstatsn
        self.fire(Event.LOGIN_OK)


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
                 data_digest: bool = False) -> None:
        self.handler = handler
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
        self._direct = False
        self._digest_payload: memoryview | None = None
        self._big = False
        self.hold = False  # stop framing (login done; the rest belongs to the next framer)

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
            cls = PDU_CLASSES.get(opcode)
            if cls is None or not cls.from_target:
                raise TargetProtocolError(f"unknown or misdirected opcode 0x{opcode:02x} from the target")
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
            total = head + hd + dsl + pad_len(dsl) + dd
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
                    continue
                dest[:] = mv[ds:ds + dsl]
                data = None
            else:
                if avail < total:
                    break
                data = bytes(mv[ds:ds + dsl])
            if dd:
                end = ds + dsl + pad_len(dsl)
                if int.from_bytes(mv[end:end + 4], "little") != crc32c(mv[ds:end]):
                    raise DigestError(f"data digest mismatch on a {cls.__name__}")
            if data is not None:
                bhs = bytes(mv[p:p + BHS_LEN])
            ahs = bytes(mv[p + BHS_LEN:p + head]) if ahs_len else b""
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
        if dd:
            want = int.from_bytes(self._mv[p + pad:p + pad + 4], "little")
            if want != crc32c(payload, self._mv[p:p + pad]):
                raise DigestError("data digest mismatch on a DataIn")
        self._start += pad + dd
        bhs, self._bhs, self._digest_payload = self._bhs, b"", None
        self.handler(bhs, b"", None)
        return True

    __slots__ = ("_bhs", "_big", "_buf", "_dest", "_digest_payload", "_direct", "_dpos", "_end", "_mv", "_start",
                 "data_digest", "handler", "header_digest", "hold", "max_data", "sink")
