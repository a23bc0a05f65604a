"""Shared pytest setup: load the plugins that exist (real targets, the QEMU guest harness), and a
hypothesis profile with no per-example deadline: the suite shares 2 cores with QEMU guests and targets,
so an example's wall time says nothing about the code (performance is the benchmarks' business)."""

import importlib.util

from hypothesis import settings

pytest_plugins = [m for m in ("tests.targets", "vm.pytest_plugin", "tests.lio_fixture")
                  if importlib.util.find_spec(m)]

settings.register_profile("bootkit", deadline=None)
settings.load_profile("bootkit")
