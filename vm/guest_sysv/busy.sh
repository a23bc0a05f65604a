#!/bin/sh
# --busy: two processes keep the iSCSI filesystem busy into the shutdown, where no init script stops them.
# writer: deaf to SIGTERM, it writes until sendsigs gives up on it (about 10 s of `killall5 -18` rounds,
#         each of which stops and continues every process, uiscsid too) and SIGKILLs it;
# holder: listed in /run/sendsigs.omit.d as a helper of the storage stack would be, its cwd and an open
#         file on the filesystem: still busy at uiscsid's umount -a -N (remounted read-only there) and at
#         umountfs, so uiscsid must keep serving it until the power goes.
. "$(dirname "$0")/common.sh"
(
    trap '' TERM
    cd "$PROOF_DATA" || exit 1
    n=0
    while :; do
        dd if=/dev/urandom of=busy.bin bs=64k count=4 conv=notrunc 2>/dev/null
        n=$((n + 1))
        echo "$n" >"$PROOF_RUN/busy.count"
    done
) </dev/null >/dev/null 2>&1 &
echo $! >"$PROOF_RUN/busy-writer.pid"
(cd "$PROOF_DATA" && exec sleep 100000 3<payload.sha256) </dev/null >/dev/null 2>&1 &
echo $! >/run/sendsigs.omit.d/bootkit-proof-holder
log busy "writer $(cat "$PROOF_RUN/busy-writer.pid") (ignores SIGTERM), holder $! (in sendsigs.omit.d)"
