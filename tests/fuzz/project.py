"""Every import of the code under test, in one place.

The fuzz targets import the project only through this module, so a move of the initiator's modules
(into subpackages) is a change to these lines and nothing else. `MODULES` names, per target, the
modules whose line coverage the runner reports after a run.

The fuzz engine imports this module inside ``atheris.instrument_imports()``: nothing else may import
the project before it does, or those modules run uninstrumented.
"""

from __future__ import annotations

from fstab_tools import fstab as fstab_mod
from fstab_tools import netfs as netfs_mod
from fstab_tools import verify as verify_mod
from fstab_tools.fstab import Fstab
from fstab_tools.netfs import mount_options, select
from fstab_tools.verify import verify
from initiator import cdb, pdu
from initiator import chap as chap_mod
from initiator import config as config_mod
from initiator import config_wire as config_wire_mod
from initiator import connection as connection_mod
from initiator import control as control_mod
from initiator import daemon as daemon_mod
from initiator import daemon_target as daemon_target_mod
from initiator import keys as keys_mod
from initiator import login as login_mod
from initiator import session as session_mod
from initiator import task as task_mod
from initiator import text as text_mod
from initiator.chap import ChapInitiator
from initiator.config import Chap, ConfigError, TargetConf, parse_file
from initiator.config_wire import from_wire, to_wire
from initiator.connection import Connection, Framer
from initiator.connection import Event as ConnEvent
from initiator.control import ControlError, ControlServer
from initiator.daemon import Daemon
from initiator.errors import (
    ConnectionLost,
    ISCSIError,
    LoginError,
    TargetProtocolError,
)
from initiator.keys import Negotiated, Negotiator, Proposals
from initiator.login import LoginMachine, LoginParams
from initiator.session import SessionCore
from initiator.text import TextMachine, decode_text, encode_text, parse_portal, parse_sendtargets

KEY_NAMES = tuple(keys_mod.KEYS)  # every RFC 7143 key the negotiation knows

# The daemon's I/O boundary: the control target replaces this name in these modules (see targets/control.py).
OPEN_SESSION_USERS = (daemon_mod, daemon_target_mod)

MODULES = {
    "pdu": (pdu, connection_mod, session_mod, task_mod),
    "login": (login_mod, keys_mod, text_mod, chap_mod, pdu, connection_mod),
    "text": (text_mod, keys_mod, chap_mod),
    "config": (config_mod, config_wire_mod),
    "fstab": (fstab_mod, netfs_mod, verify_mod),
    "control": (control_mod, config_wire_mod, daemon_mod),
}

__all__ = [
    "KEY_NAMES", "MODULES", "OPEN_SESSION_USERS", "Chap", "ChapInitiator", "ConfigError", "ConnEvent", "Connection",
    "ConnectionLost", "ControlError", "ControlServer", "Daemon", "Framer", "Fstab", "ISCSIError",
    "LoginError", "LoginMachine", "LoginParams", "Negotiated", "Negotiator", "Proposals", "SessionCore",
    "TargetConf", "TargetProtocolError", "TextMachine", "cdb", "control_mod", "decode_text", "encode_text",
    "from_wire", "mount_options", "parse_file", "parse_portal", "parse_sendtargets", "pdu", "select",
    "to_wire", "verify",
]
