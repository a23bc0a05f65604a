# shellcheck shell=sh
# Shared by the proof's guest scripts (sourced, not run). Settings come from proof.env beside this file.
PROOF_DIR=$(dirname "$0")
# shellcheck source=/dev/null
. "$PROOF_DIR/proof.env"
: "${PROOF_DATA:=/srv/data}" "${PROOF_RESULTS:=/results}" "${PROOF_RUN:=/run/proof}" "${PROOF_MB:=8}"
mkdir -p "$PROOF_RUN"

# Seconds since the epoch with milliseconds, the same clock as the rc's step markers.
now() {
    _t=$(date +%s.%N)
    echo "${_t%??????}"
}

# log NAME TEXT...: "NAME: EPOCH.MS TEXT" appended to $PROOF_RESULTS/NAME.log and echoed.
log() {
    _n=$1
    shift
    _l="$_n: $(now) $*"
    echo "$_l" >>"$PROOF_RESULTS/$_n.log"
    echo "$_l"
}

# wait_until SECONDS CMD...: run CMD every 0.1 s until it succeeds (0) or SECONDS have passed on the clock
# (1). The clock bounds it, not a count of sleeps: under TCG each `sleep 0.1` costs much more than 0.1 s.
wait_until() {
    _until=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$_until" ] || return 1
        sleep 0.1
    done
}
