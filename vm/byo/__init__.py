"""Bring your own setup: the proofs against an admin's target, LUN and fstab line instead of the built-in ones.

- `target`: the admin's target from ``--url iscsi://...`` (CHAP from LIBISCSI_CHAP_* or ``--secrets FILE``)
  or ``--config uiscsi.conf --target NAME``, as the host and the guest reach it.
- `fstab`: the admin's ``--fstab-line``, checked (a network entry, a filesystem the host can check, the
  LUN as its source).
- `lun`: what may be done with the LUN (created, reused, formatted with ``--format``, or refused) and
  which check judges it between boots (the host on its backing file, or a last guest boot).
"""
