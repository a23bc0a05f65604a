#!/bin/sh
# The command of one reboot cycle, run once the boot is done: wait for the writer's payload, let the
# churn dirty more pages, and record what the shutdown starts from. busybox: rc.shutdown runs after it.
# Debian guests: it then shuts down the init system's way ($PROOF_SHUTDOWN_CMD, e.g. systemctl reboot).
# PROOF_BUSY=1: first $PROOF_BUSY_CMD starts a process that keeps the filesystem busy through the whole
# shutdown (its cwd and an open file are on it), so the init system's unmount fails and only the final
# unmount of its last stage (systemd-shutdown) can get the filesystem clean.
# PROOF_CUT=1 (power-cut test): sync once the payload is written, then print the cut marker while the
# churn goes on; the host kills QEMU shortly after it.
. "$(dirname "$0")/common.sh"
# No periodic writeback from now on: what the writer leaves unsynced stays dirty in the page cache until
# the shutdown (otherwise the kernel flushes it within 5-30 s and the shutdown has little left to lose).
echo 0 >/proc/sys/vm/dirty_writeback_centisecs
echo 360000 >/proc/sys/vm/dirty_expire_centisecs
wait_until 90 test -s "$PROOF_RUN/writer.state"
state=$(cat "$PROOF_RUN/writer.state" 2>/dev/null || echo none)
echo "$state" >"$PROOF_RESULTS/writer.state"
[ -n "${PROOF_PIDFILE:-}" ] && cp "$PROOF_PIDFILE" "$PROOF_RESULTS/uiscsid.pid" 2>/dev/null
grep " $PROOF_DATA " /proc/mounts >"$PROOF_RESULTS/mounts" || :
if [ -n "${PROOF_SOURCE_CMD:-}" ]; then
    eval "$PROOF_SOURCE_CMD" >"$PROOF_RESULTS/mount.source" 2>&1
    "$PROOF_UISCSICTL" -s "$PROOF_SOCK" show luns --json >"$PROOF_RESULTS/luns.json" 2>&1
fi
if [ "${PROOF_CUT:-0}" = 1 ]; then
    sync
    log cycle "payload synced; churn goes on"
    sleep 2
    log cycle "cut now (churn writes: $(cat "$PROOF_RUN/churn.count" 2>/dev/null || echo 0))"
    sleep 300
    exit 0
fi
# Let the churn dirty at least PROOF_DIRTY_KB (2 MiB) before the shutdown: a fixed sleep left only 716 KiB
# dirty when the host's 2 cores were busy. Bounded: after 60 s the shutdown starts with what there is.
dirty_enough() {
    [ "$(awk '/^Dirty:/ {print $2}' /proc/meminfo)" -ge "${PROOF_DIRTY_KB:-2048}" ]
}
wait_until 60 dirty_enough
sleep 1
grep -E '^(Dirty|Writeback):' /proc/meminfo >"$PROOF_RESULTS/meminfo"
if [ "${PROOF_BUSY:-0}" = 1 ]; then
    eval "$PROOF_BUSY_CMD" >"$PROOF_RESULTS/busy.out" 2>&1
    echo $? >"$PROOF_RESULTS/busy.rc"
fi
log cycle "shutting down; writer $state; $(tr -s ' \n' ' ' <"$PROOF_RESULTS/meminfo")"
if [ -n "${PROOF_SHUTDOWN_CMD:-}" ]; then
    bootkit-vm-mark shutdown-begin
    eval "$PROOF_SHUTDOWN_CMD"
fi
[ "$state" = written ]
