"""The NBD wire form: request and reply headers, refusals, and the flags a backend earns."""

from __future__ import annotations

import errno
import os

import pytest

from initiator.kernel import nbd_wire as nbd
from initiator.kernel.backends import FileBackend


def test_request_header_is_28_bytes_and_round_trips():
    req = nbd.Request(nbd.CMD_WRITE, nbd.CMD_FLAG_FUA, 0xDEADBEEF01, 4096, 512)
    raw = nbd.encode_request(req)
    assert len(raw) == 28 and raw[:4] == b"\x25\x60\x95\x13"
    assert nbd.parse_request(raw) == req and req.fua


def test_reply_header_is_16_bytes():
    raw = nbd.encode_reply(7, errno.EIO)
    assert len(raw) == 16 and raw[:4] == b"\x67\x44\x66\x98"
    assert nbd.REPLY.unpack(raw) == (nbd.REPLY_MAGIC, errno.EIO, 7)


def test_bad_magic_and_oversized_requests_are_refused():
    with pytest.raises(nbd.NbdError, match="magic"):
        nbd.parse_request(b"\0" * 28)
    with pytest.raises(nbd.NbdError, match="larger than"):
        nbd.parse_request(nbd.encode_request(nbd.Request(nbd.CMD_READ, 0, 1, 0, nbd.MAX_REQUEST + 512)))


def test_flags_follow_what_the_backend_can_do(tmp_path):
    f = tmp_path / "d.img"
    f.write_bytes(bytes(4096))
    b = FileBackend(str(f))
    flags = nbd.transmission_flags(b)
    assert flags & nbd.FLAG_SEND_FLUSH and flags & nbd.FLAG_SEND_FUA and not flags & nbd.FLAG_SEND_TRIM
    assert not flags & nbd.FLAG_READ_ONLY
    os.close(b.fd)
