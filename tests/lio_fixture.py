"""pytest fixtures for LIO, the kernel's iSCSI target, in one QEMU guest (loaded as a plugin by conftest).

- ``lio_guest`` (session): boots the guest once (vm.lio.LioGuest); skipped or failed like every VM test
  (see vm/pytest_plugin.py's ``vm_boot_files``). It is powered off after the last test that uses ``lio``,
  not at the end of the session; its boot and setup times are printed then.
- ``lio`` (function): a factory ``lio(chap=None, mutual=None, params=None, acls=())`` that resets the
  guest's LIO and configures it, returning a `vm.lio.Lio` (``url(lun=0)``, ``portal``, ``backing``,
  ``update(key, value)``, ``set_auth``, ``add_acl``, ``drop_sessions(down_for)``, ``connections(iqn)``,
  ``log()``, ``chap_algorithms()``). One live configuration per test: a second call reconfigures.

The LIO tests take the initiator's API from here only (the names below ``# initiator``), so that a move
of the initiator's modules is mended in one place.
"""

from __future__ import annotations

import sys

import pytest

# initiator: everything the LIO tests use of it
from initiator.errors import AuthenticationError, ISCSIError, LoginError, NegotiationError  # noqa: F401
from initiator.io.params import SessionParams  # noqa: F401
from initiator.io.session import open_session  # noqa: F401
from initiator.protocol import pdu  # noqa: F401  (re-exported)
from initiator.protocol.keys import Proposals  # noqa: F401
from vm.lio import Lio, LioGuest


@pytest.fixture(scope="session")
def lio_guest(vm_boot_files, tmp_path_factory):
    """The one LIO guest of this test session."""
    guest = LioGuest.boot(tmp_path_factory.mktemp("lio"), boot_files=vm_boot_files)
    yield guest
    guest.stop()
    print(f"\nLIO guest: boot {guest.boot_seconds} s, LIO setup {guest.setup_seconds} s", file=sys.stderr)


@pytest.fixture
def lio(lio_guest, request):
    """Factory fixture: ``t = lio(chap=("u", "secret"), params={"MaxConnections": "4"})``."""
    def factory(**kw) -> Lio:
        t = Lio.start(lio_guest, **kw)
        print(f"LIO reconfigured in {t.reconfigure_seconds} s")
        return t

    yield factory
    items = request.session.items
    later = items[items.index(request.node) + 1:] if request.node in items else []
    if not any("lio" in getattr(item, "fixturenames", ()) for item in later):
        lio_guest.stop()  # no LIO test is left: an idle TCG guest still costs a fifth of a core
