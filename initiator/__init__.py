"""A userland iSCSI initiator (RFC 7143): a sans-IO protocol core, an asyncio transport, and its programs."""
