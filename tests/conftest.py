"""Shared pytest setup: load the plugins that exist (real targets, the QEMU guest harness)."""

import importlib.util

pytest_plugins = [m for m in ("tests.targets", "vm.pytest_plugin", "tests.lio_fixture")
                  if importlib.util.find_spec(m)]
