"""``python -m vm.fscheck``: check or probe a filesystem image (or device) without mounting it.

    python -m vm.fscheck check --type xfs lun.img [--expect SHA256] [--where guest] [--json]
    python -m vm.fscheck probe lun.img [--json]

check exits 0 when the filesystem is clean and holds its payload (or none), 4 when it is not (as fsck's
"errors left uncorrected"), 8 when the check could not run; probe exits 0 and prints what is there.
The guest-side check of a LUN the host cannot read runs this on the LUN's /dev/nbdN.
"""

from __future__ import annotations

import argparse
import json
import sys

from vm.fscheck.filesystems import FILESYSTEMS
from vm.fscheck.host import check
from vm.fscheck.probe import probe
from vm.fscheck.verdict import FsCheckError

EXIT_DAMAGED = 4
EXIT_ERROR = 8


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vm.fscheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="read-only check: needs recovery?, the checker's verdict, the payload")
    c.add_argument("target", help="image file or block device")
    c.add_argument("--type", required=True, choices=sorted(FILESYSTEMS), help="the filesystem type")
    c.add_argument("--expect", metavar="SHA256", help="the payload digest the writer reported")
    c.add_argument("--where", choices=("host", "guest"), default="host", help="recorded in the verdict")
    c.add_argument("--json", action="store_true")
    pr = sub.add_parser("probe", help="what the image holds (blkid -p)")
    pr.add_argument("target")
    pr.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.cmd == "probe":
            content = probe(args.target)
            print(json.dumps(content.fields) if args.json else content.describe())
            return 0
        v = check(args.target, args.type, args.expect, args.where)
    except FsCheckError as e:
        print(f"vm.fscheck: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(v.as_dict(), indent=2))
    else:
        print(f"{v.target}: {v.fstype}, {v.recovery_evidence}; {v.tool} exit {v.exit}; "
              f"payload {'ok' if v.payload_ok else 'none' if v.payload_ok is None else 'BAD'}")
        for line in v.problems:
            print(f"  {line}")
    return EXIT_DAMAGED if not v.clean or v.payload_ok is False else 0


if __name__ == "__main__":
    sys.exit(main())
