"""Every import of the code under test, in one place.

The fuzz targets import the project only through this module, so a move of the initiator's modules
is a change to these lines and nothing else. `MODULES` names, per target, the modules whose
statement and branch coverage the runner reports after a run.

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
from initiator.ctl import config as config_mod
from initiator.ctl.config import ConfigError, parse_file
from initiator.daemon import control as control_mod
from initiator.daemon import runtime as runtime_mod
from initiator.daemon import service as service_mod
from initiator.daemon import wire as wire_mod
from initiator.daemon.control import ControlServer
from initiator.daemon.service import Service
from initiator.daemon.wire import ControlError, TargetConf, from_wire, to_wire
from initiator.errors import (
    ConnectionLost,
    ISCSIError,
    LoginError,
    TargetProtocolError,
)
from initiator.io.params import Chap, SessionParams
from initiator.protocol import addressing as addressing_mod
from initiator.protocol import bhs as bhs_mod
from initiator.protocol import chap as chap_mod
from initiator.protocol import erl1 as erl1_mod
from initiator.protocol import escalation as escalation_mod
from initiator.protocol import framer as framer_mod
from initiator.protocol import keys as keys_mod
from initiator.protocol import login as login_mod
from initiator.protocol import pdu
from initiator.protocol import pdu_target as pdu_target_mod
from initiator.protocol import session as session_mod
from initiator.protocol import task as task_mod
from initiator.protocol import text as text_mod
from initiator.protocol.addressing import parse_portal
from initiator.protocol.chap import ChapInitiator
from initiator.protocol.connection import Connection
from initiator.protocol.connection import Event as ConnEvent
from initiator.protocol.erl1 import Erl1Core, core_class
from initiator.protocol.escalation import (
    Abort,
    Escalation,
    Fail,
    Reinstate,
    ResetLun,
    Retry,
    Timeouts,
)
from initiator.protocol.events import ConnectionDropped
from initiator.protocol.framer import Framer
from initiator.protocol.keys import Negotiated, Negotiator, Proposals
from initiator.protocol.login import LoginMachine, LoginParams
from initiator.protocol.session import SessionCore
from initiator.protocol.text import TextMachine, decode_text, encode_text, parse_sendtargets
from initiator.scsi import cdb
from initiator.scsi import sense as sense_mod

KEY_NAMES = tuple(keys_mod.KEYS)  # every RFC 7143 key the negotiation knows

# The daemon's I/O boundary: the control target replaces this name in these modules (see targets/control.py).
OPEN_SESSION_USERS = (service_mod, runtime_mod)

MODULES = {
    "pdu": (framer_mod, bhs_mod, pdu_target_mod, session_mod, erl1_mod, escalation_mod, task_mod, sense_mod),
    "login": (login_mod, keys_mod, text_mod, chap_mod, framer_mod, pdu_target_mod),
    "text": (text_mod, keys_mod, chap_mod, addressing_mod),
    "config": (config_mod, wire_mod),
    "fstab": (fstab_mod, netfs_mod, verify_mod),
    "control": (control_mod, wire_mod, service_mod, runtime_mod),
}

__all__ = [
    "KEY_NAMES", "MODULES", "OPEN_SESSION_USERS", "Abort", "Chap", "ChapInitiator", "ConfigError",
    "ConnEvent", "Connection", "ConnectionDropped", "ConnectionLost", "ControlError", "ControlServer",
    "Erl1Core", "Escalation", "Fail", "Framer", "Fstab", "ISCSIError", "LoginError", "LoginMachine",
    "LoginParams", "Negotiated", "Negotiator", "Proposals", "Reinstate", "ResetLun", "Retry", "Service",
    "SessionCore", "SessionParams", "TargetConf", "TargetProtocolError", "TextMachine", "Timeouts", "cdb",
    "control_mod", "core_class", "decode_text", "encode_text", "from_wire", "mount_options", "parse_file",
    "parse_portal", "parse_sendtargets", "pdu", "select", "to_wire", "verify", "wire_mod",
]
