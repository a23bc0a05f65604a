"""Exception types. Who broke the rule decides the type: the target, us, or the SCSI device."""

from __future__ import annotations


class ISCSIError(Exception):
    """Base of every error this package raises on purpose."""


class TargetProtocolError(ISCSIError):
    """The target sent something RFC 7143 forbids (bad length, digest, opcode, answer).

    The message names what arrived and what was expected, so a user can act on it.
    """


class LocalProtocolError(ISCSIError):
    """We misused the API (a bug in the caller, not the target's fault)."""


class DigestError(TargetProtocolError):
    """A header or data CRC32C did not match."""


class LoginError(ISCSIError):
    """The target refused the login with a status class and detail (RFC 7143 11.13.5)."""

    def __init__(self, message: str, status_class: int = 0, status_detail: int = 0) -> None:
        super().__init__(message)
        self.status_class = status_class
        self.status_detail = status_detail


class AuthenticationError(LoginError):
    """CHAP failed: the target refused our secret, or it failed to prove its own (mutual)."""


class NegotiationError(TargetProtocolError):
    """The target answered a key with a value the negotiation rules do not allow."""


class ConnectionLost(ISCSIError):
    """The TCP connection closed or reset while work was outstanding."""


class SessionFailed(ISCSIError):
    """Recovery gave up: the replacement timeout expired before a new login succeeded."""


class CommandTimeout(ISCSIError):
    """An operation did not finish within its bound."""


class LoginRedirect(LoginError):
    """Status class 1: the target moved. ``portal`` is where to log in instead (RFC 7143 11.13.5)."""

    def __init__(self, message: str, status_detail: int, target_address: str,
                 portal: tuple[str, int, int] | None) -> None:
        super().__init__(message, 1, status_detail)
        self.target_address = target_address
        self.portal = portal  # (host, port, tpgt), or None when TargetAddress was missing or malformed
        self.permanent = status_detail == 2
