"""How RFC 7143 names and addresses things: iSCSI names, the well-known port, a portal's text. Pure.

`parse_portal` is the one parser of ``host[:port][,tpgt]`` (an IPv6 address in brackets). A target's
TargetAddress (SendTargets, a login redirect) and the address a user types both go through it; the caller
turns `PortalError` into its own error, because who wrote the text decides whose fault it is (a target's
malformed TargetAddress is a TargetProtocolError, a user's typo a URLError).
"""

from __future__ import annotations

import re
from typing import NamedTuple

DEFAULT_PORT = 3260  # RFC 7143 13.1: the IANA well-known port for iSCSI
MAX_NAME_BYTES = 223  # RFC 7143 4.2.7.1

_IQN = re.compile(r"iqn\.\d{4}-\d{2}\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[A-Za-z0-9._:-]*)?$")
_EUI = re.compile(r"eui\.[0-9A-Fa-f]{16}$")
_NAA = re.compile(r"naa\.([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})$")
_BRACKETED = re.compile(r"[0-9A-Za-z:.%_-]+$")  # an IPv6 address, perhaps with a zone (fe80::1%eth0)
_NOT_IN_HOST = frozenset("/?#@%[]")


class PortalError(ValueError):
    """Text that is not a portal; the message says what is wrong, without the text itself."""


class Portal(NamedTuple):
    host: str
    port: int
    tpgt: int


def valid_iscsi_name(name: str) -> bool:
    """RFC 7143 iqn./eui./naa. name shapes (iqn lower case, at most 223 bytes)."""
    if len(name.encode()) > MAX_NAME_BYTES:
        return False
    return bool(_IQN.match(name) or _EUI.match(name) or _NAA.match(name))


def _number(text: str, what: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:  # not '²', which int() refuses
        raise PortalError(f"{what} {text!r} is not a number in {low}..{high}")
    return int(text)


def parse_portal(text: str, default_tpgt: int = 1) -> Portal:
    """``host``, ``host:port``, ``[v6]:port``, each with an optional ``,tpgt`` -> `Portal` (port 3260 by default)."""
    addr, comma, tag = text.partition(",")
    if not addr:
        raise PortalError("the host is missing")
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise PortalError("'[' without a closing ']'")
        host, rest = addr[1:end], addr[end + 1:]
        if rest and not rest.startswith(":"):
            raise PortalError(f"unexpected {rest!r} after the IPv6 address")
        port_text = rest[1:] if rest else None
        if host and not _BRACKETED.match(host):
            raise PortalError(f"{host!r} is not an IPv6 address")
    elif addr.count(":") == 1:
        host, port_text = addr.split(":")
    elif ":" in addr:
        raise PortalError("write an IPv6 address in brackets, e.g. [::1]:3260")
    else:
        host, port_text = addr, None
    if not host:
        raise PortalError("the host is missing")
    if not addr.startswith("[") and any(c.isspace() or c in _NOT_IN_HOST for c in host):
        raise PortalError(f"{host!r} is not a host name or address")
    port = DEFAULT_PORT if port_text is None else _number(port_text, "port", 1, 65535)
    tpgt = _number(tag, "portal group tag", 0, 65535) if comma else default_tpgt
    return Portal(host, port, tpgt)
