"""The daemon's wait for by-iscsi links (reload --wait) and how uiscsictl names a missing one. The links
themselves, made by udev from the daemon's info file, are proven in the Debian guest
(tests/test_systemd_guest.py); here the targets are stand-ins whose links appear on a clock."""

from __future__ import annotations

import asyncio

from initiator.ctl.daemon_commands import _missing_link
from initiator.daemon.service import Service

MISSING = {"target": "data", "lun": 1, "device": "/dev/nbd0", "link": "/dev/disk/by-iscsi/iqn.x:d-lun1",
           "by": "udev"}


class LinkAfter:
    """A target whose one link shows up ``delay`` seconds after it is first asked about."""

    def __init__(self, delay: float | None) -> None:
        self.delay, self.since = delay, None

    def missing_links(self) -> list[dict]:
        now = asyncio.get_running_loop().time()
        self.since = self.since if self.since is not None else now
        return [] if self.delay is not None and now - self.since >= self.delay else [MISSING]


def wait(targets: dict, budget: float) -> tuple[list[dict], float]:
    async def run() -> tuple[list[dict], float]:
        svc = Service(attach="none")
        svc.targets = targets
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        missing = await svc._wait_for_links(t0 + budget)
        return missing, loop.time() - t0

    return asyncio.run(run())


def test_reload_wait_returns_as_soon_as_every_link_is_there():
    missing, took = wait({"a": LinkAfter(0.3), "b": LinkAfter(0.0)}, budget=5.0)
    assert missing == [] and 0.3 <= took < 2.0


def test_reload_wait_gives_up_at_its_deadline_and_names_what_is_missing():
    missing, took = wait({"a": LinkAfter(None)}, budget=0.5)
    assert missing == [MISSING] and 0.5 <= took < 2.0


def test_a_missing_link_is_one_line_naming_the_device_the_link_and_the_likely_cause():
    line = _missing_link(MISSING, 10)
    assert line.startswith("target data LUN 1: /dev/nbd0 is attached but /dev/disk/by-iscsi/iqn.x:d-lun1 did "
                           "not appear within 10 s")
    assert "61-uiscsi.rules" in line
    assert _missing_link({**MISSING, "by": "daemon"}, 3).endswith("the link is gone")
