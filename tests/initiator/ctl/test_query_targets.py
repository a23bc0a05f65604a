"""discover, inquiry, capacity and luns against real targets (tgtd, istgt), checked against libiscsi."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.initiator.ctl.helpers import ok_json, one_line_error, uiscsictl

pytestmark = pytest.mark.target


def test_discover_lists_the_target_and_its_portal(tgtd):
    t = tgtd(size_mb=8)
    r = uiscsictl("discover", f"127.0.0.1:{t.port}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"127.0.0.1:{t.port},1 {t.iqn}\n"
    doc = ok_json("discover", f"127.0.0.1:{t.port}")
    assert doc["targets"] == [{"name": t.iqn, "portals": [{"address": "127.0.0.1", "port": t.port, "tpgt": 1}]}]


def test_inquiry_agrees_with_libiscsi(tgtd):
    t = tgtd(size_mb=8)
    inq = subprocess.run(["iscsi-inq", t.url(1)], capture_output=True, text=True, timeout=30, check=True).stdout
    doc = ok_json("inquiry", t.url(1))
    assert f"Vendor:{doc['vendor']}" in inq.replace(" ", "") and f"Product:{doc['product']}" in inq
    assert doc["device_type_name"] == "disk" and doc["qualifier"] == 0
    assert {0x00, 0x80, 0x83, 0xB0, 0xB2} <= set(doc["vpd_pages"])
    assert doc["serial"] and any(d["type"] == "NAA" for d in doc["designators"])
    assert doc["provisioning"]["unmap"] is False
    text = uiscsictl("inquiry", t.url(1)).stdout
    assert "vendor" in text and doc["product"] in text and "identifiers" in text


def test_capacity_matches_the_backing_file_and_libiscsi(tgtd):
    t = tgtd(size_mb=24)
    doc = ok_json("capacity", t.url(1))
    assert doc["block_size"] * doc["blocks"] == os.path.getsize(t.backing[0]) == 24 << 20
    rc16 = subprocess.run(["iscsi-readcapacity16", t.url(1)], capture_output=True, text=True, timeout=30,
                          check=True).stdout
    assert f"Totalsize:{24 << 20}" in rc16.replace(" ", "")
    text = uiscsictl("capacity", t.url(1)).stdout
    assert f"blocks      {doc['blocks']}" in text and "24.0 MiB" in text


def test_luns_lists_controller_and_every_disk(tgtd):
    t = tgtd(size_mb=8, luns=2)
    doc = ok_json("luns", f"iscsi://127.0.0.1:{t.port}/{t.iqn}")
    assert [e["lun"] for e in doc["luns"]] == [0, 1, 2]
    assert doc["luns"][1]["type"] == "disk" and doc["luns"][2]["size"] == 8 << 20
    assert doc["luns"][0]["size"] is None
    text = uiscsictl("luns", t.url(1)).stdout.splitlines()
    assert text[0].split() == ["LUN", "TYPE", "VENDOR", "PRODUCT", "SIZE"] and len(text) == 4


def test_istgt_lun0_capacity_and_inquiry(istgt):
    t = istgt(size_mb=16)
    assert ok_json("capacity", t.url(0))["blocks"] * 512 == 16 << 20
    assert ok_json("inquiry", t.url(0))["device_type_name"] == "disk"


def test_istgt_demanding_header_digests_is_refused_clearly_and_works_when_offered(istgt):
    t = istgt(size_mb=4, digest="Header")
    start = time.monotonic()
    err = one_line_error(uiscsictl("capacity", "--timeout", "5", t.url(0)))
    assert "HeaderDigest" in err and time.monotonic() - start < 5 + 5
    assert ok_json("capacity", t.url(0) + "?header_digest=crc32c")["blocks"] == 8192


def test_discover_on_istgt(istgt):
    t = istgt(size_mb=4)
    doc = ok_json("discover", f"127.0.0.1:{t.port}")
    assert [x["name"] for x in doc["targets"]] == [t.iqn]


def test_a_lun_that_does_not_exist_is_named_in_the_error(tgtd):
    t = tgtd(size_mb=4)
    err = one_line_error(uiscsictl("capacity", t.url(7)))
    assert err == "uiscsictl: READ CAPACITY(16): CHECK CONDITION, ILLEGAL REQUEST: logical unit not supported\n"
