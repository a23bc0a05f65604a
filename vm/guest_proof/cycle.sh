#!/bin/sh
# The command of one reboot cycle, run after rc and before rc.shutdown: wait for the writer's payload,
# let the churn dirty more pages, and record what the shutdown starts from.
# PROOF_CUT=1 (power-cut test): sync once the payload is written, then print the cut marker while the
# churn goes on; the host kills QEMU shortly after it.
. "$(dirname "$0")/common.sh"
# No periodic writeback from now on: what the writer leaves unsynced stays dirty in the page cache until
# the shutdown (otherwise the kernel flushes it within 5-30 s and the shutdown has little left to lose).
echo 0 >/proc/sys/vm/dirty_writeback_centisecs
echo 360000 >/proc/sys/vm/dirty_expire_centisecs
i=0
until [ -s "$PROOF_RUN/writer.state" ] || [ $i -ge 900 ]; do
    sleep 0.1
    i=$((i + 1))
done
state=$(cat "$PROOF_RUN/writer.state" 2>/dev/null || echo none)
echo "$state" >"$PROOF_RESULTS/writer.state"
cp "$PROOF_PIDFILE" "$PROOF_RESULTS/uiscsid.pid" 2>/dev/null || :
grep " $PROOF_DATA " /proc/mounts >"$PROOF_RESULTS/mounts" || :
if [ "${PROOF_CUT:-0}" = 1 ]; then
    sync
    log cycle "payload synced; churn goes on"
    sleep 2
    log cycle "cut now (churn writes: $(cat "$PROOF_RUN/churn.count" 2>/dev/null || echo 0))"
    sleep 120
    exit 0
fi
# Let the churn dirty at least PROOF_DIRTY_KB (2 MiB) before the shutdown: a fixed sleep left only 716 KiB
# dirty when the host's 2 cores were busy. Bounded: after 60 s the shutdown starts with what there is.
i=0
until [ "$(awk '/^Dirty:/ {print $2}' /proc/meminfo)" -ge "${PROOF_DIRTY_KB:-2048}" ] || [ $i -ge 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
sleep 1
grep -E '^(Dirty|Writeback):' /proc/meminfo >"$PROOF_RESULTS/meminfo"
log cycle "shutting down; writer $state; $(tr -s ' \n' ' ' <"$PROOF_RESULTS/meminfo")"
[ "$state" = written ]
