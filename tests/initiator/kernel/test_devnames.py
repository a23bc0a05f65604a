"""Stable device names: one name per LUN, links replaced atomically and relative like udev's."""

from __future__ import annotations

import os

from initiator.kernel.devnames import make_link, remove_link, stable_name


def test_one_name_per_lun():
    assert stable_name("iqn.2026-11.org.example:disk", 1) == "iqn.2026-11.org.example:disk-lun1"


def test_links_point_at_the_device_relatively_and_are_replaced(tmp_path):
    links = tmp_path / "disk" / "by-iscsi"
    dev = tmp_path / "nbd0"
    dev.write_bytes(b"")
    link = make_link(str(links), "t-lun1", str(dev))
    assert os.readlink(link) == os.path.relpath(dev, links) and os.path.samefile(link, dev)
    other = tmp_path / "nbd1"
    other.write_bytes(b"")
    assert make_link(str(links), "t-lun1", str(other)) == link and os.path.samefile(link, other)
    assert sorted(os.listdir(links)) == ["t-lun1"]  # no temporary link left behind
    remove_link(link)
    remove_link(link)  # already gone: fine
    assert not os.path.lexists(link)
