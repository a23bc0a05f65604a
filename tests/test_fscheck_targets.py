"""vm/fscheck/remote: what a LUN holds, seen through a real target (tgtd, istgt with CHAP), read-only."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import pytest

from initiator.ctl.url import parse_url
from vm.fscheck.host import create
from vm.fscheck.probe import decide
from vm.fscheck.remote import EDGE, INITIATOR, probe_lun, read_edges

pytestmark = pytest.mark.target


def test_an_xfs_lun_is_seen_through_tgtd_and_refused_for_ext4(tgtd, tmp_path):
    lun = tmp_path / "lun.img"
    create(lun, "xfs", payload_mb=1)
    before = hashlib.sha256(lun.read_bytes()).hexdigest()
    t = tgtd(backing=[lun])
    url = parse_url(t.url(1), env={})
    found = probe_lun(url.session, url.lun)
    assert found.content.type == "xfs" and found.size == lun.stat().st_size
    d = decide(found.content, "ext4", created=False, allow_format=False, name=url.redacted())
    assert d.action == "refuse" and "holds xfs" in d.reason
    assert decide(found.content, "xfs", created=False, allow_format=False, name="x").action == "reuse"
    t.stop()
    assert hashlib.sha256(lun.read_bytes()).hexdigest() == before  # nothing was written


def test_the_edges_read_are_the_luns_first_and_last_mib(tgtd, tmp_path):
    lun = tmp_path / "lun.img"
    lun.write_bytes(bytes(range(256)) * (12 << 12))  # 12 MiB, every byte position distinct mod 256
    with open(lun, "r+b") as f:
        f.seek(-5, 2)
        f.write(b"tail!")
    t = tgtd(backing=[lun])
    url = parse_url(t.url(1), env={})
    params = dataclasses.replace(url.session, initiator_name=INITIATOR)
    size, chunks = asyncio.run(read_edges(params, url.lun, 20.0))
    data = lun.read_bytes()
    assert size == len(data) and [o for o, _ in chunks] == [0, len(data) - EDGE]
    assert all(data[o:o + len(c)] == c for o, c in chunks) and chunks[-1][1].endswith(b"tail!")


def test_a_blank_lun_behind_istgt_with_chap_from_the_environment(istgt):
    t = istgt(size_mb=64, chap=("admin", "secretsecret1"))
    env = {"LIBISCSI_CHAP_USERNAME": "admin", "LIBISCSI_CHAP_PASSWORD": "secretsecret1"}
    url = parse_url(t.url(0), env=env)
    found = probe_lun(url.session, url.lun)
    assert found.content.empty and found.size == 64 << 20
    assert decide(found.content, "btrfs", created=False, allow_format=False, name="x").action == "refuse"
