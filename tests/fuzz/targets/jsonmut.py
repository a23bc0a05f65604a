"""A structure-aware mutator for JSON lines: byte flips rarely make new valid JSON, this does.

It parses one line of the input, changes one value (another type, a word the daemon knows, a number
at the edge, a deeply nested array, integers too big for a float or for Python's digit limit), adds or
drops a key, or repeats a line, and
writes the input back; inputs that are not JSON go to libFuzzer's own mutation.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

_MARK = "\x01raw\x01"
_RAW = ("[" * 3000 + "]" * 3000, "9" * 5000, "1" + "0" * 400, "-" + "9" * 400, "1e999", "-1e999", "1e308",
        "NaN", "Infinity", "-0", "1.0e-400", '"\\ud800"', '"\\u0000"')
_SCALARS = (None, True, False, 0, -1, 1, 65536, 2**31, 2**64, 0.5, -0.5, "", "x", "\x00", "ℕ", " ")


def _slots(obj: object, out: list, depth: int = 0) -> None:
    if depth > 6:
        return
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        out.append((obj, key))
        _slots(value, out, depth + 1)


def _value(rng: random.Random, words: tuple[str, ...]) -> object:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(_SCALARS)
    if kind == 1:
        return rng.choice(words)
    if kind == 2:
        return [rng.choice(_SCALARS + words) for _ in range(rng.randrange(3))]
    if kind == 3:
        return {rng.choice(words): rng.choice(_SCALARS + words) for _ in range(rng.randrange(3))}
    if kind == 4:
        return rng.randrange(-2**40, 2**40)
    return _MARK


def mutate_json_lines(data: bytes, max_size: int, seed: int, fallback: Callable[[bytes, int], bytes],
                      words: tuple[str, ...]) -> bytes:
    rng = random.Random(seed)
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    try:
        obj = json.loads(lines[i])
    except (ValueError, RecursionError):
        return fallback(data, max_size)
    if rng.random() < 0.2:
        return fallback(data, max_size)
    slots: list = []
    _slots(obj, slots)
    op = rng.randrange(4)
    if slots and op < 2:
        parent, key = rng.choice(slots)
        parent[key] = _value(rng, words)
    elif slots and op == 2 and isinstance(rng.choice(slots)[0], dict):
        parent, key = rng.choice(slots)
        if isinstance(parent, dict):
            del parent[key]
    else:
        dicts = [obj] + [p[k] for p, k in slots if isinstance(p[k], dict)] if isinstance(obj, dict) else []
        if dicts:
            rng.choice(dicts)[rng.choice(words)] = _value(rng, words)
        else:
            obj = _value(rng, words)
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
    raw_mark = json.dumps(_MARK)
    while raw_mark in text:
        text = text.replace(raw_mark, rng.choice(_RAW), 1)
    lines[i] = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"\n".join(lines)[:max_size]
