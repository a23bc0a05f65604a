#!/bin/sh
# A LUN the host cannot read, handled in a guest (vm/fscheck/guest.py): attach it with uiscsid, then
# for each of $LUN_OPS: "format" (mkfs $LUN_TYPE with a seeded payload: only when the test may destroy it)
# or "check" (the read-only check of vm/fscheck, nothing mounted, nothing replayed); then log out.
# Inputs in /results: uiscsi.conf (and the secret files it names). Outputs there: device, format.sha256,
# fscheck.json and fscheck.rc, and one "lun: STEP rc=N" line per step on the console.
set -u
R=/results
SOCK=/run/uiscsid.sock
say() { echo "lun: $*"; }
uiscsid -d --no-flag -s "$SOCK" </dev/null >"$R/uiscsid.log" 2>&1 &
pid=$!
n=0
until [ -S "$SOCK" ]; do
    n=$((n + 1))
    if [ "$n" -gt 600 ] || ! kill -0 "$pid" 2>/dev/null; then say "uiscsid rc=1 (no control socket)"; exit 3; fi
    sleep 0.1
done
uiscsictl -s "$SOCK" --timeout 60 reload -f "$R/uiscsi.conf" --wait "$LUN_WAIT"
say "reload rc=$?"
uiscsictl -s "$SOCK" show luns --json >"$R/luns.json"
dev=$(python3 -c '
import json, sys
for l in json.load(open(sys.argv[1]))["luns"]:
    if l["target"] == sys.argv[2] and l["lun"] == int(sys.argv[3]) and l["device"]:
        print(l["device"])
' "$R/luns.json" "$LUN_TARGET" "$LUN_NUMBER")
if [ -z "$dev" ] || [ ! -b "$dev" ]; then
    say "attach rc=1 (no device for $LUN_TARGET lun $LUN_NUMBER)"
    kill -TERM "$pid"
    exit 4
fi
echo "$dev" >"$R/device"
say "attach rc=0 $dev"
rc=0
for op in $LUN_OPS; do
    case $op in
    format)
        python3 -c 'import sys; from vm.fscheck.host import format_seeded
print(format_seeded(sys.argv[1], sys.argv[2], int(sys.argv[3])))' "$dev" "$LUN_TYPE" "$LUN_PAYLOAD_MB" >"$R/format.sha256"
        r=$?
        ;;
    check)
        python3 -m vm.fscheck check --type "$LUN_TYPE" --where guest --json ${LUN_EXPECT:+--expect "$LUN_EXPECT"} \
            "$dev" >"$R/fscheck.json"
        r=$?
        echo "$r" >"$R/fscheck.rc"
        ;;
    *) r=2 ;;
    esac
    say "$op rc=$r"
    [ "$r" -gt "$rc" ] && rc=$r
done
sync
kill -TERM "$pid"
n=0
while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 200 ]; do n=$((n + 1)); sleep 0.1; done
say "logout rc=$(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0)"
exit "$rc"
