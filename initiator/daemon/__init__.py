"""uiscsid: the daemon that keeps sessions and attaches LUNs, and the wire types it shares with uiscsictl."""
