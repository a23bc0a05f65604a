"""uiscsictl on uvloop and on asyncio's own loop against tgtd: the event-loop choice changes nothing else."""

from __future__ import annotations

import os

import pytest

from tests.initiator.ctl.helpers import ok_json, sha256

pytestmark = pytest.mark.target


def test_tools_also_run_on_uvloop_when_asked(tgtd, tmp_path):
    pytest.importorskip("uvloop")
    t = tgtd(size_mb=4)
    env = {"UISCSI_EVENT_LOOP": "uvloop"}
    assert ok_json("capacity", t.url(1), env=env)["blocks"] == 8192
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(4 << 20))
    ok_json("cp", str(src), t.url(1), env=env)
    assert sha256(t.backing[0]) == sha256(src)
    assert ok_json("perf", t.url(1), "--block-size", "4k", "--seconds", "0.3", env=env)["ios"] > 0
