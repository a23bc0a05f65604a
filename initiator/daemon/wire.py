"""The JSON form of a configured target on the control socket (both halves, so they cannot drift).

uiscsictl builds it with `to_wire` after resolving the address; uiscsid rebuilds a `TargetConf` with
`from_wire`, trusting nothing: an address must already be an IP (the daemon does no DNS), and every
field is type- and range-checked. Secrets travel inline over the root-only socket; file names do not.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict

from ..ctl.config import DEFAULT_PORT, MAX_CONNECTIONS, MAX_LUN, Chap, TargetConf, valid_iscsi_name


def to_wire(target: TargetConf, address: str, default_initiator: str) -> dict:
    """The JSON form the daemon gets: ``address`` is already resolved; secrets inline, no file names."""
    d = asdict(target)
    d["address"] = address
    d["initiator_name"] = target.initiator_name or default_initiator
    for key in ("chap", "mutual"):
        if d[key]:
            d[key] = {"user": d[key]["user"], "secret": d[key]["secret"]}
    d["luns"] = list(target.luns)
    return d


def from_wire(d: object) -> TargetConf:
    """Validate a target pushed over the control socket (the daemon trusts no input); raise ValueError."""
    if not isinstance(d, dict):
        raise ValueError("a target must be a JSON object")  # noqa: TRY004 - one error type for callers
    name = d.get("name")
    if not isinstance(name, str) or not name or len(name) > 128:
        raise ValueError("a target needs a 'name' of 1 to 128 characters")

    def need(key: str, kind: type | tuple, default: object = None) -> object:
        value = d.get(key, default)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise ValueError(f"target {name!r}: bad {key!r}: {value!r}")
        return value

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
        creds.append(Chap(c["user"], c["secret"], "") if c else None)
    return TargetConf(name=name, address=address, port=port, target_name=target_name,
                      initiator_name=initiator, chap=creds[0], mutual=creds[1],
                      header_digest=bool(need("header_digest", bool, False)),
                      data_digest=bool(need("data_digest", bool, False)), connections=connections,
                      discovery=discovery, enabled=bool(need("enabled", bool, True)),
                      replacement_timeout=float(timeout), luns=tuple(sorted(set(luns))),
                      where=str(d.get("where", "")))
