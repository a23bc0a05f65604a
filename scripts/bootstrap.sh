#!/usr/bin/env bash
# Install everything `make test` and `make demo` need on a fresh Debian 12: apt packages, .venv, the project.
# Idempotent: each step is skipped when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  tgt istgt libiscsi-bin qemu-utils qemu-block-extra tshark
  qemu-system-x86 busybox-static shellcheck systemd kmod cpio iproute2 e2fsprogs util-linux procps
  # `make deb` and the Debian guest images: Debian's packaging tools, the package's build dependencies
  # (help2man runs the programs), lintian, and mmdebstrap for the guest's root
  debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools help2man lintian
  python3-psutil python3-jinja2 python3-crc32c python3-setproctitle python3-uvloop mmdebstrap
  # uiscsid's capability drop: libcap-ng's Python binding, which PyPI does not carry (linked into .venv below)
  python3-cap-ng
  # bench/kernelpath.py: open-iscsi's kernel initiator and fio, run in the guest from the host's root;
  # bench/nbdserve.py --callgrind and perfbench.py --callgrind: valgrind's instruction counts
  open-iscsi fio valgrind
  # the proofs on xfs and btrfs: their read-only checks of a LUN image, in the host-root guest too
  xfsprogs btrfs-progs
  # vm/report's test renders the HTML report in a real browser (about 115 MB, 25 s to install)
  chromium
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing apt packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.bootkit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  echo "bootstrap: pip install -e .[test]" >&2
  .venv/bin/python -m pip install -q --upgrade pip </dev/null
  # compat mode: a plain path in a .pth, not an import hook. The hook costs every Python start ~50 ms
  # here, and seconds in the TCG guest, where each boot runs several of our programs.
  .venv/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat </dev/null
  .venv/bin/python -m compileall -q initiator fstab_tools iscsid_shim rc vm bootkit >/dev/null
  touch "$stamp"
fi

# Debian's capng module (one .py and its C extension, built for CPython 3.11's ABI) made importable in the
# venv by links, without the rest of Debian's dist-packages; uiscsid falls back without it, the tests not.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for f in /usr/lib/python3/dist-packages/capng.py /usr/lib/python3/dist-packages/_capng.cpython-311-*.so; do
  [ -e "$f" ] && [ ! -e "$site/$(basename "$f")" ] && ln -s "$f" "$site/"
done
.venv/bin/python -c 'import capng' || { echo "bootstrap: capng (python3-cap-ng) does not import in .venv" >&2; exit 1; }
