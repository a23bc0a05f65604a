"""Headless Chromium (Debian's ``chromium`` package) as a test peer: the DOM after load, and a screenshot.

Run as root, so without its sandbox; every network feature it has off (nothing here may be fetched), an
empty profile per call, device scale 1 so that CSS pixels are screenshot pixels.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--mute-audio", "--no-default-browser-check", "--proxy-server=127.0.0.1:9")  # a dead proxy: no network


def binary() -> str | None:
    return shutil.which("chromium")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = binary()
    if exe is None:
        raise FileNotFoundError("chromium is not installed: run ./scripts/bootstrap.sh (make test does)")
    with tempfile.TemporaryDirectory(prefix="bootkit-chromium-") as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def dump_dom(page: Path, width: int = 1400, height: int = 1000, timeout: float = 60.0) -> str:
    """The page's DOM after load (scripts run), as Chromium serialises it."""
    r = _run([f"--window-size={width},{height}", "--dump-dom", page.resolve().as_uri()], timeout)
    if r.returncode != 0 or "<html" not in r.stdout:
        raise RuntimeError(f"chromium --dump-dom failed ({r.returncode}): {r.stderr[-800:]}")
    return r.stdout


def screenshot(page: Path, png: Path, width: int, height: int, timeout: float = 60.0) -> Path:
    """A WIDTH x HEIGHT PNG of the page's viewport."""
    r = _run([f"--window-size={width},{height}", f"--screenshot={png.resolve()}", page.resolve().as_uri()],
             timeout)
    if r.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium --screenshot failed ({r.returncode}): {r.stderr[-800:]}")
    return png
