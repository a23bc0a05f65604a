"""Attach selection: netlink where the kernel has NBD's netlink family, the ioctls otherwise. Both kinds
are proven in QEMU guests (test_nbd_ioctl_vm, tests/initiator/daemon/test_uiscsid_vm); the host here
has no nbd module, so auto must fall back to the ioctls."""

from __future__ import annotations

import os

import pytest

from initiator.kernel import attach


def test_modes_resolve_to_an_interface():
    assert attach.resolve("nbd") == "ioctl"     # the old name stays accepted
    assert attach.resolve("ioctl") == "ioctl"
    assert attach.resolve("netlink") == "netlink"
    assert attach.resolve("none") == "none"
    with pytest.raises(ValueError, match="choose one of"):
        attach.resolve("kernel")


def test_auto_is_the_default_and_follows_the_kernel():
    assert attach.DEFAULT == "auto"
    want = "netlink" if attach.netlink_available() else "ioctl"
    assert attach.resolve("auto") == want


def test_the_netlink_family_exists_exactly_when_the_nbd_module_is_loaded():
    assert attach.netlink_available() == os.path.isdir("/sys/module/nbd")
