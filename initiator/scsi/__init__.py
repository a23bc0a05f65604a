"""SCSI as SAM, SPC and SBC define it: CDBs, the LUN field, sense, VPD, reply parsers and commands. No I/O."""
