#!/bin/sh
# The command of the target-down boot, run once the boot is done (the target was down all along): record
# that the boot went on without the disk, ask the host to bring the target back, then do what an admin
# does: `uiscsictl reload` (it returns once the by-iscsi link exists), $PROOF_LATE_MOUNT_CMD (busybox:
# fsck -N -p, then mount -a -N; systemd: start the mount unit, systemd-fsck@ first), and start the service
# that needed the disk again ($PROOF_WRITER_START_CMD). Debian guests then shut down ($PROOF_SHUTDOWN_CMD).
. "$(dirname "$0")/common.sh"
mountpoint -q "$PROOF_DATA" && echo mounted >"$PROOF_RESULTS/boot.mounted" || echo no >"$PROOF_RESULTS/boot.mounted"
# The services were started in the background: give both (at most 30 s) to say how they started; a
# writer whose mount failed (systemd's RequiresMountsFor=) never says anything.
both_started() {
    [ -s "$PROOF_RUN/writer.state" ] && [ -s "$PROOF_RUN/nodisk.state" ]
}
wait_until "${PROOF_SERVICES_WAIT:-30}" both_started
cat "$PROOF_RUN/nodisk.state" >"$PROOF_RESULTS/boot.nodisk" 2>/dev/null || echo none >"$PROOF_RESULTS/boot.nodisk"
cat "$PROOF_RUN/writer.state" >"$PROOF_RESULTS/boot.writer" 2>/dev/null || echo none >"$PROOF_RESULTS/boot.writer"
log late "asking the host to start the target"
: >"$PROOF_RESULTS/target-up.request"
wait_until 120 test -e "$PROOF_RESULTS/target-up.done"
log late "target is back: uiscsictl reload"
bootkit-vm-mark late-reload
"$PROOF_UISCSICTL" -s "$PROOF_SOCK" --timeout 60 reload -f "$PROOF_CONFIG" --wait "${PROOF_RELOAD_WAIT:-30}"
echo $? >"$PROOF_RESULTS/late.reload"
bootkit-vm-mark late-reloaded
log late "mounting: $PROOF_LATE_MOUNT_CMD"
eval "$PROOF_LATE_MOUNT_CMD"
echo $? >"$PROOF_RESULTS/late.mount"
mountpoint -q "$PROOF_DATA" && echo mounted >"$PROOF_RESULTS/late.mounted" || echo no >"$PROOF_RESULTS/late.mounted"
rm -f "$PROOF_RUN/writer.state"
eval "$PROOF_WRITER_START_CMD"
wait_until 60 test -s "$PROOF_RUN/writer.state"
cat "$PROOF_RUN/writer.state" >"$PROOF_RESULTS/late.writer" 2>/dev/null || echo none >"$PROOF_RESULTS/late.writer"
log late "writer: $(cat "$PROOF_RESULTS/late.writer")"
if [ -n "${PROOF_SHUTDOWN_CMD:-}" ]; then
    bootkit-vm-mark shutdown-begin
    eval "$PROOF_SHUTDOWN_CMD"
fi
[ "$(cat "$PROOF_RESULTS/late.mounted")" = mounted ]
