"""The guest's serial console as data: timestamped lines and the harness's marker events.

Pure code: bytes go in (``feed``), complete lines come out, each stamped with host seconds since QEMU
started. Marker lines are printed by the guest's stage2 as ``bootkit-vm[NONCE] UPTIME EVENT [STATUS]``;
the per-run nonce keeps a command's own output from forging them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STAGE1_FAILED = "bootkit-vm: stage1 failed:"


@dataclass(frozen=True)
class ConsoleLine:
    """One console line; ``t`` is host seconds since QEMU was started."""

    t: float
    text: str


@dataclass(frozen=True)
class GuestEvent:
    """A stage2 marker: boot, rc-begin, rc-end, cmd-begin, cmd-end, shutdown-begin, shutdown-end, poweroff.

    ``uptime`` is the guest's /proc/uptime when it was printed, ``t`` the host time it was seen, and
    ``status`` the exit status for the *-end events.
    """

    name: str
    uptime: float
    t: float
    status: int | None = None


def marker_re(nonce: str) -> re.Pattern[str]:
    return re.compile(rf"bootkit-vm\[{re.escape(nonce)}\] (\d+(?:\.\d+)?) ([a-z-]+)(?: (-?\d+))?\s*$")


class LineAssembler:
    """Split a byte stream into lines; ``\\r`` is dropped and undecodable bytes are replaced."""

    def __init__(self, max_line: int = 65536) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        lines: list[str] = []
        while True:
            cut = self._buf.find(b"\n")
            if cut < 0:
                if len(self._buf) > self._max:  # bound memory on a runaway line
                    cut = self._max
                else:
                    return lines
                raw, self._buf = bytes(self._buf[:cut]), self._buf[cut:]
            else:
                raw, self._buf = bytes(self._buf[:cut]), self._buf[cut + 1:]
            lines.append(raw.decode("utf-8", "replace").replace("\r", ""))

    def flush(self) -> list[str]:
        rest, self._buf = bytes(self._buf), bytearray()
        return [rest.decode("utf-8", "replace").replace("\r", "")] if rest else []


def parse_event(pattern: re.Pattern[str], line: ConsoleLine) -> GuestEvent | None:
    """The marker event on ``line``, if any (it may follow output that lacked a final newline)."""
    m = pattern.search(line.text)
    if m is None:
        return None
    status = int(m.group(3)) if m.group(3) is not None else None
    return GuestEvent(m.group(2), float(m.group(1)), line.t, status)
