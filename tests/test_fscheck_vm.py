"""vm/fscheck/guest: a LUN the host does not read, formatted and checked from a guest over iSCSI."""

from __future__ import annotations

import pytest

from vm.fscheck.guest import LunAccess, in_guest
from vm.fscheck.host import check

pytestmark = [pytest.mark.vm, pytest.mark.target]


def test_format_then_check_an_xfs_lun_in_one_guest_boot(tgtd, tmp_path):
    """The guest makes an xfs with a payload on the LUN and checks it; the host's own check of the
    backing file (which the guest never saw) agrees on both the filesystem and the payload."""
    t = tgtd(size_mb=320)
    conf = (f"initiatorname iqn.2026-11.test.bootkit:fscheck-guest\ntarget mine {{\n"
            f"    targetaddr 10.0.2.2 port {t.port}\n    targetname {t.iqn}\n    lun 1\n}}\n")
    g = in_guest(LunAccess(conf, "mine", 1), "xfs", tmp_path / "guest", ops=("format", "check"), payload_mb=2)
    assert g.exit_code == 0, g.console[-3000:]
    assert g.device and g.device.startswith("/dev/nbd") and g.digest and len(g.digest) == 64
    v = g.verdict
    assert v is not None and v.where == "guest" and v.check == "guest: xfs_repair -n"
    assert v.clean and v.payload_ok is True and v.payload_sha256 == g.digest
    host = check(t.backing[0], "xfs", expected=g.digest)
    assert host.clean and host.payload_ok is True
