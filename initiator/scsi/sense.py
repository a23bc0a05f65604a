"""SCSI status and sense data (SPC-4 4.5) decoded into messages a user can act on. Pure.

Both sense formats are accepted: fixed (response codes 0x70/0x71) and descriptor (0x72/0x73). Anything
shorter or stranger than the standard allows still decodes to a `Sense` whose description says so:
sense bytes come from the target and must never crash the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

GOOD, CHECK_CONDITION = 0x00, 0x02
STATUS_NAMES: dict[int, str] = {
    0x00: "GOOD",
    0x02: "CHECK CONDITION",
    0x04: "CONDITION MET",
    0x08: "BUSY",
    0x18: "RESERVATION CONFLICT",
    0x28: "TASK SET FULL",
    0x30: "ACA ACTIVE",
    0x40: "TASK ABORTED",
}

SENSE_KEYS: tuple[str, ...] = (
    "NO SENSE", "RECOVERED ERROR", "NOT READY", "MEDIUM ERROR", "HARDWARE ERROR", "ILLEGAL REQUEST",
    "UNIT ATTENTION", "DATA PROTECT", "BLANK CHECK", "VENDOR SPECIFIC", "COPY ABORTED", "ABORTED COMMAND",
    "RESERVED (0xC)", "VOLUME OVERFLOW", "MISCOMPARE", "COMPLETED",
)

NO_SENSE, RECOVERED_ERROR, NOT_READY, MEDIUM_ERROR, HARDWARE_ERROR, ILLEGAL_REQUEST = range(6)
UNIT_ATTENTION, DATA_PROTECT, ABORTED_COMMAND = 6, 7, 0xB

# (ASC, ASCQ) -> meaning. The common ones a disk behind an iSCSI target reports; wording is ours.
ASC_TABLE: dict[tuple[int, int], str] = {
    (0x00, 0x00): "no additional sense information",
    (0x00, 0x06): "I/O process terminated",
    (0x00, 0x16): "operation in progress",
    (0x04, 0x00): "logical unit not ready, cause not reportable",
    (0x04, 0x01): "logical unit is becoming ready",
    (0x04, 0x02): "logical unit not ready, initializing command required",
    (0x04, 0x03): "logical unit not ready, manual intervention required",
    (0x04, 0x04): "logical unit not ready, format in progress",
    (0x04, 0x0A): "logical unit not accessible, asymmetric access state transition",
    (0x04, 0x0B): "logical unit not accessible, target port in standby state",
    (0x04, 0x0C): "logical unit not accessible, target port in unavailable state",
    (0x05, 0x00): "logical unit does not respond to selection",
    (0x08, 0x00): "logical unit communication failure",
    (0x08, 0x01): "logical unit communication time-out",
    (0x0C, 0x00): "write error",
    (0x0C, 0x02): "write error, auto reallocation failed",
    (0x0C, 0x03): "write error, recommend reassignment",
    (0x10, 0x01): "logical block guard check failed",
    (0x10, 0x02): "logical block application tag check failed",
    (0x10, 0x03): "logical block reference tag check failed",
    (0x11, 0x00): "unrecovered read error",
    (0x11, 0x04): "unrecovered read error, auto reallocate failed",
    (0x14, 0x01): "record not found",
    (0x1A, 0x00): "parameter list length error",
    (0x1D, 0x00): "miscompare during verify operation",
    (0x20, 0x00): "invalid command operation code",
    (0x21, 0x00): "logical block address out of range",
    (0x21, 0x01): "invalid element address",
    (0x24, 0x00): "invalid field in CDB",
    (0x25, 0x00): "logical unit not supported",
    (0x26, 0x00): "invalid field in parameter list",
    (0x26, 0x01): "parameter not supported",
    (0x26, 0x02): "parameter value invalid",
    (0x27, 0x00): "write protected",
    (0x27, 0x01): "hardware write protected",
    (0x27, 0x02): "logical unit software write protected",
    (0x27, 0x07): "space allocation failed write protect",
    (0x28, 0x00): "not ready to ready change, medium may have changed",
    (0x29, 0x00): "power on, reset, or bus device reset occurred",
    (0x29, 0x01): "power on occurred",
    (0x29, 0x02): "SCSI bus reset occurred",
    (0x29, 0x03): "bus device reset function occurred",
    (0x29, 0x04): "device internal reset",
    (0x29, 0x07): "I_T nexus loss occurred",
    (0x2A, 0x01): "mode parameters changed",
    (0x2A, 0x03): "reservations preempted",
    (0x2A, 0x04): "reservations released",
    (0x2A, 0x09): "capacity data has changed",
    (0x2A, 0x10): "timestamp changed",
    (0x2C, 0x00): "command sequence error",
    (0x2F, 0x00): "commands cleared by another initiator",
    (0x2F, 0x01): "commands cleared by power loss notification",
    (0x31, 0x00): "medium format corrupted",
    (0x38, 0x07): "thin provisioning soft threshold reached",
    (0x3A, 0x00): "medium not present",
    (0x3E, 0x00): "logical unit has not self-configured yet",
    (0x3E, 0x01): "logical unit failure",
    (0x3F, 0x01): "microcode has been changed",
    (0x3F, 0x03): "inquiry data has changed",
    (0x3F, 0x0E): "reported LUNs data has changed",
    (0x43, 0x00): "message error",
    (0x44, 0x00): "internal target failure",
    (0x45, 0x00): "select or reselect failure",
    (0x47, 0x00): "SCSI parity error",
    (0x47, 0x03): "information unit iuCRC error detected",
    (0x48, 0x00): "initiator detected error message received",
    (0x49, 0x00): "invalid message error",
    (0x4B, 0x00): "data phase error",
    (0x4B, 0x02): "too much write data",
    (0x4B, 0x03): "ACK/NAK timeout",
    (0x4B, 0x04): "NAK received",
    (0x4B, 0x05): "data offset error",
    (0x4B, 0x06): "initiator response timeout",
    (0x4C, 0x00): "logical unit failed self-configuration",
    (0x4E, 0x00): "overlapped commands attempted",
    (0x55, 0x03): "insufficient resources",
    (0x55, 0x04): "insufficient registration resources",
    (0x5D, 0x00): "failure prediction threshold exceeded",
    (0x67, 0x0A): "set target port groups command failed",
    (0x68, 0x00): "logical unit not configured",
}

# ASC-only fallbacks used when the exact (ASC, ASCQ) pair is not in the table.
ASC_FAMILY: dict[int, str] = {
    0x04: "logical unit not ready",
    0x0C: "write error",
    0x11: "unrecovered read error",
    0x27: "write protected",
    0x29: "reset occurred",
    0x2A: "parameters changed",
    0x3F: "target operating conditions have changed",
    0x47: "transport error",
    0x4B: "data phase error",
    0x55: "system resource failure",
    0x5D: "failure prediction threshold exceeded",
}


@dataclass(frozen=True)
class Sense:
    """Decoded sense data. ``information`` is the INFORMATION field (often the failing LBA) or None."""

    key: int
    asc: int
    ascq: int
    description: str
    response_code: int = 0
    information: int | None = None
    deferred: bool = False

    @property
    def key_name(self) -> str:
        return SENSE_KEYS[self.key & 0xF]


def status_name(status: int) -> str:
    """``"CHECK CONDITION"`` for 0x02; unknown values print as hex."""
    return STATUS_NAMES.get(status, f"status 0x{status:02x}")


def asc_text(asc: int, ascq: int) -> str:
    """Human meaning of an ASC/ASCQ pair, falling back to its family, then to the raw numbers."""
    text = ASC_TABLE.get((asc, ascq))
    if text is not None:
        return text
    if asc >= 0x80 or ascq >= 0x80:
        return f"vendor specific (ASC 0x{asc:02x}, ASCQ 0x{ascq:02x})"
    family = ASC_FAMILY.get(asc)
    if family is not None:
        return f"{family} (ASCQ 0x{ascq:02x})"
    return f"ASC 0x{asc:02x}, ASCQ 0x{ascq:02x}"


def _describe(key: int, asc: int, ascq: int, information: int | None, deferred: bool) -> str:
    text = f"{SENSE_KEYS[key & 0xF]}: {asc_text(asc, ascq)}"
    if information is not None and key in (MEDIUM_ERROR, HARDWARE_ERROR, ILLEGAL_REQUEST):
        text += f" (information 0x{information:x})"
    if deferred:
        text += " [deferred error]"
    return text


def parse_sense(data: bytes | bytearray | memoryview) -> Sense:
    """Decode fixed or descriptor format sense data; malformed input yields a descriptive `Sense`."""
    b = bytes(data)
    if not b:
        return Sense(0, 0, 0, "no sense data")
    code = b[0] & 0x7F
    if code in (0x70, 0x71):
        if len(b) < 3:
            return Sense(0, 0, 0, f"truncated fixed-format sense data ({len(b)} bytes)", code)
        key = b[2] & 0xF
        asc = b[12] if len(b) > 12 else 0
        ascq = b[13] if len(b) > 13 else 0
        info = int.from_bytes(b[3:7], "big") if b[0] & 0x80 and len(b) >= 7 else None
        deferred = code == 0x71
        return Sense(key, asc, ascq, _describe(key, asc, ascq, info, deferred), code, info, deferred)
    if code in (0x72, 0x73):
        if len(b) < 4:
            return Sense(0, 0, 0, f"truncated descriptor-format sense data ({len(b)} bytes)", code)
        key, asc, ascq = b[1] & 0xF, b[2], b[3]
        info = _descriptor_information(b)
        deferred = code == 0x73
        return Sense(key, asc, ascq, _describe(key, asc, ascq, info, deferred), code, info, deferred)
    return Sense(0, 0, 0, f"unsupported sense response code 0x{b[0]:02x}", code)


def _descriptor_information(b: bytes) -> int | None:
    """The INFORMATION descriptor (type 0) of descriptor-format sense data, if present and valid."""
    end = min(len(b), 8 + (b[7] if len(b) > 7 else 0))
    off = 8
    while off + 2 <= end:
        dtype, dlen = b[off], b[off + 1]
        if dtype == 0x00 and dlen >= 0x0A and off + 12 <= len(b) and b[off + 2] & 0x80:
            return int.from_bytes(b[off + 4:off + 12], "big")
        off += 2 + dlen
    return None


def describe_status(status: int, sense: bytes | bytearray | memoryview = b"") -> str:
    """One line for a failed command: the status, and for CHECK CONDITION the decoded sense."""
    if status == CHECK_CONDITION and sense:
        return f"{status_name(status)}, {parse_sense(sense).description}"
    if status == CHECK_CONDITION:
        return f"{status_name(status)} without sense data"
    return status_name(status)


def is_unit_attention(status: int, sense: bytes | bytearray | memoryview) -> bool:
    """CHECK CONDITION with sense key UNIT ATTENTION: the unit did not run the command (it reports a reset,
    a power on, an I_T nexus loss after a relogin...), so the same command may simply be sent again."""
    return status == CHECK_CONDITION and bool(sense) and parse_sense(sense).key == UNIT_ATTENTION
