#!/bin/sh
# The proof's writer service: the one service here that needs the iSCSI filesystem.
# 1. It refuses to run when the filesystem is not mounted (as a unit with RequiresMountsFor= would).
# 2. It checks the payload the previous boot left (payload.bin against payload.sha256).
# 3. It writes a new payload.bin ($PROOF_MB MiB of fresh random bytes, over the old one in place) and its
#    payload.sha256, with no fsync: the data sits in the page cache until writeback or the shutdown.
# 4. Until it is stopped it keeps rewriting churn files, so there are always more dirty pages.
. "$(dirname "$0")/common.sh"
log writer "start pid $$"
if ! mountpoint -q "$PROOF_DATA"; then
    log writer "refusing to start: $PROOF_DATA is not mounted (its iSCSI disk is not attached)"
    echo refused >"$PROOF_RUN/writer.state"
    exit 1
fi
prev=none
if [ -e "$PROOF_DATA/payload.sha256" ]; then
    cp "$PROOF_DATA/payload.sha256" "$PROOF_RESULTS/prev.sha256"
    if (cd "$PROOF_DATA" && sha256sum --quiet -c payload.sha256) >"$PROOF_RESULTS/prev.check" 2>&1; then
        prev=ok
    else
        prev=bad
    fi
elif [ -e "$PROOF_DATA/payload.bin" ]; then
    prev=bad  # a payload without its hash: the hash was lost
fi
echo "$prev" >"$PROOF_RESULTS/prev.payload"
log writer "previous payload: $prev"
# In place (notrunc) and without fsync; how much of it writeback has reached by the shutdown is up to the
# kernel (measured: usually all of it), the churn below is what keeps MiBs dirty until the shutdown.
dd if=/dev/urandom of="$PROOF_DATA/payload.bin" bs=1M count="$PROOF_MB" conv=notrunc 2>/dev/null
(cd "$PROOF_DATA" && sha256sum payload.bin >payload.sha256)
cp "$PROOF_DATA/payload.sha256" "$PROOF_RESULTS/new.sha256"
log writer "payload written: $PROOF_MB MiB, no fsync"
echo written >"$PROOF_RUN/writer.state"
n=0
trap 'log writer "stopped after $n churn writes"; exit 0' TERM INT
mkdir -p "$PROOF_DATA/churn"
while :; do
    dd if=/dev/urandom of="$PROOF_DATA/churn/$((n % 16))" bs=256k count=1 conv=notrunc 2>/dev/null
    n=$((n + 1))
    echo "$n" >"$PROOF_RUN/churn.count"
done
