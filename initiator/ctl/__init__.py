"""uiscsictl: the control program and one-shot tools; the only code that reads config files, LIBISCSI_CHAP_* or DNS."""
