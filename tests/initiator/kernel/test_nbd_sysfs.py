"""What /sys/block says about an NBD index that does not exist: nothing attached, nobody using it."""

from __future__ import annotations

from initiator.kernel import nbd_sysfs as nbd


def test_an_unattached_index_has_no_users():
    assert nbd.users(99999) == []
    assert not nbd.is_connected(99999)
