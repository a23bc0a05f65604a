"""The initiator's event-loop policy: uvloop when installed, asyncio when asked for (or uvloop is absent)."""

import asyncio
import shutil
import subprocess
from pathlib import Path

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


@pytest.mark.skipif(not shutil.which("/usr/bin/python3"), reason="no Debian python3")
def test_the_loop_runs_on_debians_own_python_and_uvloop_as_the_package_does():
    """The package runs on Debian 12's python3 and python3-uvloop 0.17, which has no uvloop.run()."""
    code = ("import asyncio\nfrom initiator.io import eventloop\n"
            "async def f():\n    return type(asyncio.get_running_loop()).__module__\n"
            "print(eventloop.run(f()))\n")
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(["/usr/bin/python3", "-c", code], check=False, cwd=root, capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    has_uvloop = subprocess.run(["/usr/bin/python3", "-c", "import uvloop"], check=False,
                                capture_output=True).returncode == 0
    assert out.stdout.strip() == ("uvloop" if has_uvloop else "asyncio")
