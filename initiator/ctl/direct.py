"""What every one-shot tool shares: logging in under --timeout, retrying UNIT ATTENTION, printing results.

A one-shot tool opens its own session (no daemon), does a few commands and logs out. Login and every
control command are bounded by ``--timeout``; a target that stalls or talks nonsense turns into one
`ISCSIError` line, never a hang. Results go to stdout (text, or one JSON document with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TextIO, TypeVar

from ..errors import CommandTimeout, ISCSIError
from ..scsi import commands as scsi

T = TypeVar("T")


class ToolError(ISCSIError):
    """A request the tool cannot carry out as asked (sizes that do not fit, same file twice...)."""

IQN_DATE = "2026-11"
UA_RETRIES = 3


def default_initiator_name() -> str:
    """``iqn.2026-11.org.iscsi-bootkit:uiscsictl.HOST``, the host name reduced to IQN-safe characters."""
    host = re.sub(r"[^a-z0-9.-]+", "-", socket.gethostname().lower()).strip("-.") or "localhost"
    return f"iqn.{IQN_DATE}.org.iscsi-bootkit:uiscsictl.{host}"


def add_session_options(p: argparse.ArgumentParser) -> None:
    """Options of every tool that logs in itself."""
    p.add_argument("--initiator-name", metavar="IQN", default=None,
                   help="our iSCSI name (default: iqn.2026-11.org.iscsi-bootkit:uiscsictl.HOSTNAME)")


def initiator_name(args: argparse.Namespace) -> str:
    return getattr(args, "initiator_name", None) or default_initiator_name()


@asynccontextmanager
async def logged_in(config: Any, timeout: float, where: str) -> AsyncIterator[Any]:
    """Open a `transport.Session` for ``config`` within ``timeout`` s; log out (bounded) on the way out."""
    from ..io import session as transport  # the I/O layer: loaded only by tools that talk to a target

    try:
        async with asyncio.timeout(timeout):
            session = await transport.open_session(config)
    except TimeoutError:
        raise CommandTimeout(f"login to {where} did not complete within {timeout:g} s "
                             "(is it an iSCSI target? try a larger --timeout)") from None
    try:
        yield session
    finally:
        with suppress(ISCSIError, OSError, TimeoutError):
            async with asyncio.timeout(min(timeout, 5.0)):
                await session.logout()
        with suppress(ISCSIError, OSError, TimeoutError):
            await session.close()


async def bounded(what: str, timeout: float, make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` within ``timeout`` s, retrying UNIT ATTENTION (reported once after login or reset)."""
    try:
        async with asyncio.timeout(timeout):
            for attempt in range(UA_RETRIES):
                try:
                    return await make()
                except scsi.SCSIError as e:
                    if not scsi.is_unit_attention(e) or attempt == UA_RETRIES - 1:
                        raise
    except TimeoutError:
        raise CommandTimeout(f"{what} did not complete within {timeout:g} s") from None
    raise AssertionError("unreachable")


async def run_workers(worker: Callable[[], Awaitable[None]], count: int) -> None:
    """Run ``count`` copies of ``worker``; the first failure cancels the others and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(count):
                tg.create_task(worker())
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from None


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


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
    cells = [header, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)
