"""What a target tells a session outside any command: small immutable event classes.

The session core queues them (`SessionCore.events`) for the layer above to act on: an Async Message asking
for a logout or announcing a drop, a Reject of a PDU no task owns, a SCSI asynchronous event. (A session's
own state changes are `session_state.StateChange`.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogoutRequested:
    """Async Message event 1 (or 4, renegotiation, which we answer the same way): log connection ``cid`` out
    within ``seconds``, then recover."""

    cid: int
    seconds: int


@dataclass(frozen=True, slots=True)
class ConnectionDropped:
    """Async Message event 2 or 3: the target drops connection ``cid`` (or the whole session)."""

    cid: int
    event: int
    time2wait: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A Reject of a PDU that no outstanding task owns; ``reason`` is its text."""

    cid: int
    reason: str


@dataclass(frozen=True, slots=True)
class ScsiEventReported:
    """Async Message event 0: a SCSI asynchronous event, with its sense data."""

    cid: int
    sense: bytes


TargetEvent = LogoutRequested | ConnectionDropped | Rejected | ScsiEventReported

