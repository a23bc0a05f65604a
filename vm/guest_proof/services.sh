#!/bin/sh
# services.sh start|stop: the rc's services step. start launches nodisk and writer in the background;
# stop sends them SIGTERM and waits (at most 5 s) for them to go.
. "$(dirname "$0")/common.sh"
case "$1" in
start)
    for svc in nodisk writer; do
        "$PROOF_DIR/$svc.sh" </dev/null >>"$PROOF_RESULTS/services.out" 2>&1 &
        echo $! >"$PROOF_RUN/$svc.pid"
    done
    ;;
stop)
    pids=
    for svc in writer nodisk; do
        [ -r "$PROOF_RUN/$svc.pid" ] && pids="$pids $(cat "$PROOF_RUN/$svc.pid")"
    done
    for pid in $pids; do
        kill -TERM "$pid" 2>/dev/null
    done
    i=0
    for pid in $pids; do
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
    done
    ;;
*)
    echo "usage: services.sh start|stop" >&2
    exit 2
    ;;
esac
