"""fstab: a file's bytes through the fstab model, `verify`, the -N selection, and edits written back.

Input: the whole file, decoded as `Fstab.load` decodes it (UTF-8 with surrogateescape). The parser
refuses nothing as a whole: a bad line becomes a ParseError, so there is no clean exception type and
every exception is a crash. Oracles (the module's documented promises):
  fstab-roundtrip   render() gives back the input byte for byte;
  fstab-errors      every error reads FILE:LINE: message, with LINE a line of the file;
  fstab-update      `update(line, entry)` with the entry it has leaves an entry equal to it;
  fstab-append      an appended entry parses back equal (mangle/unmangle survive any field; no options
                    is written as `defaults`, which fstab(5) defines as the same).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from .. import project as p
from . import OracleFailure, Target

DATA = Path(__file__).resolve().parents[2] / "data" / "fstab"
_ERROR = re.compile(r"fstab:(\d+): \S")


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    tab = p.Fstab.parse(text, "fstab")
    if tab.render() != text:
        raise OracleFailure("fstab-roundtrip", f"render() changed the file: {text[:80]!r}")
    nlines = len(tab.lines)
    for err in tab.errors:
        m = _ERROR.match(str(err))
        if m is None or not 1 <= int(m[1]) <= nlines:
            raise OracleFailure("fstab-errors", f"bad error line {str(err)!r}")
    p.verify(tab)
    for net in (False, True):
        for entry in p.select([e for _, e in tab.entries], net):
            p.mount_options(entry)
    for line, entry in tab.entries:
        tab.update(line, entry)
        if line.entry != entry:
            raise OracleFailure("fstab-update", f"line {line.lineno}: {entry!r} became {line.entry!r}")
        appended = tab.append(entry)
        if appended.entry != (entry if entry.options else entry.replace(options=["defaults"])):
            raise OracleFailure("fstab-append", f"{entry!r} written as {appended.raw!r} reads back as "
                                                f"{appended.entry!r}")


def seeds() -> Iterator[tuple[str, bytes]]:
    for f in sorted(DATA.glob("*.fstab")):
        yield f.stem, f.read_bytes()
    yield "crlf-and-junk", (b"/dev/sda1 / ext4 defaults 0 1\r\n#c\n  \n/dev/sdb1 /x\n/dev/sdc /y ext4 rw x 2\n"
                            b"/dev/sdd /z xfs rw 0 -1 extra\n\\043not-a-comment /w ext4 context=\"a,b\",_netdev\n")
    yield "no-final-newline", b"server:/export /mnt/nfs nfs4 _netdev,nofail 0 0"
    yield "latin1", b"/dev/sde /m\xe9dia ext4 defaults 0 2\n"


DICTIONARY = tuple(w.encode() for w in (
    "_netdev", "net", "netdev", "nofail", "noauto", "defaults", "rw", "ro", "rq", "sw", "xx", "UUID=", "LABEL=",
    "PARTUUID=", "ID=", "nfs4", "fuse.sshfs", "fuseblk.", "swap", "none", "ext4", "xfs", "/dev/disk/by-iscsi/",
    "/dev/nbd0", "/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-iqn.x-lun-1", "3eb7f9da875cb9ee.a", "\\040",
    "\\011", "\\134", "\\012", "\\043", '"', ",", "#", "\t", "\r\n", "\n", " 0 2", " 0 1", "/srv", "../"))

TARGET = Target(name="fstab", doc="fstab parser, verify, -N selection, edits written back",
                clean=(), one_input=one_input, seeds=seeds, max_len=8192, dictionary=DICTIONARY)
