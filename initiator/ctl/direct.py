"""What every tool that talks to a target directly (no daemon) shares: its session, bounded waits, workers.

A one-shot tool opens its own session, does a few commands and logs out. ``--timeout`` bounds it as
`bound` says (the query tools' whole run, cleanup included; each wait of cp and perf); a target that
stalls or talks nonsense turns into one `ISCSIError` line, never a hang. (A UNIT ATTENTION is retried by
the session core, not here.) Output is `output`'s job.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from ..errors import CommandTimeout, ISCSIError
from ..io.params import SessionParams
from ..io.session import Session, open_session
from .bound import CLEANUP_GRACE, Budget, start_watchdog

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
    """``params`` (from a URL) as this tool logs in: our initiator name, the --timeout for the login, and no
    command-timeout escalation (the tool's own bound fails a stalled command; nothing is retried)."""
    return dataclasses.replace(params, initiator_name=initiator_name(args), login_timeout=args.timeout,
                               command_timeout=0.0, **overrides)


def run_budget(args: argparse.Namespace) -> Budget:
    """A query tool's bound: --timeout covers the whole process, with the watchdog as its last resort
    when the process is uiscsictl's own (never when main() runs inside another program or a test)."""
    own = getattr(args, "own_process", False)
    budget = Budget(args.timeout, started=None if own else time.monotonic())
    if own:
        start_watchdog(budget, "uiscsictl")
    return budget


def wait_budget(args: argparse.Namespace) -> Budget:
    """cp's and perf's bound: --timeout covers each wait on the target."""
    return Budget(args.timeout, whole_run=False)


@asynccontextmanager
async def logged_in(params: SessionParams, budget: Budget, where: str) -> AsyncIterator[Session]:
    """Open a session for ``params`` within the budget; log out and close (bounded) on the way out."""
    try:
        async with asyncio.timeout(budget.wait()):
            session = await open_session(params)
    except TimeoutError:
        raise CommandTimeout(f"login to {where} did not complete within {budget.describe()} "
                             "(is it an iSCSI target? try a larger --timeout)") from None
    if (notice := session.connections_notice()) is not None:
        print(f"uiscsictl: notice: {notice}", file=sys.stderr)
    timed_out = True
    try:
        yield session
        timed_out = False
    except (ISCSIError, OSError) as e:
        timed_out = isinstance(e, CommandTimeout)
        raise
    finally:
        logout_bound = budget.logout(timed_out)
        answered = await leave(session, logout_bound)
    if not answered:        # the work is done, but a target that ignores a logout is a failure to report
        raise CommandTimeout(f"{where} did not answer the logout within {logout_bound:.3g} s")


async def leave(session: Session, logout_bound: float) -> bool:
    """Log out within ``logout_bound`` s and close within CLEANUP_GRACE / 2, then abort what is left.

    Returns False when the target did not answer the logout in time."""
    answered = True
    try:
        async with asyncio.timeout(logout_bound):
            await session.logout()
    except TimeoutError:
        answered = False
    except (ISCSIError, OSError):
        pass
    try:
        async with asyncio.timeout(CLEANUP_GRACE / 2):
            await session.close()
    except (ISCSIError, OSError, TimeoutError):
        session.drop_links("the tool's bound ran out while closing")
    return answered


async def bounded(what: str, budget: Budget, make: Callable[[], Awaitable[T]]) -> T:
    """Run ``make()`` within the budget's next wait."""
    try:
        async with asyncio.timeout(budget.wait()):
            return await make()
    except TimeoutError:
        raise CommandTimeout(f"{what} did not complete within {budget.describe()}") from None


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
