"""A userland iSCSI initiator (RFC 7143) and its two programs, one subpackage per layer, bottom first:

scsi (SCSI as SAM/SPC/SBC define it), protocol (RFC 7143 without I/O), io (asyncio), kernel (the NBD bridge),
daemon (uiscsid) and ctl (uiscsictl). Each imports only the layers below it; tests/test_layers.py checks it.
"""
