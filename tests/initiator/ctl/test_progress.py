"""Sizes with binary suffixes, human-readable byte counts, and the progress bar drawn only on a terminal."""

from __future__ import annotations

import io

import pytest

from initiator.ctl.progress import Progress, human_bytes, parse_size


def test_sizes_parse_with_binary_suffixes():
    assert [parse_size(t) for t in ("512", "4k", "4K", "1M", "1MiB", "2g")] == [512, 4096, 4096, 1 << 20,
                                                                              1 << 20, 2 << 30]
    with pytest.raises(ValueError):
        parse_size("lots")


def test_human_bytes():
    assert human_bytes(512) == "512 B" and human_bytes(64 << 20) == "64.0 MiB"


def test_progress_bar_draws_only_when_enabled():
    on, off = io.StringIO(), io.StringIO()
    p = Progress(1000, "cp", stream=on, enabled=True)
    q = Progress(1000, "cp", stream=off, enabled=False)
    for bar in (p, q):
        bar.advance(1000)
        bar.finish()
    assert "100%" in on.getvalue() and on.getvalue().endswith("\n") and "cp [" in on.getvalue()
    assert off.getvalue() == ""
