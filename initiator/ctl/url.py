"""libiscsi-style iSCSI URLs: ``iscsi://[user[%secret]@]host[:port]/IQN/LUN[?arg=value&...]``.

The same form that libiscsi's tools and qemu-img take, so one URL works with both. Query arguments:
``header_digest`` and ``data_digest`` (crc32c|none; libiscsi's crc32c-none/none-crc32c are accepted
too), ``target_user`` and ``target_password`` (mutual CHAP: the target proves itself to us),
``chap_algorithms`` (the CHAP algorithms to offer, in order: md5,sha1,sha256,sha3-256), ``max_connections``
(MC/S) and ``erl`` (the ErrorRecoveryLevel to offer, 0 or 1). The environment variables ``LIBISCSI_CHAP_USERNAME``, ``..._PASSWORD``,
``..._TARGET_USERNAME`` and ``..._TARGET_PASSWORD`` supply secrets without putting them on the process
list; a value in the URL wins over the environment. Nothing is percent-decoded, as in libiscsi.
A URL parses into the `io.params.SessionParams` it names plus a LUN; the tool adds our initiator name.
A portal alone (``HOST[:PORT]``, ``[v6addr]:PORT`` or ``iscsi://HOST[:PORT][/]``) is parsed by
`parse_discovery_portal`; both use `protocol.addressing.parse_portal`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..io.params import MAX_CONNECTIONS, MAX_ERL, Chap, SessionParams
from ..protocol.addressing import PortalError, parse_portal
from ..protocol.chap import parse_algorithms
from ..scsi.lun import MAX_LUN

ENV_USER = "LIBISCSI_CHAP_USERNAME"
ENV_PASSWORD = "LIBISCSI_CHAP_PASSWORD"
ENV_TARGET_USER = "LIBISCSI_CHAP_TARGET_USERNAME"
ENV_TARGET_PASSWORD = "LIBISCSI_CHAP_TARGET_PASSWORD"
_DIGESTS = {"crc32c": True, "none": False, "crc32c-none": True, "none-crc32c": True}
_QUERY_KEYS = ("header_digest", "data_digest", "target_user", "target_password", "chap_algorithms",
               "max_connections", "erl")
FORM = "iscsi://[user[%secret]@]host[:port]/IQN/LUN"


class URLError(ValueError):
    """The text is not a usable iSCSI URL; the message says what is wrong and shows the expected form."""


@dataclass(frozen=True)
class ISCSIURL:
    """A parsed URL: the session it names (``session.initiator_name`` is left empty) and the LUN."""

    session: SessionParams
    lun: int

    @property
    def portal(self) -> str:
        return self.session.portal

    def redacted(self) -> str:
        """The URL with every secret replaced by ``***`` (for logs and error messages)."""
        chap = self.session.chap
        auth = f"{chap.user}%***@" if chap else ""
        return f"iscsi://{auth}{self.portal}/{self.session.target_name}/{self.lun}"


def _digits(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '²', which int() refuses)."""
    return text.isascii() and text.isdigit()


def parse_hostport(text: str, what: str = "portal") -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port); no portal group tag."""
    if "," in text:
        raise URLError(f"{what} {text!r}: a portal group tag (,N) has no place here")
    try:
        host, port, _ = parse_portal(text)
    except PortalError as e:
        raise URLError(f"{what} {text!r}: {e}" if text else f"{what}: {e}") from None
    return host, port


def parse_discovery_portal(text: str) -> tuple[str, int]:
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
    args = _query(query, text)
    chap, mutual = _credentials(user, password, args.pop("target_user", None), args.pop("target_password", None),
                                env)
    if "chap_algorithms" in args and chap is None:
        raise URLError(f"URL {_safe(text)}: chap_algorithms needs CHAP credentials (user%secret@ or {ENV_USER})")
    session = SessionParams(host=host, port=port, target_name=target, chap=chap, mutual=mutual, **args)
    return ISCSIURL(session, int(lun_text))


def _safe(text: str) -> str:
    """The URL text with the secret between '%' and '@' hidden, for error messages."""
    head, at, tail = text.partition("@")
    if at and "%" in head:
        head = head[:head.index("%") + 1] + "***"
    return head + at + tail


def _query(query: str, text: str) -> dict:
    args: dict = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if key not in _QUERY_KEYS:
            raise URLError(f"URL {_safe(text)}: unknown argument {key!r}; known: {', '.join(_QUERY_KEYS)}")
        if not eq or not value:
            raise URLError(f"URL {_safe(text)}: argument {key!r} needs a value ({key}=...)")
        if key in ("header_digest", "data_digest"):
            if value.lower() not in _DIGESTS:
                raise URLError(f"URL: {key}={value!r}; use crc32c or none")
            args[key] = _DIGESTS[value.lower()]
        elif key == "max_connections":
            if not _digits(value) or not 1 <= int(value) <= MAX_CONNECTIONS:
                raise URLError(f"URL: max_connections={value!r}; use a number in 1..{MAX_CONNECTIONS}")
            args[key] = int(value)
        elif key == "erl":
            if not _digits(value) or not 0 <= int(value) <= MAX_ERL:
                raise URLError(f"URL: erl={value!r}; use 0 or 1 (ErrorRecoveryLevel)")
            args[key] = int(value)
        elif key == "chap_algorithms":
            try:
                args[key] = parse_algorithms(value)
            except ValueError as e:
                raise URLError(f"URL: chap_algorithms={value!r}: {e}") from None
        else:
            args[key] = value
    return args


def chap_from_env(env: Mapping[str, str] | None = None) -> dict[str, Chap | None]:
    """The ``chap`` and ``mutual`` of a `SessionParams` from LIBISCSI_CHAP_* alone (a discovery session has
    no URL to carry them)."""
    chap, mutual = _credentials(None, None, None, None, os.environ if env is None else env)
    return {"chap": chap, "mutual": mutual}


def _credentials(user: str | None, password: str | None, tuser: str | None, tpass: str | None,
                 env: Mapping[str, str]) -> tuple[Chap | None, Chap | None]:
    """Fill what the URL left out from LIBISCSI_CHAP_*; then check the credentials come in pairs."""
    user = user or _env(env, ENV_USER)
    password = password or _env(env, ENV_PASSWORD)
    tuser = tuser or _env(env, ENV_TARGET_USER)
    tpass = tpass or _env(env, ENV_TARGET_PASSWORD)
    if password and not user:
        raise URLError(f"a CHAP secret is set but no user name (URL user@ or {ENV_USER})")
    if user and not password:
        raise URLError(f"CHAP user {user!r} has no secret (URL {user}%SECRET@ or {ENV_PASSWORD})")
    if bool(tuser) != bool(tpass):
        raise URLError("mutual CHAP needs both target_user and target_password "
                       f"(URL arguments or {ENV_TARGET_USER}/{ENV_TARGET_PASSWORD})")
    if tuser and not user:
        raise URLError("mutual CHAP (target_user) needs one-way CHAP too: give user%secret@ first")
    return (Chap(user, password) if user else None), (Chap(tuser, tpass) if tuser else None)
