"""The udev contract as rc/ renders it: the rule template reads these names. Their one definition is the
daemon's, in initiator/kernel/udev_info.py (the daemon sits below rc/ and writes the files the rule reads).
"""

from __future__ import annotations

from initiator.kernel.udev_info import (
    INFO_DIR,
    KEYS,
    LINK_DIR,
    LINK_SUBDIR,
    RULES_NAME,
    info_path,
    info_text,
    link_name,
    link_path,
)

__all__ = ["INFO_DIR", "KEYS", "LINK_DIR", "LINK_SUBDIR", "RULES_NAME", "info_path", "info_text", "link_name",
           "link_path"]
