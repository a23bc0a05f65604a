"""How uiscsictl prints: one JSON document with --json, else text; and aligned tables."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO


def emit(args: argparse.Namespace, document: dict[str, Any], text: str, stream: TextIO | None = None) -> int:
    """Print ``document`` as JSON with --json, else ``text`` (to stdout unless told); return exit status 0."""
    out = stream or sys.stdout
    if args.json:
        out.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
    else:
        out.write(text if text.endswith("\n") else text + "\n")
    out.flush()
    return 0


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns, two spaces apart."""
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)
