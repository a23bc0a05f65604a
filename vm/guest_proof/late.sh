#!/bin/sh
# The command of the target-down boot, run after rc: the boot went on without the disk. Record that,
# ask the host to bring the target back, then do what an admin (or a hotplug hook) does: uiscsictl
# reload, fsck -N -p, mount -a -N, and start the service that needed the disk.
. "$(dirname "$0")/common.sh"
mountpoint -q "$PROOF_DATA" && echo mounted >"$PROOF_RESULTS/boot.mounted" || echo no >"$PROOF_RESULTS/boot.mounted"
# The services were started in the background: give both (at most 30 s) to say how they started.
i=0
until { [ -s "$PROOF_RUN/writer.state" ] && [ -s "$PROOF_RUN/nodisk.state" ]; } || [ $i -ge 300 ]; do
    sleep 0.1
    i=$((i + 1))
done
cat "$PROOF_RUN/nodisk.state" >"$PROOF_RESULTS/boot.nodisk" 2>/dev/null || echo none >"$PROOF_RESULTS/boot.nodisk"
cat "$PROOF_RUN/writer.state" >"$PROOF_RESULTS/boot.writer" 2>/dev/null || echo none >"$PROOF_RESULTS/boot.writer"
log late "asking the host to start the target"
: >"$PROOF_RESULTS/target-up.request"
i=0
until [ -e "$PROOF_RESULTS/target-up.done" ] || [ $i -ge 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
log late "target is back: uiscsictl reload"
"$PROOF_UISCSICTL" -s "$PROOF_SOCK" --timeout 60 reload -f "$PROOF_CONFIG" --wait 30
echo $? >"$PROOF_RESULTS/late.reload"
log late "fsck -N -p"
"$PROOF_BOOTKIT" fsck -N -p --wait 10 --fstab "$PROOF_FSTAB"
echo $? >"$PROOF_RESULTS/late.fsck"
log late "mount -a -N"
"$PROOF_BOOTKIT" mount -a -N --wait 10 --fstab "$PROOF_FSTAB"
echo $? >"$PROOF_RESULTS/late.mount"
mountpoint -q "$PROOF_DATA" && echo mounted >"$PROOF_RESULTS/late.mounted" || echo no >"$PROOF_RESULTS/late.mounted"
rm -f "$PROOF_RUN/writer.state"
"$PROOF_DIR/writer.sh" </dev/null >>"$PROOF_RESULTS/services.out" 2>&1 &
echo $! >"$PROOF_RUN/writer.pid"
i=0
until [ -s "$PROOF_RUN/writer.state" ] || [ $i -ge 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
cat "$PROOF_RUN/writer.state" >"$PROOF_RESULTS/late.writer" 2>/dev/null || echo none >"$PROOF_RESULTS/late.writer"
log late "writer: $(cat "$PROOF_RESULTS/late.writer")"
[ "$(cat "$PROOF_RESULTS/late.mounted")" = mounted ]
