"""Control socket: JSON lines as uiscsid receives them, through the server's request path into the daemon.

Input: the bytes a client writes on the socket; each complete line (the server reads up to b"\\n") goes
to `ControlServer._answer` (daemon.control), the server's per-line step (decode, version, command and args
checks, then the real `Service.handle` of daemon.service: reload with `from_wire`'s validation of every
field, CHAP algorithms, ERL and command timeouts included, show, detach, log, discover, ping), and
the answer is encoded as the server would write it. Several lines share one daemon, so a reload's
targets are there for the show or detach that follows.

The only stand-in is the network: while an input runs, the daemon's `open_session` is replaced by a
connect that is refused, as for a target that is down (no packet leaves, no session starts).

The server answers every failure itself, so there is no clean exception: a crash is an answer with the
code "internal" (an unexpected exception inside; its own traceback is re-raised for the signature), an
answer that cannot be encoded, an answer that does not come within ANSWER_BOUND ("control-hang"), or
anything escaping.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import project as p
from . import OracleFailure, Target
from .jsonmut import mutate_json_lines

MAX_LINES = 16
ANSWER_BOUND = 0.5   # seconds: with the network refused, every answer is immediate; a stuck one is a hang
_DIR = Path(tempfile.mkdtemp(prefix="fuzz-control-"))
atexit.register(shutil.rmtree, _DIR, True)  # not reached under libFuzzer, whose runner gives a TMPDIR
_LOOP: list[asyncio.AbstractEventLoop] = []  # one loop for every input, made on first use
_TASKS: list[asyncio.Task] = []  # every task the input's requests started (the targets' login loops...)


def _task_factory(loop, coro, **kwargs) -> asyncio.Task:
    task = asyncio.Task(coro, loop=loop, **kwargs)
    _TASKS.append(task)
    return task


def _loop() -> asyncio.AbstractEventLoop:
    if not _LOOP:
        _LOOP.append(asyncio.new_event_loop())
        _LOOP[0].set_task_factory(_task_factory)
        atexit.register(_LOOP[0].close)
    return _LOOP[0]


async def _refused(params, counts=None):
    raise p.ConnectionLost(f"cannot connect to {params.host}:{params.port}: connection refused (fuzzing: no network)")


@contextlib.contextmanager
def _no_network():
    saved = [(mod, mod.open_session) for mod in p.OPEN_SESSION_USERS]
    for mod, _ in saved:
        mod.open_session = _refused
    try:
        yield
    finally:
        for mod, fn in saved:
            mod.open_session = fn


async def _serve(data: bytes) -> None:
    loop = asyncio.get_running_loop()
    daemon = p.Service(attach="none", link_dir=str(_DIR / "links"))
    inside: list[BaseException] = []

    async def handler(command: str, args: dict) -> dict:
        try:
            return await daemon.handle(command, args)
        except p.ControlError:
            raise
        except Exception as e:
            inside.append(e)
            raise

    server = p.ControlServer(str(_DIR / "uiscsid.sock"), handler)  # never bound: only its per-line step runs
    try:
        for line in data.split(b"\n")[:-1][:MAX_LINES]:  # bytes after the last newline: the read waits
            start = loop.time()
            try:
                async with asyncio.timeout(ANSWER_BOUND):
                    answer = await server._answer(line + b"\n")
            except TimeoutError:
                answer = None
            if answer is None or loop.time() - start >= ANSWER_BOUND:  # (a swallowed cancel returns late)
                raise OracleFailure("control-hang", f"no answer within {ANSWER_BOUND} s to {line[:120]!r}")
            p.wire_mod.encode_message(answer)
            if not answer.get("ok") and answer["error"]["code"] == "internal":
                if inside:
                    raise inside[0]
                p.wire_mod.decode_message(line)  # raises the original when decoding is what failed
                raise OracleFailure("control-internal", answer["error"]["message"])
    finally:  # the runtimes' login loops are all that runs: cancel them (no network, no device to undo)
        tasks = [t for t in _TASKS if t is not asyncio.current_task()]
        _TASKS.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for task in tasks:  # a task (a target's login loop...) that died of anything but the cancel: a crash
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()


def one_input(data: bytes) -> None:
    level = logging.getLogger().level
    try:
        with _no_network():
            _loop().run_until_complete(_serve(data))
    finally:
        logging.getLogger().setLevel(level)  # the log command changes it


def _line(rid: int, command: str, **args: object) -> bytes:
    return p.wire_mod.encode_message({"version": p.wire_mod.PROTOCOL_VERSION, "id": rid, "command": command,
                                      "args": args})


def seeds() -> Iterator[tuple[str, bytes]]:
    """Requests as uiscsictl writes them (ctl.client.ControlClient.call, daemon.wire.to_wire)."""
    iqn = "iqn.2026-11.org.example"
    session = p.SessionParams(host="db.example", port=3261, target_name=f"{iqn}:data",
                              chap=p.Chap("host1", "initiator-secret", "/etc/uiscsi/data.secret"),
                              mutual=p.Chap("data", "target-secret-x", "/etc/uiscsi/t.secret"),
                              chap_algorithms=(7, 5), header_digest=True, max_connections=2, erl=1,
                              command_timeout=10.0, abort_timeout=2.5, lu_reset_timeout=5.0)
    data = p.TargetConf(name="data", session=session, luns=(1, 2), where="/etc/uiscsi.conf:5")
    disc = p.TargetConf(name="disc", session=p.SessionParams(host="10.0.0.9"), discovery=True, enabled=False,
                        where="/etc/uiscsi.conf:9")
    wire = [p.to_wire(data, "127.0.0.1", f"{iqn}:host1"), p.to_wire(disc, "10.0.0.9", f"{iqn}:host1")]
    yield "reload", _line(1, "reload", targets=wire, wait=0.5, force=False)
    yield "session", (_line(1, "reload", targets=wire, wait=None, force=False) + _line(2, "show", what="summary")
                      + _line(3, "show", what="sessions") + _line(4, "show", what="luns")
                      + _line(5, "show", what="stats") + _line(6, "detach", name="data", force=True)
                      + _line(7, "ping"))
    yield "log", _line(1, "log", level="verbose") + _line(2, "log", level="brief")
    yield "discover", _line(1, "discover", address="127.0.0.1", port=3260, initiator_name=f"{iqn}:host1",
                            timeout=1.0)
    yield "refusals", (_line(1, "nope") + b'{"version": 2, "id": 3}\n' + b"[1, 2]\n" + b"not json\n"
                       + _line(4, "show", what="everything") + _line(5, "detach", name="ghost")
                       + _line(6, "reload", targets="all"))


_WORDS = ("version", "id", "command", "args", "reload", "show", "detach", "log", "discover", "ping", "targets", "wait",
          "force", "what", "summary", "sessions", "luns", "stats", "name", "level", "verbose", "brief", "address",
          "port", "timeout", "initiator_name", "target_name", "chap", "mutual", "user", "secret", "connections",
          "replacement_timeout", "header_digest", "data_digest", "discovery", "enabled", "where", "127.0.0.1", "::1",
          "iqn.2026-11.org.example:x", "chap_algorithms", "md5", "sha1", "sha256", "sha3-256", "erl",
          "command_timeout", "abort_timeout", "lu_reset_timeout")
DICTIONARY = tuple(f'"{w}"'.encode() for w in _WORDS) + (
    b"true", b"false", b"null", b"{", b"}", b"[", b"]", b":", b",", b"\n", b"1e999", b"-1", b"0.5", b"\\u0000")


def mutate(data: bytes, max_size: int, seed: int, fallback) -> bytes:
    return mutate_json_lines(data, max_size, seed, fallback, _WORDS)


TARGET = Target(name="control", doc="control socket JSON lines through the server into the daemon",
                clean=(), one_input=one_input, seeds=seeds, max_len=8192, dictionary=DICTIONARY, mutator=mutate)
