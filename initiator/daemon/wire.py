"""What uiscsid and uiscsictl must agree on (the role iscsid.h plays in OpenBSD). No I/O.

- where the control socket is (`DEFAULT_SOCKET`) and how a message looks on it: versioned JSON lines, at
  most `MAX_MESSAGE` bytes::

      request:  {"version": 1, "id": 7, "command": "show", "args": {"what": "summary"}}
      answer:   {"version": 1, "id": 7, "ok": true, "result": {...}}
      failure:  {"version": 1, "id": 7, "ok": false, "error": {"code": "not-found", "message": "..."}}

- `ControlError`, a refusal with a machine-readable code;
- the commands' fixed vocabularies (`SHOW_WHAT`, `LOG_LEVELS`);
- `TargetConf`, one configured target: uiscsictl's config parser builds it, `to_wire` sends it with the
  address resolved and the secrets inline (file names stay home), and uiscsid rebuilds it with
  `from_wire`, trusting nothing: an address must already be an IP (the daemon does no DNS), and every field
  is type- and range-checked.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from dataclasses import dataclass

from ..io.params import MAX_CONNECTIONS, MAX_ERL, Chap, SessionParams
from ..protocol.addressing import DEFAULT_PORT, valid_iscsi_name
from ..protocol.chap import algorithm_names, parse_algorithms
from ..scsi.lun import MAX_LUN

PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 20
DEFAULT_SOCKET = "/run/uiscsid.sock"
SHOW_WHAT = ("summary", "sessions", "luns", "stats")
LOG_LEVELS = ("verbose", "brief")


class ControlError(Exception):
    """A refused or failed control request; ``code`` is machine-readable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_message(obj: dict) -> bytes:
    """One message as a line of compact JSON."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode_message(line: bytes) -> dict:
    """One line back into a message; anything but a JSON object is a `ControlError`."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, an integer over the digit limit, deep nesting
        raise ControlError("bad-request", f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ControlError("bad-request", "a message must be a JSON object")
    return obj


def failure(rid: object, err: ControlError) -> dict:
    """The answer that reports ``err`` for request ``rid``."""
    return {"version": PROTOCOL_VERSION, "id": rid, "ok": False, "error": {"code": err.code, "message": err.message}}


@dataclass(frozen=True)
class TargetConf:
    """One ``target NAME { ... }`` block. ``luns == ()`` means every disk LUN the target has."""

    name: str
    session: SessionParams  # where and how to log in
    discovery: bool = False  # log in to every target a SendTargets here finds
    enabled: bool = True
    luns: tuple[int, ...] = ()
    where: str = ""  # file:line of the block, for uiscsictl's messages


def to_wire(target: TargetConf, address: str, default_initiator: str) -> dict:
    """The JSON form uiscsid gets: ``address`` is already resolved; secrets inline, no file names."""
    s = target.session
    return {"name": target.name, "address": address, "port": s.port, "target_name": s.target_name,
            "initiator_name": s.initiator_name or default_initiator,
            "chap": {"user": s.chap.user, "secret": s.chap.secret} if s.chap else None,
            "mutual": {"user": s.mutual.user, "secret": s.mutual.secret} if s.mutual else None,
            "header_digest": s.header_digest, "data_digest": s.data_digest, "connections": s.max_connections,
            "discovery": target.discovery, "enabled": target.enabled,
            "replacement_timeout": s.replacement_timeout, **{k: getattr(s, k) for k in COMMAND_TIMEOUTS},
            "luns": list(target.luns), "where": target.where, **_login_extras_to_wire(s)}


# SessionParams fields (seconds) of the command-timeout escalation, and their allowed ranges: the command
# timeout may be 0 (off); the TMF timeouts may not.
COMMAND_TIMEOUTS = {"command_timeout": (0.0, 86400.0), "abort_timeout": (0.1, 86400.0),
                    "lu_reset_timeout": (0.1, 86400.0)}


def _command_timeouts(name: str, need) -> dict[str, float]:
    defaults = SessionParams(host="")
    out = {}
    for key, (lo, hi) in COMMAND_TIMEOUTS.items():
        value = need(key, (int, float), getattr(defaults, key))
        if not (lo <= value <= hi):  # before float(): an integer may be too large for one
            raise ValueError(f"target {name!r}: {key} {value!r} is outside {lo:g}..{hi:g} s")
        out[key] = float(value)
    return out


def _login_extras_to_wire(s: SessionParams) -> dict:
    """The CHAP algorithms (by name, in order) and the ErrorRecoveryLevel to offer."""
    return {"chap_algorithms": algorithm_names(s.chap_algorithms), "erl": s.erl}


def _login_extras_from_wire(name: str, d: dict) -> dict:
    """`_login_extras_to_wire` read back, checked; absent keys keep the SessionParams defaults."""
    out: dict = {}
    algs = d.get("chap_algorithms")
    if algs is not None:
        if not (isinstance(algs, list) and all(isinstance(a, str) for a in algs)):
            raise ValueError(f"target {name!r}: 'chap_algorithms' must be a list of names")
        try:
            out["chap_algorithms"] = parse_algorithms(" ".join(algs))
        except ValueError as e:
            raise ValueError(f"target {name!r}: {e}") from None
    erl = d.get("erl", 0)
    if not isinstance(erl, int) or isinstance(erl, bool) or not 0 <= erl <= MAX_ERL:
        raise ValueError(f"target {name!r}: bad 'erl': {erl!r} (0 to {MAX_ERL})")
    out["erl"] = erl
    return out


def _field(d: dict, name: str, key: str, kind: type | tuple, default: object = None) -> object:
    """``d[key]`` (``default`` when absent) if it is a ``kind`` (a bool is never a number); else ValueError."""
    value = d.get(key, default)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        raise ValueError(f"target {name!r}: bad {key!r}: {value!r}")
    return value


DISCOVER_TIMEOUT = (20.0, 86400.0)  # a discover request's login bound in seconds: default, most


def discover_from_wire(args: dict) -> SessionParams:
    """A ``discover`` request's arguments (address, port, initiator_name, chap, timeout), checked as
    `from_wire` checks a discovery target; raise ValueError."""
    session = from_wire({**args, "name": "discover", "discovery": True, "target_name": None}).session
    default, most = DISCOVER_TIMEOUT
    timeout = _field(args, "discover", "timeout", (int, float), default)
    if not 0 < timeout <= most:
        raise ValueError(f"discover: timeout {timeout!r} is outside 0..{most:g} s")
    return dataclasses.replace(session, login_timeout=float(timeout))


def from_wire(d: object) -> TargetConf:
    """Validate a target pushed over the control socket (the daemon trusts no input); raise ValueError."""
    if not isinstance(d, dict):
        raise ValueError("a target must be a JSON object")  # noqa: TRY004 - one error type for callers
    name = d.get("name")
    if not isinstance(name, str) or not name or len(name) > 128:
        raise ValueError("a target needs a 'name' of 1 to 128 characters")

    def need(key: str, kind: type | tuple, default: object = None) -> object:
        return _field(d, name, key, kind, default)

    address = need("address", str)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"target {name!r}: {address!r} is not an IP address (uiscsictl resolves names; "
                         "the daemon does no DNS)") from None
    port = need("port", int, DEFAULT_PORT)
    connections = need("connections", int, 1)
    timeout = need("replacement_timeout", (int, float), 120.0)
    luns = need("luns", list, [])
    discovery = need("discovery", bool, False)
    target_name = d.get("target_name")
    initiator = d.get("initiator_name")
    if not 1 <= port <= 65535 or not 1 <= connections <= MAX_CONNECTIONS or not 0 <= timeout <= 86400:
        raise ValueError(f"target {name!r}: port, connections or replacement_timeout out of range")
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_LUN for n in luns):
        raise ValueError(f"target {name!r}: LUNs must be integers from 0 to {MAX_LUN}")
    if not (isinstance(initiator, str) and valid_iscsi_name(initiator)):
        raise ValueError(f"target {name!r}: bad initiator_name {initiator!r}")
    if not (target_name is None and discovery or isinstance(target_name, str) and valid_iscsi_name(target_name)):
        raise ValueError(f"target {name!r}: bad target_name {target_name!r}")
    creds = []
    for key in ("chap", "mutual"):
        c = d.get(key)
        if c is not None and not (isinstance(c, dict) and isinstance(c.get("user"), str)
                                  and isinstance(c.get("secret"), str) and c["secret"]):
            raise ValueError(f"target {name!r}: {key!r} needs a 'user' and a non-empty 'secret'")
        creds.append(Chap(c["user"], c["secret"]) if c else None)
    session = SessionParams(host=address, port=port, initiator_name=initiator, target_name=target_name,
                            chap=creds[0], mutual=creds[1], header_digest=bool(need("header_digest", bool, False)),
                            data_digest=bool(need("data_digest", bool, False)), max_connections=connections,
                            replacement_timeout=float(timeout), **_command_timeouts(name, need),
                            **_login_extras_from_wire(name, d))
    return TargetConf(name=name, session=session, discovery=discovery, enabled=bool(need("enabled", bool, True)),
                      luns=tuple(sorted(set(luns))), where=str(d.get("where", "")))
