"""RFC 7143 without I/O: bytes, events and `now` in; bytes, events and deadlines out."""
