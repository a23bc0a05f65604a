#!/bin/sh
# A service that does not need the iSCSI disk: it must start even when the target is down.
. "$(dirname "$0")/common.sh"
log nodisk "start pid $$"
echo started >"$PROOF_RUN/nodisk.state"
trap 'log nodisk "stopped"; exit 0' TERM INT
while :; do
    sleep 1
done
