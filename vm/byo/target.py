"""The admin's target for a proof: ``--url iscsi://...`` or ``--config uiscsi.conf --target NAME``.

Both become a `UserTarget`: the `SessionParams` the host logs in with (to see what the LUN holds), the LUN
number, and what the guest's /etc/uiscsi.conf needs. A target on the host's loopback is reached from a
QEMU guest at 10.0.2.2 (user networking); any other address is reached as it is.

CHAP secrets never go on a command line: a URL takes them from the LIBISCSI_CHAP_* variables (as
libiscsi's tools and uiscsictl do) or from ``--secrets FILE``, lines of ``LIBISCSI_CHAP_...=VALUE`` in a
file only its owner may read; a uiscsi.conf names its own secret files. The guest gets them as files
of mode 0600 in its image or boot share.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from initiator.ctl import url as iscsi_url
from initiator.ctl.config import ConfigError, parse_file
from initiator.ctl.daemon_commands import resolve
from initiator.io.params import SessionParams
from initiator.protocol.chap import algorithm_names

HOST_FROM_GUEST = "10.0.2.2"
SECRET_KEYS = (iscsi_url.ENV_USER, iscsi_url.ENV_PASSWORD, iscsi_url.ENV_TARGET_USER,
               iscsi_url.ENV_TARGET_PASSWORD)


class ByoError(ValueError):
    """The admin's setup cannot be used as given; the message says what to change."""


def read_secrets_file(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines) with the LIBISCSI_CHAP_* keys; the file must not be
    readable or writable by group or others."""
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as e:
        raise ByoError(f"--secrets {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ByoError(f"--secrets {path}: readable or writable by group or others "
                       f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    out = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not eq or key not in SECRET_KEYS:
            raise ByoError(f"{path}:{n}: expected KEY=VALUE with KEY one of {', '.join(SECRET_KEYS)}")
        out[key] = value.strip().strip("'\"")
    return out


@dataclass(frozen=True)
class UserTarget:
    """The admin's target and LUN. ``name`` is the target's name in the guest's uiscsi.conf."""

    name: str
    params: SessionParams
    lun: int
    origin: str  # where it came from, for messages and reports (secrets redacted)

    @property
    def iqn(self) -> str:
        assert self.params.target_name is not None
        return self.params.target_name

    @property
    def guest_host(self) -> str:
        """The target's address as the guest reaches it: loopback becomes QEMU's 10.0.2.2."""
        try:
            loopback = ipaddress.ip_address(self.params.host).is_loopback
        except ValueError:
            loopback = self.params.host == "localhost"
        return HOST_FROM_GUEST if loopback else self.params.host

    def auth_lines(self, secrets_dir: str) -> list[str]:
        """The uiscsi.conf statements for CHAP and digests, secret files under SECRETS_DIR (guest paths)."""
        p, out = self.params, []
        if p.chap:
            out.append(f'auth chap user "{p.chap.user}" secret-file "{secrets_dir}/{self.name}.chap" '
                       f"algorithms {','.join(algorithm_names(p.chap_algorithms))}")
        if p.mutual:
            out.append(f'mutual user "{p.mutual.user}" secret-file "{secrets_dir}/{self.name}.mutual"')
        if p.header_digest:
            out.append("header_digest crc32c")
        if p.data_digest:
            out.append("data_digest crc32c")
        return out

    def secret_files(self, secrets_dir: str) -> dict[str, str]:
        """Guest path -> secret, for the files `auth_lines` names."""
        p, out = self.params, {}
        if p.chap:
            out[f"{secrets_dir}/{self.name}.chap"] = p.chap.secret
        if p.mutual:
            out[f"{secrets_dir}/{self.name}.mutual"] = p.mutual.secret
        return out


def from_url(text: str, env: Mapping[str, str] | None = None, secrets: str | Path | None = None,
             name: str = "byo") -> UserTarget:
    """``--url`` with CHAP from ENV (default os.environ), overridden by a ``--secrets`` file."""
    merged = dict(os.environ if env is None else env)
    if secrets is not None:
        merged.update(read_secrets_file(secrets))
    try:
        url = iscsi_url.parse_url(text, env=merged)
    except iscsi_url.URLError as e:
        raise ByoError(f"--url: {e}") from None
    return UserTarget(name, url.session, url.lun, f"--url {url.redacted()}")


def from_config(path: str | Path, target: str, lun: int | None = None) -> UserTarget:
    """``--config FILE --target NAME [--lun N]``: the target block NAME (its only LUN unless N is given)."""
    try:
        cfg = parse_file(path)
    except ConfigError as e:
        raise ByoError(str(e)) from None
    except OSError as e:
        raise ByoError(f"--config {path}: {e.strerror}") from None
    try:
        t = cfg.target(target)
    except KeyError:
        names = ", ".join(t.name for t in cfg.targets) or "none"
        raise ByoError(f"--config {path}: no target {target!r} (it has: {names})") from None
    if t.discovery or t.session.target_name is None:
        raise ByoError(f"{t.where}: target {target!r} is a discovery entry; name a normal target")
    if lun is None:
        if len(t.luns) != 1:
            raise ByoError(f"{t.where}: target {target!r} has {'every LUN' if not t.luns else 'several LUNs'}; "
                           "say which one with --lun N")
        lun = t.luns[0]
    elif t.luns and lun not in t.luns:
        raise ByoError(f"{t.where}: target {target!r} lists LUNs {list(t.luns)}, not {lun}")
    session = t.session
    if not session.initiator_name and cfg.initiator_name:
        session = replace(session, initiator_name=cfg.initiator_name)
    try:  # uiscsid does no DNS: like `uiscsictl reload`, resolve here, once
        session = replace(session, host=resolve(session.host, session.port))
    except OSError as e:
        raise ByoError(f"{t.where}: cannot resolve {session.host!r}: {e.strerror or e}") from None
    return UserTarget(target, session, lun, f"--config {path} target {target} ({t.where}) lun {lun}")
