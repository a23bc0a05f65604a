"""pytest fixtures for real iSCSI targets on loopback (loaded as a plugin by tests/conftest.py).

- ``tgtd``: a factory ``tgtd(size_mb=64, chap=None, mutual=None, params=None, luns=1, backing=None)`` that
  returns a `vm.targets.Tgt` (portal, iqn, backing file paths, `url(lun=1)`, `update(key, value)`,
  `restart()`, `stop()`); every instance is stopped at teardown.
- ``istgt``: the same for istgt (disk is LUN 0).
"""

from __future__ import annotations

import contextlib
import shutil

import pytest

from vm.targets import Istgt, Tgt, free_port, make_backing, wait_port, wait_port_free

__all__ = ["Istgt", "Tgt", "free_port", "make_backing", "wait_port", "wait_port_free"]


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: run ./scripts/bootstrap.sh (make test does)")


def _targets(kind: type[Tgt | Istgt]):
    """A factory that starts ``kind`` targets, then (after the yield) stops them and removes their files."""
    _require(kind.__name__.lower() if kind is Istgt else "tgtd")
    started: list = []

    def factory(**kw):
        t = kind.start(**kw)  # makes (and on failure removes) its own /dev/shm workdir
        started.append(t)
        return t

    yield factory
    for t in started:
        with contextlib.suppress(Exception):
            t.stop()
        with contextlib.suppress(Exception):
            shutil.rmtree(t.workdir)


@pytest.fixture
def tgtd():
    """Factory fixture: ``t = tgtd(size_mb=64, chap=("u", "s"), params={"ImmediateData": "No"})``."""
    yield from _targets(Tgt)


@pytest.fixture
def istgt():
    """Factory fixture for istgt: ``t = istgt(chap=("u", "s"), mutual=("tu", "ts"), digest="Auto")``."""
    yield from _targets(Istgt)
