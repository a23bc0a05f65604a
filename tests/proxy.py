"""A TCP proxy on loopback that resets its connections on purpose (for the recovery tests).

`LoopbackProxy` is the plumbing both proxies here share (tests/stall_proxy.py builds on it too).

``ResetProxy(target_host, target_port, reset_every=N)`` forwards every accepted connection to the
target and, each time another N bytes have gone from the initiator to the target, kills the connection
that carried them with an RST on both sides (SO_LINGER 0), as a flaky network or a NAT timeout would.
New connections are accepted as usual, so an initiator can log in again. ``max_resets`` bounds the
damage; ``resets`` counts what happened. ``corrupt_every=N`` instead flips one byte in every N bytes
going from the target to the initiator (``corruptions`` counts them), for digest tests: it may hit headers.

``corrupt_pdus={opcode: N}`` is the careful form: the proxy frames both directions into PDUs (BHS, AHS, header
digest, data, padding, data digest, at the digest settings the login negotiated, read from the Login
Responses) and flips one byte in the middle of the data segment of one in N PDUs of that opcode that carry
data (0x25 Data-In from the target; 0x01 SCSI Command with immediate data or 0x05 Data-Out from the
initiator), never a header, padding or digest; at most ``max_corruptions`` in all. The one in N is drawn
from a generator seeded with ``corrupt_seed`` (N=1: every PDU): a fixed period would resonate with resends
of the same length and hit the same PDU every time. ``corrupted`` lists (opcode, ITT, DataSN) of each,
``seen`` counts the PDUs with data by opcode. Threads only: it does not touch the test's event loop.
"""

from __future__ import annotations

import random
import selectors
import socket
import struct
import threading
from typing import Self

BHS_LEN = 48
LOGIN_RSP = 0x23


class _Link:
    """What both directions of one proxied connection share: whether login is over, and its digests."""

    def __init__(self) -> None:
        self.ffp = False
        self.keys: dict[str, str] = {}

    def digests(self) -> tuple[bool, bool]:
        if not self.ffp:
            return False, False
        return self.keys.get("HeaderDigest") == "CRC32C", self.keys.get("DataDigest") == "CRC32C"


class PduStream:
    """One direction of a proxied iSCSI connection, framed PDU by PDU as bytes pass through.

    ``feed(chunk)`` returns the chunk to forward, with one payload byte flipped in every PDU that ``choose(opcode,
    bhs)`` picks. Only byte positions are tracked; nothing is held back (a header split across chunks is
    collected while its bytes are forwarded unchanged, so it is never the header that changes)."""

    def __init__(self, link: _Link, from_target: bool, choose) -> None:
        self.link, self.from_target, self.choose = link, from_target, choose
        self.head = bytearray()  # the current PDU's BHS (+AHS, header digest) collected so far
        self.head_len = BHS_LEN
        self.rest = 0  # bytes of the current PDU's data segment, padding and data digest still to pass
        self.flip_at = -1  # offset into the remaining bytes of the byte to flip (-1: none)
        self.text: bytearray | None = None  # a login response's data, collected to learn the digests
        self.text_len = 0
        self.opcode = 0
        self._last_bhs = b""

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray(chunk)
        i = 0
        while i < len(out):
            if self.rest:
                n = min(self.rest, len(out) - i)
                if 0 <= self.flip_at < n:
                    out[i + self.flip_at] ^= 0xFF
                    self.flip_at = -1
                elif self.flip_at >= 0:
                    self.flip_at -= n
                if self.text is not None and len(self.text) < self.text_len:
                    self.text += out[i:i + min(n, self.text_len - len(self.text))]
                self.rest -= n
                i += n
                if not self.rest:
                    self._pdu_done()
                continue
            n = min(self.head_len - len(self.head), len(out) - i)
            self.head += out[i:i + n]
            i += n
            if len(self.head) == BHS_LEN:
                hd, _ = self.link.digests()
                self.head_len = BHS_LEN + self.head[4] * 4 + (4 if hd else 0)
            if len(self.head) == self.head_len:
                self._header_done()
        return bytes(out)

    def _header_done(self) -> None:
        bhs = bytes(self.head[:BHS_LEN])
        self.opcode = bhs[0] & 0x3F
        dsl = int.from_bytes(bhs[5:8], "big")
        _, dd = self.link.digests()
        self.rest = dsl + (-dsl & 3) + (4 if dd and dsl else 0)
        self.flip_at = dsl // 2 if dsl and self.choose(self.opcode, bhs) else -1
        self.text = bytearray() if self.opcode == LOGIN_RSP and dsl else None
        self.text_len = dsl
        self.head.clear()
        self.head_len = BHS_LEN
        self._last_bhs = bhs
        if not self.rest:
            self._pdu_done()

    def _pdu_done(self) -> None:
        bhs = self._last_bhs
        if self.opcode == LOGIN_RSP and self.from_target:
            for pair in bytes(self.text or b"").split(b"\0"):
                key, eq, value = pair.decode(errors="replace").partition("=")
                if eq:
                    self.link.keys[key] = value
            # T=1, NSG=3 (full feature) and status class 0: digests apply from the next PDU, both ways
            if bhs[1] & 0x80 and bhs[1] & 0x03 == 3 and bhs[36] == 0:
                self.link.ffp = True
        self.text = None


def _rst(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (SO_LINGER 0), as a crashed peer or a NAT timeout would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class LoopbackProxy:
    """A listener on 127.0.0.1 that connects each accepted client to the target and hands the pair to
    ``_serve`` in a thread of its own (subclasses forward, reset or stall). ``close()`` stops it all."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepted = 0

    def start(self) -> None:
        t = threading.Thread(target=self._accept, name=type(self).__name__, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _rst(client)
                continue
            self._accepted += 1
            t = threading.Thread(target=self._serve, args=(client, upstream, self._accepted), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, client: socket.socket, upstream: socket.socket, index: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ResetProxy(LoopbackProxy):
    def __init__(self, target_host: str, target_port: int, reset_every: int | None = None,
                 max_resets: int = 1000, corrupt_every: int | None = None,
                 corrupt_pdus: dict[int, int] | None = None, max_corruptions: int = 1 << 30,
                 corrupt_seed: int = 1) -> None:
        super().__init__(target_host, target_port)
        self.corrupt_every = corrupt_every
        self.corrupt_pdus = dict(corrupt_pdus or {})
        self.max_corruptions = max_corruptions
        self.corrupted: list[tuple[int, int, int]] = []  # (opcode, ITT, DataSN) of each PDU hit
        self.seen: dict[int, int] = {}  # opcode -> PDUs with data seen (all connections), for corrupt_pdus
        self.corruptions = 0
        # one generator per opcode: its draws do not depend on how the two directions interleave
        self._random = {op: random.Random(corrupt_seed * 256 + op) for op in self.corrupt_pdus}
        self._returned = 0
        self.reset_every = reset_every
        self.max_resets = max_resets
        self.resets = 0
        self.forwarded = 0  # initiator -> target bytes since the last reset
        self._open: set[socket.socket] = set()
        self.start()

    def _serve(self, client: socket.socket, upstream: socket.socket, index: int) -> None:
        for s in (client, upstream):
            s.setblocking(False)
            self._open.add(s)
        link = _Link()
        streams = {client: PduStream(link, False, self._choose), upstream: PduStream(link, True, self._choose)}
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    src, dst = key.fileobj, key.data
                    try:
                        data = src.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not data:
                        return
                    if src is client and self._count(len(data)):
                        return
                    if src is upstream and self.corrupt_every:
                        data = self._corrupt(data)
                    if self.corrupt_pdus:
                        data = streams[src].feed(data)
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
        except OSError:
            return
        finally:
            sel.close()
            for s in (client, upstream):
                self._open.discard(s)
                _rst(s)

    def _count(self, n: int) -> bool:
        """Account ``n`` initiator bytes; True when this connection must be reset now."""
        if self.reset_every is None:
            return False
        with self._lock:
            self.forwarded += n
            if self.forwarded >= self.reset_every and self.resets < self.max_resets:
                self.forwarded = 0
                self.resets += 1
                return True
        return False

    def _corrupt(self, data: bytes) -> bytes:
        before = self._returned
        self._returned += len(data)
        if self._returned // self.corrupt_every == before // self.corrupt_every:
            return data
        self.corruptions += 1
        pos = len(data) // 2
        return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]

    def _choose(self, opcode: int, bhs: bytes) -> bool:
        """Whether this PDU (it carries data) gets a flipped payload byte: one in N of its opcode."""
        one_in = self.corrupt_pdus.get(opcode)
        if one_in is None:
            return False
        with self._lock:
            self.seen[opcode] = self.seen.get(opcode, 0) + 1
            if self._random[opcode].randrange(one_in) or self.corruptions >= self.max_corruptions:
                return False
            self.corruptions += 1
            self.corrupted.append((opcode, int.from_bytes(bhs[16:20], "big"), int.from_bytes(bhs[36:40], "big")))
            return True
