"""libiscsi-style iSCSI URLs: ``iscsi://[user[%secret]@]host[:port]/IQN/LUN[?arg=value&...]``. Pure.

The same form that libiscsi's tools and qemu-img take, so one URL works with both. Query arguments:
``header_digest`` and ``data_digest`` (crc32c|none; libiscsi's crc32c-none/none-crc32c are accepted
too), ``target_user`` and ``target_password`` (mutual CHAP: the target proves itself to us),
``max_connections`` (MC/S). The environment variables ``LIBISCSI_CHAP_USERNAME``, ``..._PASSWORD``,
``..._TARGET_USERNAME`` and ``..._TARGET_PASSWORD`` supply secrets without putting them on the process
list; a value in the URL wins over the environment. Nothing is percent-decoded, as in libiscsi.
A portal alone (``HOST[:PORT]``, ``[v6addr]:PORT`` or ``iscsi://HOST[:PORT][/]``) is parsed by
`parse_portal` for discovery.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

DEFAULT_PORT = 3260
MAX_LUN = 16383
MAX_CONNECTIONS = 16
ENV_USER = "LIBISCSI_CHAP_USERNAME"
ENV_PASSWORD = "LIBISCSI_CHAP_PASSWORD"
ENV_TARGET_USER = "LIBISCSI_CHAP_TARGET_USERNAME"
ENV_TARGET_PASSWORD = "LIBISCSI_CHAP_TARGET_PASSWORD"
_DIGESTS = {"crc32c": True, "none": False, "crc32c-none": True, "none-crc32c": True}
_QUERY_KEYS = ("header_digest", "data_digest", "target_user", "target_password", "max_connections")


class URLError(ValueError):
    """The text is not a usable iSCSI URL; the message says what is wrong and shows the expected form."""


FORM = "iscsi://[user[%secret]@]host[:port]/IQN/LUN"


@dataclass(frozen=True)
class ISCSIURL:
    """A parsed URL. ``user``/``password`` are CHAP towards the target; ``target_*`` are mutual CHAP."""

    host: str
    port: int
    target: str
    lun: int
    user: str | None = None
    password: str | None = None
    target_user: str | None = None
    target_password: str | None = None
    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1

    @property
    def portal(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def redacted(self) -> str:
        """The URL with every secret replaced by ``***`` (for logs and error messages)."""
        auth = ""
        if self.user:
            auth = f"{self.user}%***@" if self.password else f"{self.user}@"
        return f"iscsi://{auth}{self.portal}/{self.target}/{self.lun}"

    def session_kwargs(self) -> dict[str, Any]:
        """The `transport.SessionConfig` fields this URL decides (the caller adds initiator_name etc.)."""
        return {"host": self.host, "port": self.port, "target_name": self.target,
                "chap_user": self.user if self.password is not None else None,
                "chap_secret": self.password, "mutual_user": self.target_user,
                "mutual_secret": self.target_password, "header_digest": self.header_digest,
                "data_digest": self.data_digest, "max_connections": self.max_connections}

    def session_config(self, initiator_name: str, **overrides: Any) -> Any:
        """Build a `transport.SessionConfig` (imported here: url.py stays importable without asyncio code)."""
        from ..io.session import SessionConfig

        return SessionConfig(initiator_name=initiator_name, **{**self.session_kwargs(), **overrides})


def _digits(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '²', which int() refuses)."""
    return text.isascii() and text.isdigit()


def parse_hostport(text: str, what: str = "portal") -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port)."""
    if not text:
        raise URLError(f"{what}: the host is missing")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise URLError(f"{what} {text!r}: '[' without a closing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise URLError(f"{what} {text!r}: unexpected {rest!r} after the IPv6 address")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise URLError(f"{what} {text!r}: write an IPv6 address in brackets, e.g. [::1]:3260")
    else:
        host, port_text = text, None
    if not host:
        raise URLError(f"{what} {text!r}: the host is missing")
    if any(c.isspace() or c in "/?#@%" for c in host):
        raise URLError(f"{what} {text!r}: {host!r} is not a host name or address")
    if port_text is None:
        return host, DEFAULT_PORT
    if not _digits(port_text) or not 0 < int(port_text) < 65536:
        raise URLError(f"{what} {text!r}: port {port_text!r} is not a number in 1..65535")
    return host, int(port_text)


def parse_portal(text: str) -> tuple[str, int]:
    """A discovery address: ``HOST[:PORT]`` or ``iscsi://HOST[:PORT][/]`` (default port 3260)."""
    if text.startswith("iscsi://"):
        rest = text[len("iscsi://"):]
        if "@" in rest:
            raise URLError("a discovery portal takes no credentials in the URL; use LIBISCSI_CHAP_* variables")
        return parse_hostport(rest.rstrip("/"), "portal")
    if "://" in text:
        raise URLError(f"{text!r}: only iscsi:// URLs are understood")
    return parse_hostport(text, "portal")


def _env(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key)
    return value if value else None


def parse_url(text: str, env: Mapping[str, str] | None = None, lun_required: bool = True) -> ISCSIURL:
    """Parse ``text`` (see the module docstring); ``env`` defaults to os.environ.

    With ``lun_required=False`` the LUN may be left out (``iscsi://host/IQN``) and reads as 0.
    """
    env = os.environ if env is None else env
    if not text.startswith("iscsi://"):
        raise URLError(f"{text!r} is not an iSCSI URL; expected {FORM}")
    rest = text[len("iscsi://"):]
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    user = password = None
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        user, pct, password = userinfo.partition("%")
        if not user:
            raise URLError(f"URL: empty user name before '@'; expected {FORM}")
        if pct and not password:
            raise URLError(f"URL: empty secret after '{user}%'; drop the '%' or give the secret")
        password = password or None
    host, port = parse_hostport(authority, "URL")
    if not slash or not path:
        raise URLError(f"URL {_safe(text)}: the target name and LUN are missing; expected {FORM}")
    if not lun_required and "/" not in path.rstrip("/"):
        path = path.rstrip("/") + "/0"
    target, slash, lun_text = path.rpartition("/")
    if not slash or not target:
        raise URLError(f"URL {_safe(text)}: expected /IQN/LUN after the portal, got /{path}")
    if any(c.isspace() for c in target) or "/" in target:
        raise URLError(f"URL {_safe(text)}: {target!r} is not a valid target name")
    if not _digits(lun_text) or int(lun_text) > MAX_LUN:
        raise URLError(f"URL {_safe(text)}: LUN {lun_text!r} is not a number in 0..{MAX_LUN}")
    url = ISCSIURL(host=host, port=port, target=target, lun=int(lun_text), user=user, password=password)
    url = _apply_query(url, query, text)
    return _apply_env(url, env)


def _safe(text: str) -> str:
    """The URL text with the secret between '%' and '@' hidden, for error messages."""
    head, at, tail = text.partition("@")
    if at and "%" in head:
        head = head[:head.index("%") + 1] + "***"
    return head + at + tail


def _apply_query(url: ISCSIURL, query: str, text: str) -> ISCSIURL:
    changes: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if key not in _QUERY_KEYS:
            raise URLError(f"URL {_safe(text)}: unknown argument {key!r}; known: {', '.join(_QUERY_KEYS)}")
        if not eq or not value:
            raise URLError(f"URL {_safe(text)}: argument {key!r} needs a value ({key}=...)")
        if key in ("header_digest", "data_digest"):
            if value.lower() not in _DIGESTS:
                raise URLError(f"URL: {key}={value!r}; use crc32c or none")
            changes[key] = _DIGESTS[value.lower()]
        elif key == "max_connections":
            if not _digits(value) or not 1 <= int(value) <= MAX_CONNECTIONS:
                raise URLError(f"URL: max_connections={value!r}; use a number in 1..{MAX_CONNECTIONS}")
            changes[key] = int(value)
        else:
            changes[key] = value
    return replace(url, **changes)


def chap_from_env(env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """CHAP settings from LIBISCSI_CHAP_* alone (discovery sessions have no URL to carry them)."""
    url = _apply_env(ISCSIURL(host="-", port=DEFAULT_PORT, target="-", lun=0), os.environ if env is None else env)
    return {"chap_user": url.user, "chap_secret": url.password, "mutual_user": url.target_user,
            "mutual_secret": url.target_password}


def _apply_env(url: ISCSIURL, env: Mapping[str, str]) -> ISCSIURL:
    """Fill what the URL left out from LIBISCSI_CHAP_*; then check the credentials come in pairs."""
    user = url.user or _env(env, ENV_USER)
    password = url.password or _env(env, ENV_PASSWORD)
    tuser = url.target_user or _env(env, ENV_TARGET_USER)
    tpass = url.target_password or _env(env, ENV_TARGET_PASSWORD)
    if password and not user:
        raise URLError(f"a CHAP secret is set but no user name (URL user@ or {ENV_USER})")
    if user and not password:
        raise URLError(f"CHAP user {user!r} has no secret (URL {user}%SECRET@ or {ENV_PASSWORD})")
    if bool(tuser) != bool(tpass):
        raise URLError("mutual CHAP needs both target_user and target_password "
                       f"(URL arguments or {ENV_TARGET_USER}/{ENV_TARGET_PASSWORD})")
    if tuser and not user:
        raise URLError("mutual CHAP (target_user) needs one-way CHAP too: give user%secret@ first")
    return replace(url, user=user, password=password, target_user=tuser, target_password=tpass)

