# The two commands: `make test` and `make demo`. Each installs what it needs on a fresh Debian 12.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test demo bootstrap lint deb image

bootstrap:
	./scripts/bootstrap.sh

# Two pytest-xdist workers on this 2-core machine (one TCG guest per core); JOBS=0 runs in one process
JOBS ?= $(shell nproc)
test: bootstrap
	$(PY) -m pytest -q -n $(JOBS) --dist loadgroup

demo: bootstrap
	$(PY) -m bootkit.demo

lint: bootstrap
	$(PY) -m ruff check .

# The Debian package, built out of tree from the checkout (committed or not): build/iscsi-bootkit_*_all.deb
deb: bootstrap
	./scripts/build-deb.sh build

# A Debian 12 guest root disk with that package installed (VARIANT=systemd or sysvinit); the first build of
# a variant runs mmdebstrap and caches the root under ~/.cache/iscsi-bootkit/images
VARIANT ?= systemd
image: bootstrap
	$(PY) -m bootkit vm image --variant $(VARIANT) -o build/guest-$(VARIANT).img
