# The two commands: `make test` and `make demo`. Each installs what it needs on a fresh Debian 12.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test demo bootstrap lint

bootstrap:
	./scripts/bootstrap.sh

test: bootstrap
	$(PY) -m pytest -q

demo: bootstrap
	$(PY) -m bootkit.demo

lint: bootstrap
	$(PY) -m ruff check .
