#!/bootkit/bin/busybox sh
# shellcheck shell=dash disable=SC3045  # busybox ash: read -t takes fractions of a second
# LIO in the guest: load the target modules, mount configfs and debugfs, then serve the host's admin
# requests until it asks for poweroff. vm/lio.py drives this; all LIO configuration lives there.
#
# Protocol over the writable 9p export /results (no cache, so both sides see each write at once):
#   host writes  N.cmd   (a shell script, renamed into place whole)
#   guest runs   /bin/sh -e N.cmd > N.out 2>&1, then renames N.rc.tmp -> N.rc (exit status) and removes N.cmd
#   host writes  poweroff  -> the loop ends and the harness powers the guest off
# The wait between polls is a `read -t` on a private FIFO: no process is forked while idle.
ctl=/results

fail() {
    echo "lio-guest: $*" > "$ctl/failed"
    echo "lio-guest: $*"
    exit 1
}

modprobe -a configfs target_core_mod iscsi_target_mod target_core_iblock crc32c_generic \
    sha256_generic sha3_generic md5 || fail "modprobe"
grep -q configfs /proc/mounts || mount -t configfs configfs /sys/kernel/config || fail "mount configfs"
grep -q debugfs /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug || fail "mount debugfs"
mkdir -p /sys/kernel/config/target/iscsi || fail "mkdir /sys/kernel/config/target/iscsi (iscsi fabric)"

tick=/run/lio-admin.tick
mkfifo "$tick" || fail "mkfifo"
: > "$ctl/ready"
echo "lio-guest: ready"
while [ ! -e "$ctl/poweroff" ]; do
    for req in "$ctl"/*.cmd; do
        [ -f "$req" ] || continue
        n=${req%.cmd}
        /bin/sh -e "$req" > "$n.out" 2>&1 < /dev/null
        echo $? > "$n.rc.tmp"
        mv "$n.rc.tmp" "$n.rc"
        rm -f "$req"
    done
    read -r -t 0.1 _ <> "$tick"
done
echo "lio-guest: poweroff requested"
