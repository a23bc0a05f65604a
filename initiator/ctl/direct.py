"""What every tool that talks to a target directly (no daemon) shares: its session, bounded waits, workers.

A one-shot tool opens its own session, does a few commands and logs out. Login and every control command
are bounded by ``--timeout``; a target that stalls or talks nonsense turns into one `ISCSIError` line,
never a hang. (A UNIT ATTENTION is retried by the session core, not here.) Output is `output`'s job.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

from ..errors import CommandTimeout, ISCSIError
from ..io.params import SessionParams
from ..io.session import Session, open_session

T = TypeVar("T")


class ToolError(ISCSIError):
    """A request the tool cannot carry out as asked (sizes that do not fit, same file twice...)."""

IQN_DATE = "2026-11"


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


def tool_params(params: SessionParams, args: argparse.Namespace, **overrides: Any) -> SessionParams:
    """``params`` (from a URL) as this tool logs in: our initiator name, the --timeout for the login."""
    return dataclasses.replace(params, initiator_name=initiator_name(args), login_timeout=args.timeout,
                               **overrides)


@asynccontextmanager
async def logged_in(params: SessionParams, timeout: float, where: str) -> AsyncIterator[Session]:
    """Open a session for ``params`` within ``timeout`` s; log out (bounded) on the way out."""
    try:
        async with asyncio.timeout(timeout):
            session = await open_session(params)
    except TimeoutError:
        raise CommandTimeout(f"login to {where} did not complete within {timeout:g} s "
                             "(is it an iSCSI target? try a larger --timeout)") from None
    if (notice := session.connections_notice()) is not None:
        print(f"uiscsictl: notice: {notice}", file=sys.stderr)
    try:
        yield session
    finally:
        with suppress(ISCSIError, OSError, TimeoutError):
            async with asyncio.timeout(min(timeout, 5.0)):
                await session.logout()
        with suppress(ISCSIError, OSError, TimeoutError):
            await session.close()


async def bounded(what: str, timeout: float, make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` within ``timeout`` s."""
    try:
        async with asyncio.timeout(timeout):
            return await make()
    except TimeoutError:
        raise CommandTimeout(f"{what} did not complete within {timeout:g} s") from None


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
