"""`SessionParams`: where and how to log in. The one parameters type every entry point builds. No I/O.

uiscsictl's config parser (one per ``target`` block, inside a `daemon.wire.TargetConf`), its URL parser
(``iscsi://...``) and uiscsid's control wire all build a `SessionParams`; `io.session.open_session` takes
it. A new per-target setting is a field here with a default, so every entry point and the session get it
at once. It is frozen: derive variants with `dataclasses.replace`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..protocol.addressing import DEFAULT_PORT
from ..protocol.chap import DEFAULT_ALGORITHMS

MAX_CONNECTIONS = 16  # MC/S connections a session asks for at most (config `connections`, URL `max_connections`)
MAX_ERL = 1  # ErrorRecoveryLevel we may offer (config `erl`, URL `erl`): 0, or 1 for SNACK recovery (protocol.erl1)


@dataclass(frozen=True)
class Chap:
    """CHAP credentials: one way (ours, towards the target) or mutual (the target's, which we check)."""

    user: str
    secret: str = field(repr=False)
    secret_file: str = ""  # where uiscsictl read the secret; never sent to uiscsid


@dataclass(frozen=True)
class SessionParams:
    """Where and how to log in. ``target_name`` None opens a discovery session."""

    host: str  # an IP address for uiscsid (it does no DNS); uiscsictl may hold a name until it resolves it
    port: int = DEFAULT_PORT
    initiator_name: str = ""
    target_name: str | None = None
    chap: Chap | None = None
    mutual: Chap | None = None  # the target proves itself too (needs ``chap``)
    chap_algorithms: tuple[int, ...] = DEFAULT_ALGORITHMS  # CHAP_A values we offer, our preference first
    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1
    erl: int = 0  # ErrorRecoveryLevel offered; 1: digest errors are recovered by SNACK without a relogin
    login_timeout: float = 20.0
    replacement_timeout: float = 120.0  # how long a lost session may take to come back before commands fail
    # A command unanswered this long escalates (protocol.escalation): ABORT TASK, LOGICAL UNIT RESET, session
    # reinstatement, then EIO for it alone. 0: never (the one-shot tools, which have their own bound).
    command_timeout: float = 30.0  # Linux's SCSI disk default (/sys/block/sdX/device/timeout)
    abort_timeout: float = 15.0  # open-iscsi node.session.err_timeo.abort_timeout
    lu_reset_timeout: float = 30.0  # open-iscsi node.session.err_timeo.lu_reset_timeout
    nop_interval: float = 5.0  # ping a connection silent this long (0: never)
    nop_timeout: float = 10.0  # and drop it when the ping is not answered this fast
    proposals: Mapping[str, int | bool] = field(default_factory=dict)  # keys.Proposals overrides
    isid: bytes | None = None  # None: a fresh random ISID for each session opened

    @property
    def discovery(self) -> bool:
        return self.target_name is None

    @property
    def portal(self) -> str:
        """``host:port``, with an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def new_isid() -> bytes:
    """A random ISID of the "random" type (RFC 7143 11.12.5): 0x80, then 24 random bits, qualifier 0."""
    return bytes([0x80]) + os.urandom(3) + b"\0\0"
