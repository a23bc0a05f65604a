"""nbd_queue: the request size set on /dev/nbdN after attach follows sd's rule and the LUN's Block Limits."""

from __future__ import annotations

from initiator.kernel import nbd_queue


def test_request_size_is_sd_s_default_cap_unless_the_lun_or_the_device_says_less():
    assert nbd_queue.max_request_kb(32768, 512) == 1280
    assert nbd_queue.max_request_kb(32768, 512, max_transfer_blocks=1024) == 512
    assert nbd_queue.max_request_kb(32768, 4096, max_transfer_blocks=64, optimal_transfer_blocks=32) == 128
    assert nbd_queue.max_request_kb(256, 512) == 256
    assert nbd_queue.max_request_kb(32768, 512, max_transfer_blocks=1) == 1280     # nonsense limits are ignored
    assert nbd_queue.max_request_kb(32768, 65536, max_transfer_blocks=0) == 1280


def test_tune_writes_max_sectors_kb_only_when_it_changes(tmp_path):
    q = tmp_path / "nbd3" / "queue"
    q.mkdir(parents=True)
    (q / "max_hw_sectors_kb").write_text("32768\n")
    (q / "max_sectors_kb").write_text("128\n")
    assert nbd_queue.tune(3, 512, 2048, 0, sys_block=tmp_path) == {"max_sectors_kb": 1024}
    assert (q / "max_sectors_kb").read_text() == "1024\n"
    assert nbd_queue.tune(3, 512, 2048, 0, sys_block=tmp_path) == {}
    assert nbd_queue.tune(4, 512, sys_block=tmp_path) == {}           # no such device: nothing to do
