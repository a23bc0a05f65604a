#!/bin/sh
# Guest side of bench/kernelpath.py: attach one host tgtd LUN through uiscsid (/dev/nbdN) and through
# open-iscsi's kernel initiator (/dev/sdX), then run the fio plan the host wrote to /results/plan.
#
# Environment (set by kernelpath.py): KP_PORT, KP_IQN (the target at 10.0.2.2:KP_PORT, disk LUN 1),
# KP_ATTACH (nbd, netlink or "nbd netlink": one uiscsid per mode), KP_REFERENCE ("qemu-nbd" or empty: qemu-nbd
# serving a RAM file, no network), KP_BASELINE (empty, or a checkout whose uiscsid attaches the LUN too, NBD
# ioctls, as side "baseline"). Plan lines: "ID SIDE FIO-ARGS...", SIDE being one of those or open-iscsi. Results in /results: devices (a line per side: "SIDE DEVICE
# SCHEDULER MAX_SECTORS_KB NR_REQUESTS"), ready, runs/ID.json (fio's JSON) or runs/ID.err when fio failed,
# failed (one line) on a setup error, and the daemons' logs and counters.
set -u
R=/results
PORTAL=10.0.2.2:$KP_PORT
mkdir -p "$R/runs" /run/lock/iscsi

fail() {
    echo "kernelpath guest: $*" | tee "$R/failed" >&2
    exit 1
}

# wait_for TENTHS COMMAND...: run COMMAND every 0.1 s until it succeeds, at most TENTHS times
wait_for() {
    _n=$1
    shift
    while [ "$_n" -gt 0 ]; do
        "$@" && return 0
        _n=$((_n - 1))
        sleep 0.1
    done
    return 1
}

# Each attached side's device path is kept in /run/kp-dev-SIDE.
# shellcheck disable=SC2317 # called through wait_for
sd_of_lun1() {      # the disk open-iscsi made for LUN 1 (tgt's LUN 0 is its controller)
    for _b in /sys/class/iscsi_session/session*/device/target*/*:*:*:1/block/*; do
        [ -e "$_b" ] && [ -b "/dev/${_b##*/}" ] && echo "/dev/${_b##*/}" > /run/kp-dev-open-iscsi && return 0
    done
    return 1
}

# shellcheck disable=SC2317 # called through wait_for
iscsid_up() {
    iscsiadm -m session > /dev/null 2>&1
    [ $? -ne 20 ]       # 20: cannot reach iscsid; 21 (no sessions) means it answers
}

modprobe -a nbd sd_mod iscsi_tcp || fail "modprobe nbd sd_mod iscsi_tcp failed"

# ---- open-iscsi: its own config in the guest's tmpfs overlay, Debian's stock settings
mkdir -p /etc/iscsi
echo "InitiatorName=iqn.2026-12.test.bootkit:open-iscsi" > /etc/iscsi/initiatorname.iscsi
cat > /etc/iscsi/iscsid.conf <<'CONF'
node.startup = manual
node.session.timeo.replacement_timeout = 120
node.conn[0].timeo.login_timeout = 15
node.conn[0].timeo.noop_out_interval = 5
node.conn[0].timeo.noop_out_timeout = 5
node.session.cmds_max = 128
node.session.queue_depth = 32
node.session.iscsi.InitialR2T = No
node.session.iscsi.ImmediateData = Yes
node.session.iscsi.FirstBurstLength = 262144
node.session.iscsi.MaxBurstLength = 16776192
node.conn[0].iscsi.MaxRecvDataSegmentLength = 262144
node.conn[0].iscsi.MaxXmitDataSegmentLength = 0
discovery.sendtargets.iscsi.MaxRecvDataSegmentLength = 32768
node.session.nr_sessions = 1
node.session.scan = auto
CONF
iscsid -f > "$R/iscsid.log" 2>&1 &
wait_for 100 iscsid_up || fail "iscsid did not start: $(cat "$R/iscsid.log")"
# a node record by hand: SendTargets would name tgtd's own portal (127.0.0.1), not the NAT address
iscsiadm -m node -o new -T "$KP_IQN" -p "$PORTAL" > "$R/node.out" 2>&1 || fail "node record: $(cat "$R/node.out")"
iscsiadm -m node -T "$KP_IQN" -p "$PORTAL" --login > "$R/login.out" 2>&1 || fail "login: $(cat "$R/login.out")"
wait_for 200 sd_of_lun1 || fail "open-iscsi logged in but no disk appeared for LUN 1"

# ---- uiscsid: one daemon per attach mode, each with its own initiator name, socket and link dir
for mode in $KP_ATTACH; do
    sock=/run/uiscsid-$mode.sock
    links=/run/links-$mode
    printf 'initiatorname iqn.2026-12.test.bootkit:uiscsid-%s\ntarget disk {\n targetaddr 10.0.2.2 port %s\n targetname %s\n lun 1\n}\n' \
        "$mode" "$KP_PORT" "$KP_IQN" > "/tmp/uiscsi-$mode.conf"
    uiscsid -d --attach "$mode" -s "$sock" --link-dir "$links" > "$R/uiscsid-$mode.log" 2>&1 &
    echo $! > "/run/uiscsid-$mode.pid"
    wait_for 300 test -S "$sock" || fail "uiscsid --attach $mode did not start: $(cat "$R/uiscsid-$mode.log")"
    uiscsictl -s "$sock" reload -f "/tmp/uiscsi-$mode.conf" --wait 60 > "$R/reload-$mode.out" 2>&1 ||
        fail "uiscsictl reload ($mode): $(cat "$R/reload-$mode.out")"
    readlink -f "$links/$KP_IQN-lun1" > "/run/kp-dev-$mode"
done

# ---- the baseline: uiscsid from another checkout (its initiator package first on the path), for an A/B
if [ -n "${KP_BASELINE:-}" ]; then
    sock=/run/uiscsid-baseline.sock
    printf 'initiatorname iqn.2026-12.test.bootkit:uiscsid-baseline\ntarget disk {\n targetaddr 10.0.2.2 port %s\n targetname %s\n lun 1\n}\n' \
        "$KP_PORT" "$KP_IQN" > /tmp/uiscsi-baseline.conf
    (cd "$KP_BASELINE" && PYTHONPATH="$KP_BASELINE" exec python -m initiator.daemon -d --attach nbd -s "$sock" \
        --link-dir /run/links-baseline) > "$R/uiscsid-baseline.log" 2>&1 &
    wait_for 300 test -S "$sock" || fail "baseline uiscsid did not start: $(cat "$R/uiscsid-baseline.log")"
    uiscsictl -s "$sock" reload -f /tmp/uiscsi-baseline.conf --wait 60 > "$R/reload-baseline.out" 2>&1 ||
        fail "uiscsictl reload (baseline): $(cat "$R/reload-baseline.out")"
    readlink -f "/run/links-baseline/$KP_IQN-lun1" > /run/kp-dev-baseline
    BASE_SIDE=baseline
fi

# ---- the reference: qemu-nbd (C) serving a file in guest RAM through the same kernel NBD driver
if [ -n "${KP_REFERENCE:-}" ]; then
    mkdir -p /run/lock /var/lock        # qemu-nbd -c keeps its socket there
    head -c 64M /dev/urandom > /dev/shm/reference.img
    qemu-nbd -c /dev/nbd15 -f raw /dev/shm/reference.img > "$R/qemu-nbd.log" 2>&1 ||
        fail "qemu-nbd -c: $(cat "$R/qemu-nbd.log")"
    echo /dev/nbd15 > /run/kp-dev-qemu-nbd
fi

: > "$R/devices"
for side in open-iscsi $KP_ATTACH ${BASE_SIDE:-} ${KP_REFERENCE:-}; do
    dev=$(cat "/run/kp-dev-$side")
    [ -b "$dev" ] || fail "$side: no block device ($dev)"
    q=/sys/block/${dev##*/}/queue
    echo "$side $dev $(sed 's/.*\[\(.*\)\].*/\1/' "$q/scheduler") $(cat "$q/max_sectors_kb") $(cat "$q/nr_requests")" \
        >> "$R/devices"
done
touch "$R/ready"

# ---- the plan: one fio run per line, in the order the host chose (A B A B ...)
while read -r id side args; do
    dev=$(cat "/run/kp-dev-$side")
    # shellcheck disable=SC2086 # args is a list of fio options
    if fio --name=kp --filename="$dev" $args --output-format=json --output=/tmp/fio.json > /tmp/fio.log 2>&1; then
        mv /tmp/fio.json "$R/runs/$id.json"
    else
        echo "fio exited $?" >> /tmp/fio.log
        mv /tmp/fio.log "$R/runs/$id.err"
    fi
done < "$R/plan"

for mode in $KP_ATTACH ${BASE_SIDE:-}; do
    uiscsictl -s "/run/uiscsid-$mode.sock" show stats --json > "$R/stats-$mode.json" 2>&1
done
iscsiadm -m session -P 2 > "$R/session.out" 2>&1
iscsiadm -m node --logoutall=all > /dev/null 2>&1
[ -n "${KP_REFERENCE:-}" ] && qemu-nbd -d /dev/nbd15 > /dev/null 2>&1
exit 0
