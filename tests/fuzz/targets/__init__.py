"""The fuzz targets: one module each, each exporting ``TARGET``, a `Target`.

A target turns one fuzz input (bytes) into a call of the code under test, the way production feeds it,
and declares which exceptions are the documented, clean way to refuse bad input (``clean``). Anything
else escaping ``one_input`` is a crash, and so is an `OracleFailure`: a check the target makes on a
result (a round trip that must hold, two parsers that must agree).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

NAMES = ("pdu", "login", "text", "config", "fstab", "control")


class OracleFailure(AssertionError):
    """A result broke a property the target checks; ``check`` names the property (the crash signature)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


@dataclass(frozen=True)
class Target:
    name: str
    doc: str
    clean: tuple[type[BaseException], ...]
    one_input: Callable[[bytes], None]
    seeds: Callable[[], Iterable[tuple[str, bytes]]]
    max_len: int = 4096
    dictionary: tuple[bytes, ...] = ()  # tokens libFuzzer splices into inputs (its -dict)
    # structure-aware mutation: (data, max_size, seed, libFuzzer's own mutate) -> new input
    mutator: Callable[[bytes, int, int, Callable[[bytes, int], bytes]], bytes] | None = None


def load(name: str) -> Target:
    """The target called ``name`` (imports its module, and through it the code under test)."""
    if name not in NAMES:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}").TARGET


# Feed patterns: how a byte stream is cut into the pieces a socket would deliver. 0 delivers it whole; after
# MAX_PIECES pieces the rest comes in one (keeps one input's cost bounded).
_CUTS = (0, 1, 3, 47, 48, 53, 4096, -1)
_CYCLE = (1, 7, 48, 5, 4096, 13, 52, 2)
MAX_PIECES = 64


def pieces(data: bytes, mode: int) -> Iterator[bytes]:
    """``data`` cut by feed pattern ``mode`` (0..7): whole, fixed sizes, or a cycle of odd sizes."""
    cut = _CUTS[mode & 7]
    if cut == 0:
        if data:
            yield data
        return
    pos = i = 0
    while pos < len(data):
        n = cut if cut > 0 else _CYCLE[i % len(_CYCLE)]
        if i == MAX_PIECES:
            n = len(data)
        yield data[pos:pos + n]
        pos += n
        i += 1
