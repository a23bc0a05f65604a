"""`vm.scenarios.stream_writer`, the restart proof's guest-side writer, run on the host in a temp dir."""

from __future__ import annotations

import hashlib

from vm.scenarios.stream_writer import write_stream


def test_the_writer_records_every_file_it_fsyncs_and_stops_at_its_cap(tmp_path):
    d, r = tmp_path / "d", tmp_path / "r"
    d.mkdir()
    r.mkdir()
    assert write_stream(d, r, 4096, rate=1000, cap=5) == (5, 0)
    lines = (r / "manifest").read_text().splitlines()
    assert lines == (d / "MANIFEST").read_text().splitlines() and len(lines) == 5
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest
    assert (r / "writing").exists() and (r / "writer").read_text() == "5 0\n"
    assert len((r / "latency").read_text().splitlines()) == 5


def test_the_writer_stops_when_told(tmp_path):
    (tmp_path / "stop").touch()
    assert write_stream(tmp_path, tmp_path, 4096, rate=1000, cap=5) == (0, 0)
