#!/usr/bin/env bash
# `make deb`: build the Debian package from this tree with Debian's tools, out of tree, so the checkout
# stays clean. The files git knows (tracked, and new ones not ignored: the tree under test, committed
# or not) are copied to OUT/deb/iscsi-bootkit, dpkg-buildpackage -b runs there, and the .deb, .changes
# and .buildinfo land in OUT (default build/). Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-build}")
work=$out/deb
src=$work/iscsi-bootkit
rm -rf "$work"
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # -z lists; deleted-but-uncommitted files are dropped, as they are not in the tree under test
    git ls-files -z --cached --others --exclude-standard \
        | python3 -c 'import os, sys; sys.stdout.buffer.write(b"".join(p + b"\0" for p in sys.stdin.buffer.read().split(b"\0") if p and os.path.lexists(p)))' \
        | tar --null -T - -cf - | tar -xf - -C "$src"
else
    tar --exclude=./.venv --exclude=./build --exclude=./.git -cf - . | tar -xf - -C "$src"
fi
# Debian's own interpreter and tools only: a python3 earlier on PATH (pyenv, a venv) is not the one the
# package runs with.
(cd "$src" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) || {
    tail -40 "$work/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed; the whole log is $work/build.log" >&2
    exit 1
}
rm -f "$out"/iscsi-bootkit_*.deb "$out"/iscsi-bootkit_*.changes "$out"/iscsi-bootkit_*.buildinfo
mv "$work"/iscsi-bootkit_* "$out"/
ls "$out"/iscsi-bootkit_*_all.deb
