"""pytest fixtures for LIO, the kernel's iSCSI target, in one QEMU guest (loaded as a plugin by conftest).

- ``lio_guest`` (session): boots the guest once (vm.lio.LioGuest); skipped or failed like every VM test
  (see vm/pytest_plugin.py's ``vm_boot_files``). It is powered off after the last test that uses ``lio``,
  not at the end of the session; its boot and setup times are printed then.
- ``lio`` (function): a factory ``lio(chap=None, mutual=None, params=None, acls=())`` that resets the
  guest's LIO and configures it (``lio.retire()`` powers a damaged guest off; the next test boots another), returning a `vm.lio.Lio` (``url(lun=0)``, ``portal``, ``backing``,
  ``update(key, value)``, ``set_auth``, ``add_acl``, ``drop_sessions(down_for)``, ``connections(iqn)``,
  ``log()``, ``chap_algorithms()``). One live configuration per test: a second call reconfigures.
- ``uiscsid_reloaded(workdir, config)``: a uiscsid with that uiscsi.conf reloaded into it.
- the marker ``lio_last``: the test runs after every other LIO test (for tests that damage LIO's kernel).

The LIO tests take the initiator's API from here only (the names below ``# initiator``), so that a move
of the initiator's modules is mended in one place.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

# initiator: everything the LIO tests use of it
from initiator.errors import AuthenticationError, ISCSIError, LoginError, NegotiationError  # noqa: F401
from initiator.io.params import SessionParams  # noqa: F401
from initiator.io.session import open_session  # noqa: F401
from initiator.protocol import pdu  # noqa: F401  (re-exported)
from initiator.protocol.keys import Proposals  # noqa: F401
from vm.lio import Lio, LioGuest


@contextlib.contextmanager
def uiscsid_reloaded(workdir: Path, config: str, expect_rc: int = 0):
    """A uiscsid (``--attach none``) in ``workdir`` with ``config`` (uiscsi.conf text) pushed by ``uiscsictl
    reload --wait``, whose exit status must be ``expect_rc``; yields the daemon (tests' `Uiscsid`)."""
    from tests.initiator.ctl.helpers import uiscsictl
    from tests.initiator.daemon.test_uiscsid_targets import Uiscsid

    conf = workdir / "uiscsi.conf"
    conf.write_text(config)
    daemon = Uiscsid(workdir)
    try:
        r = uiscsictl("-s", daemon.sock, "reload", "-f", str(conf), "--wait", "20")
        assert r.returncode == expect_rc, r.stderr
        yield daemon
    finally:
        daemon.stop()


class LioGuests:
    """The session's LIO guest, booted again if a test killed the last one (a malformed SNACK can panic
    LIO's kernel: see test_lio_erl1); the dead guest's last console lines are printed for the record."""

    def __init__(self, boot_files, tmp_path_factory) -> None:
        self.boot_files, self.tmp_path_factory = boot_files, tmp_path_factory
        self.guest: LioGuest | None = None
        self.boots = 0

    def current(self) -> LioGuest:
        if self.guest is not None and not self.guest.alive:
            print(f"\nthe LIO guest died; its console ended with:\n{self.guest.tail(40)}", file=sys.stderr)
            self.guest.stop()
            self.guest = None
        if self.guest is None:
            self.guest = LioGuest.boot(self.tmp_path_factory.mktemp("lio"), boot_files=self.boot_files)
            self.boots += 1
        return self.guest

    def retire(self) -> None:
        """Power off the current guest quietly (a test left LIO's kernel state damaged); the next test that
        needs LIO boots a fresh one."""
        if self.guest is not None:
            self.guest.stop()
            self.guest = None

    def stop(self) -> None:
        if self.guest is not None:
            self.guest.stop()
            print(f"\nLIO guest: boot {self.guest.boot_seconds} s, LIO setup {self.guest.setup_seconds} s, "
                  f"{self.boots} boot(s)", file=sys.stderr)
            self.guest = None


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "lio_last: runs after every other LIO test (it leaves LIO's kernel "
                                       "state damaged)")


def pytest_collection_modifyitems(session, config, items) -> None:
    """Tests marked ``lio_last`` go right after the last other test that uses ``lio``."""
    last = [item for item in items if item.get_closest_marker("lio_last")]
    if not last:
        return
    rest = [item for item in items if not item.get_closest_marker("lio_last")]
    uses = [n for n, item in enumerate(rest) if "lio" in getattr(item, "fixturenames", ())]
    at = uses[-1] + 1 if uses else len(rest)
    items[:] = rest[:at] + last + rest[at:]


@pytest.fixture(scope="session")
def lio_guest(vm_boot_files, tmp_path_factory):
    """The session's LIO guests (`LioGuests`): one, unless a test kills it."""
    guests = LioGuests(vm_boot_files, tmp_path_factory)
    guests.current()
    yield guests
    guests.stop()


@pytest.fixture
def lio(lio_guest, request):
    """Factory fixture: ``t = lio(chap=("u", "secret"), params={"MaxConnections": "4"})``."""
    def factory(**kw) -> Lio:
        t = Lio.start(lio_guest.current(), **kw)
        print(f"LIO reconfigured in {t.reconfigure_seconds} s")
        return t

    factory.retire = lio_guest.retire
    yield factory
    items = request.session.items
    later = items[items.index(request.node) + 1:] if request.node in items else []
    if not any("lio" in getattr(item, "fixturenames", ()) for item in later):
        lio_guest.stop()  # no LIO test is left: an idle TCG guest still costs a fifth of a core
