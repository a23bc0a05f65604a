"""The initiator's event-loop policy: uvloop when installed, asyncio when asked for (or uvloop is absent)."""

import asyncio

import pytest

from initiator.errors import ISCSIError
from initiator.io import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_is_the_default_when_installed():
    pytest.importorskip("uvloop")
    assert eventloop.choice({}) == "uvloop"
    assert eventloop.run(_loop_module(), {}).startswith("uvloop")


def test_asyncio_can_be_forced():
    assert eventloop.choice({"UISCSI_EVENT_LOOP": "asyncio"}) == "asyncio"
    assert eventloop.run(_loop_module(), {"UISCSI_EVENT_LOOP": "asyncio"}).startswith("asyncio")


def test_an_unknown_loop_name_is_a_clear_error():
    coro = _loop_module()
    with pytest.raises(ISCSIError, match="UISCSI_EVENT_LOOP='twisted'"):
        eventloop.run(coro, {"UISCSI_EVENT_LOOP": "twisted"})
